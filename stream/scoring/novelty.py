"""Novelty: the conformal p-value of a spectrum's novelty scores (training/smass/novelty.py builds the head).

A model with a novelty head has an extra ONNX output, ``novelty_score`` (n, folds): each fold's
autoencoder-and-mixture pair scores the spectrum (a negative log-likelihood: higher = less like the
training spectra). Its metadata's ``novelty.calibration_scores`` holds, per fold, the sorted scores that
pair gave the SMASSII spectra it never saw. The cross-conformal p-value is

    p = (1 + Σ_k #{calibration scores of fold k ≥ score_k}) / (1 + Σ_k n_k)

the share of held-out SMASSII spectra at least as unusual as this one: below α for about a fraction α
of spectra like SMASSII's, so α is the false-alarm rate of the ``novel-spectrum`` alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["OUTPUT_NAME", "conformal_p_values", "novelty_calibration"]

OUTPUT_NAME = "novelty_score"


def conformal_p_values(scores: np.ndarray, calibration: Sequence[np.ndarray]) -> np.ndarray:
    """(n,) p-values of (n, folds) scores against each fold's sorted calibration scores."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    if scores.shape[1] != len(calibration):
        raise ValueError(f"{scores.shape[1]} novelty scores per spectrum but {len(calibration)} calibration folds")
    at_least = np.zeros(len(scores))
    for k, cal in enumerate(calibration):
        at_least += len(cal) - np.searchsorted(cal, scores[:, k], side="left")
    return (1.0 + at_least) / (1.0 + sum(len(c) for c in calibration))


def novelty_calibration(metadata: dict[str, Any], output_names: Sequence[str]) -> list[np.ndarray] | None:
    """Each fold's sorted calibration scores when the model has a novelty head, else None."""
    novelty = metadata.get("novelty") or {}
    if novelty.get("output_name") not in output_names or not novelty.get("calibration_scores"):
        return None
    return [np.sort(np.asarray(c, dtype=np.float64)) for c in novelty["calibration_scores"]]
