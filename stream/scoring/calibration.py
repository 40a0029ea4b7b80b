"""Calibrated probabilities and the border flag of a spectrum prediction, driven by the model's metadata.

A model's metadata may carry (training/smass/calibration.py writes both; docs/experiments/issue13/RESULTS.md §3):

- ``calibration: {"temperature": T}``: main-group probabilities are tempered, p ∝ p^(1/T) (T > 1 softens).
  Without it the probabilities are served as the model gives them.
- ``border_rule``: when an answer sits on a border that users care about (S/Other, C/X), the prediction
  carries ``border: true`` and a ``border_reason``. The rule, fixed before it was measured:
  the top two main groups are one of ``pairs`` and (the calibrated margin is below ``margin``, or the Bus
  head's top class lies in the runner-up group), or, for C/X, the spectrum's least-squares slope lies within
  ``cx_slope_band_per_um`` of ``cx_slope_boundary_per_um`` (C and X differ mostly in slope, and instruments
  differ in slope by about that much). Without a rule, ``border`` is None (not assessed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream.features.spectra import NORMALISATION_UM, WAVELENGTH_GRID_UM

__all__ = ["border_flag", "normalised_slope", "temper"]


def temper(p: np.ndarray, temperature: float | None) -> np.ndarray:
    """Probabilities (rows) tempered: p^(1/T), renormalised; unchanged for T None or 1."""
    p = np.asarray(p, dtype=np.float64)
    if not temperature or temperature == 1.0:
        return p
    logp = np.log(np.clip(p, 1e-12, 1.0)) / float(temperature)
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=-1, keepdims=True)


# The line fit's solution matrix: the grid is fixed, so the least-squares fit of any spectrum on it
# is one product (np.linalg.lstsq per spectrum cost ~30 µs on the scoring path).
_LINE_FIT = np.linalg.pinv(np.stack([np.ones_like(WAVELENGTH_GRID_UM), WAVELENGTH_GRID_UM - NORMALISATION_UM], axis=1))


def normalised_slope(reflectance: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope per µm of the grid reflectance, divided by the line's value at 0.55 µm."""
    intercept, slope = _LINE_FIT @ np.asarray(reflectance, dtype=np.float64)
    return float(slope / intercept)


def border_flag(
    probabilities: Mapping[str, float],
    bus_probabilities: Mapping[str, float],
    bus_to_group: Mapping[str, str],
    reflectance: Sequence[float] | np.ndarray,
    rule: Mapping[str, Any] | None,
) -> tuple[bool | None, str | None]:
    """(border, reason) for one prediction with calibrated main-group ``probabilities``; (None, None) without a rule."""
    if not rule:
        return None, None
    ranked = sorted(probabilities, key=probabilities.get, reverse=True)
    top, runner_up = ranked[0], ranked[1]
    pairs = [frozenset(pair) for pair in rule.get("pairs", [])]
    pair = frozenset((top, runner_up))
    if pair not in pairs:
        return False, None
    label = "/".join(sorted(pair))
    margin = probabilities[top] - probabilities[runner_up]
    if margin < float(rule.get("margin", 0.0)):
        return True, f"{label}: margin {margin:.2f} < {float(rule['margin']):.2f}"
    if rule.get("bus_runner_up", False) and bus_probabilities:
        bus_top = max(bus_probabilities, key=bus_probabilities.get)
        if bus_to_group.get(bus_top) == runner_up:
            return True, f"{label}: the Bus head's top class {bus_top} is in {runner_up}"
    boundary = rule.get("cx_slope_boundary_per_um")
    if pair == frozenset(("C", "X")) and boundary is not None:
        slope = normalised_slope(reflectance)
        band = float(rule.get("cx_slope_band_per_um", 0.0))
        if abs(slope - float(boundary)) < band:
            return True, f"C/X: slope {slope:.3f}/µm within {band:.2f} of the C|X boundary {float(boundary):.3f}"
    return False, None
