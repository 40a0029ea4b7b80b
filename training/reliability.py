"""Reliability of probabilities: the binned diagram and the expected calibration error, for every task.

``p`` are predicted probabilities of an event and ``y`` whether it happened (0/1): a binary classifier's
positive-class probability and label (TESS triage and vetting), or a multi-class classifier's top-class
probability and whether that class was right (the spectra's main group). Bins are equal-width on [0, 1],
each (lo, hi] except the first, which takes 0 too. The diagram is stored in model metadata
(``reliability``), where the web view draws it (stream/api/plots.py).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ece_of", "expected_calibration_error", "reliability"]


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 15) -> dict:
    """Per bin: mean probability, observed frequency and count (empty bins are left out)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    idx = np.clip(np.ceil(p * bins).astype(int) - 1, 0, bins - 1)
    rows = [(float(p[idx == b].mean()), float(y[idx == b].mean()), int(np.sum(idx == b)))
            for b in range(bins) if np.any(idx == b)]
    return {"bins": bins, "mean_probability": [round(r[0], 5) for r in rows],
            "frequency": [round(r[1], 5) for r in rows], "count": [r[2] for r in rows]}


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Σ over bins of (share of samples) × |observed frequency - mean probability|."""
    return ece_of(reliability(p, y, bins))


def ece_of(diagram: dict) -> float:
    """The expected calibration error of a ``reliability`` diagram (for callers that keep both)."""
    n = sum(diagram["count"])
    if not n:
        return float("nan")
    return float(sum(c / n * abs(f - m) for m, f, c in zip(diagram["mean_probability"], diagram["frequency"],
                                                            diagram["count"], strict=True)))
