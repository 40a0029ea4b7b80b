"""Evaluation: scores of predictions, and stratified k-fold cross-validation of a protocol."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from training.reliability import ece_of, reliability
from training.smass.augmentation import grid_sigmas
from training.smass.calibration import TEMPERATURE
from training.smass.data import SmassData, coverage_masks
from training.smass.fitting import predict, train_model
from training.smass.labels import BUS_CLASS_NAMES, BUS_TO_GROUP, GROUP_NAMES
from training.smass.model import ModelConfig

MOST_CONFIDENT_ERRORS = 8  # listed in the metrics, plotted in the report


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"weighted_f1": float(f1_score(y, p, average="weighted")), "accuracy": float(accuracy_score(y, p))}


def cross_validate(data: SmassData, cfg: ModelConfig, folds: int, seed: int, threads: int,
                   variants: dict[str, np.ndarray], log=print,
                   variant_masks: Mapping[str, np.ndarray] | None = None) -> dict:
    """Stratified k-fold CV (by main group) of the full protocol; every number from out-of-fold predictions.

    Nothing is fit on a test fold: the model's input scaling is a constant, augmentation noise comes
    from each training spectrum's own errors, and the protocol (ModelConfig) is fixed in advance.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    from stream.scoring.calibration import temper

    x, g, b = data.features, data.group, data.bus
    masks = coverage_masks(data)
    variant_masks = variant_masks or {}
    sigma = grid_sigmas(data.spectra, x)
    n = len(x)
    p_group = np.zeros((n, len(GROUP_NAMES)), np.float32)
    p_bus = np.zeros((n, len(BUS_CLASS_NAMES)), np.float32)
    p_variant = {name: np.full((n, len(GROUP_NAMES)), np.nan, np.float32) for name in variants}
    per_fold = []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (train_idx, test_idx) in enumerate(splitter.split(x, g)):
        t0 = time.perf_counter()
        log(f"fold {k + 1}/{folds}: training on {len(train_idx)} spectra, testing on {len(test_idx)}")
        model = train_model(cfg, x[train_idx], sigma[train_idx], g[train_idx], b[train_idx], seed=seed,
                            threads=threads, label=f"  fold {k + 1}/{folds} ", log=log, mask=masks[train_idx])
        p_group[test_idx], p_bus[test_idx] = predict(model, x[test_idx], masks[test_idx])
        for name, v in variants.items():
            ok = test_idx[np.all(np.isfinite(v[test_idx]), axis=1)]
            if len(ok):
                vm = variant_masks.get(name)
                p_variant[name][ok] = predict(model, v[ok], None if vm is None else vm[ok])[0]
        fold = scores(g[test_idx], p_group[test_idx].argmax(1))
        fold["bus_accuracy"] = float(np.mean(p_bus[test_idx].argmax(1) == b[test_idx]))
        fold["seconds"] = round(time.perf_counter() - t0, 1)
        per_fold.append(fold)
        log(f"fold {k + 1}/{folds}: main-group weighted F1 {fold['weighted_f1']:.4f}, "
            f"Bus accuracy {fold['bus_accuracy']:.4f} ({fold['seconds']:.0f} s)")

    pred = p_group.argmax(1)
    calibrated = temper(p_group, TEMPERATURE)  # as served: the metadata's temperature
    confidence, correct = calibrated.max(axis=1), (pred == g).astype(float)
    diagram = reliability(confidence, correct)
    precision, recall, f1, support = precision_recall_fscore_support(
        g, pred, labels=range(len(GROUP_NAMES)), zero_division=0)
    f1s = np.array([f["weighted_f1"] for f in per_fold])
    bus_acc = np.array([f["bus_accuracy"] for f in per_fold])
    bus_pred = p_bus.argmax(1)
    robustness = {}
    for name, pv in p_variant.items():
        scored = np.all(np.isfinite(pv), axis=1)
        entry = {"n_scored": int(scored.sum()), "n_rejected": int((~scored).sum())}
        if scored.any():
            entry.update(scores(g[scored], pv[scored].argmax(1)))
            entry["same_as_full_spectrum"] = float(np.mean(pv[scored].argmax(1) == pred[scored]))
        robustness[name] = entry
    return {
        "protocol": f"stratified {folds}-fold CV by main group, shuffle seed {seed}; out-of-fold predictions",
        "n_spectra": n,
        "main_group": {
            "weighted_f1_mean": float(f1s.mean()),
            "weighted_f1_std": float(f1s.std()),
            "weighted_f1_per_fold": f1s.round(5).tolist(),
            **{f"{k}_pooled": v for k, v in scores(g, pred).items()},
            "per_class": {
                name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(support[i])}
                for i, name in enumerate(GROUP_NAMES)
            },
            "confusion_matrix": {"labels": list(GROUP_NAMES), "rows": "true", "columns": "predicted",
                                 "counts": confusion_matrix(g, pred, labels=range(len(GROUP_NAMES))).tolist()},
            # Calibrated top-class probability against being right, out of fold (the report's reliability diagram).
            "reliability": diagram,
            "ece_top_class": ece_of(diagram),
            "most_confident_errors": [
                {"object": data.objects[i], "bus_class": data.bus_names[i], "true": GROUP_NAMES[g[i]],
                 "predicted": GROUP_NAMES[pred[i]], "confidence": round(float(confidence[i]), 4)}
                for i in np.argsort(-confidence * (1 - correct))[:MOST_CONFIDENT_ERRORS] if not correct[i]],
            "from_bus_head_accuracy": float(np.mean(
                np.array([GROUP_NAMES.index(BUS_TO_GROUP[BUS_CLASS_NAMES[i]]) for i in bus_pred]) == g)),
        },
        "bus_class": {
            "accuracy_mean": float(bus_acc.mean()),
            "accuracy_std": float(bus_acc.std()),
            "accuracy_per_fold": bus_acc.round(5).tolist(),
            "accuracy_pooled": float(np.mean(bus_pred == b)),
        },
        "other_surveys_simulated": robustness,
        "per_fold": per_fold,
    }
