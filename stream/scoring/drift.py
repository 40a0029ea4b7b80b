"""Drift: compare the live inputs and predictions of a task with the reference stored with its model.

The test is the population stability index (PSI) per feature over a sliding window, on bins cut at
the reference's deciles:  PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i).  Why PSI: it needs only
binned counts (cheap per message, bounded memory), it is symmetric and additive over bins, it works
the same for continuous features and for class frequencies, and its conventional thresholds (< 0.1
stable, 0.1-0.25 moderate shift, > 0.25 major shift) are what operators already know. A task counts
as drifted when any feature's PSI exceeds the threshold (default 0.25) over a full window.

The summary features are defined here once (each kind in stream/kinds.py names its summary); training
builds the reference from them with ``build_reference`` (and stores it in the model's metadata), the
workers monitor with ``DriftMonitor``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from stream import kinds
from stream.runtime.metrics import DRIFT_DETECTED, DRIFT_PSI

__all__ = ["DriftMonitor", "PREDICTED_CLASS", "build_reference", "lightcurve_summary", "psi", "spectrum_summary"]

DEFAULT_WINDOW = 500
DEFAULT_THRESHOLD = 0.25
_EPS = 1e-4  # floor for empty bins, so an empty bin costs a finite, large PSI


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope (what np.polyfit(x, y, 1)[0] gives, at a tenth of its cost per message)."""
    dx = x - x.mean()
    return float(dx @ (y - y.mean()) / (dx @ dx))


_SAMPLED_UM = np.array([0.45, 0.70, 0.90])


def spectrum_summary(record: dict[str, Any]) -> dict[str, float]:
    """Scalar views of a SpectrumFeatures record that move when the input population changes."""
    wl = np.asarray(record["wavelength_um"], dtype=float)
    r = np.asarray(record["reflectance"], dtype=float)
    q = record["quality"]
    at_045, at_070, at_090 = np.interp(_SAMPLED_UM, wl, r).tolist()  # one call: this runs per message
    return {
        "slope_per_um": _slope(wl, r),
        "reflectance_0.45um": at_045,
        "reflectance_0.70um": at_070,
        "reflectance_0.90um": at_090,
        "coverage_fraction": float(q["coverage_fraction"]),
        "min_wavelength_um": float(q["min_um"]),
        "max_wavelength_um": float(q["max_um"]),
    }


def lightcurve_summary(record: dict[str, Any]) -> dict[str, float]:
    """Scalar views of a LightCurveFeatures record (the strongest signal and the data quality)."""
    q = record["quality"]
    out = {
        "robust_rms_ppm": float(q["robust_rms_ppm"]),
        "valid_fraction": float(q["n_valid"]) / max(1, int(q["n_cadences"])),
        "n_signals": float(len(record["signals"])),
    }
    if record["signals"]:
        s = max(record["signals"], key=lambda s: s["snr"])
        out.update(log10_period_days=float(np.log10(s["period_days"])), snr=float(s["snr"]),
                   log10_depth_ppm=float(np.log10(max(s["depth_ppm"], 1e-3))),
                   duration_hours=float(s["duration_hours"]))
    return out


PREDICTED_CLASS = "predicted_class"


def build_reference(kind: str, records: Iterable[dict[str, Any]], labels: Iterable[str],
                    bins: int = 10, threshold: float = DEFAULT_THRESHOLD,
                    window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """The drift reference of a training population, for the model's metadata (JSON-friendly)."""
    summarise = kinds.by_name(kind).summarise
    rows = [summarise(r) for r in records]
    names = sorted({k for row in rows for k in row})
    features: dict[str, Any] = {}
    for name in names:
        values = np.array([row[name] for row in rows if name in row], dtype=float)
        values = values[np.isfinite(values)]
        if values.size < bins:
            continue
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
        features[name] = {"edges": edges.tolist(), "fractions": (counts / counts.sum()).tolist()}
    label_list = list(labels)
    classes = sorted(set(label_list))
    freq = np.array([label_list.count(c) for c in classes], dtype=float)
    return {"kind": kind, "method": "psi", "threshold": threshold, "window": window, "features": features,
            "classes": {"names": classes, "fractions": (freq / max(1.0, freq.sum())).tolist()}}


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of two histograms (counts or fractions over the same bins)."""
    ref = np.maximum(np.asarray(reference, dtype=float), _EPS)
    cur = np.maximum(np.asarray(live, dtype=float), _EPS)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


class DriftMonitor:
    """Sliding-window PSI per feature and for the predicted classes of one task; exports gauges."""

    def __init__(self, task: str, reference: dict[str, Any]) -> None:
        self.task = task
        self.kind = reference["kind"]
        # The kind's summary (stream/kinds.py); an attribute, so a benchmark can stand in precomputed ones.
        self.summarise = kinds.by_name(self.kind).summarise
        self.threshold = float(reference.get("threshold", DEFAULT_THRESHOLD))
        self.window = int(reference.get("window", DEFAULT_WINDOW))
        self.features = {k: (np.asarray(v["edges"], dtype=float), np.asarray(v["fractions"]))
                         for k, v in reference["features"].items()}
        # The same edges as floats in a list, for bisect on the per-message path.
        self._edges = {k: edges.tolist() for k, (edges, _) in self.features.items()}
        self.classes = list(reference["classes"]["names"])
        self.class_fractions = np.asarray(reference["classes"]["fractions"])
        self._bins: dict[str, deque[int]] = {k: deque(maxlen=self.window) for k in self.features}
        self._labels: deque[int] = deque(maxlen=self.window)
        self._lock = threading.Lock()
        self._since_export = 0
        self._observed = 0  # since this monitor (this model's reference) started

    def observe(self, record: dict[str, Any], label: str) -> None:
        """Add one record's feature summary and its predicted label to the live window."""
        summary = self.summarise(record)
        with self._lock:
            for name, edges in self._edges.items():
                v = summary.get(name)
                if v is not None and math.isfinite(v):
                    # np.searchsorted(edges, v, side="right"), without its per-call cost (this runs per message)
                    self._bins[name].append(bisect.bisect_right(edges, v))
            if label in self.classes:
                self._labels.append(self.classes.index(label))
            self._since_export += 1
            self._observed += 1
        if self._since_export >= 50:
            self.export()

    def values(self) -> dict[str, float]:
        """PSI per feature (and for predicted classes) over the current window; features with too
        few observations yet are left out."""
        out: dict[str, float] = {}
        minimum = max(50, self.window // 5)
        with self._lock:
            for name, (edges, fractions) in self.features.items():
                window = self._bins[name]
                if len(window) >= minimum:
                    out[name] = psi(fractions, np.bincount(np.fromiter(window, int), minlength=edges.size + 1))
            if len(self._labels) >= minimum:
                live = np.bincount(np.fromiter(self._labels, int), minlength=len(self.classes))
                out[PREDICTED_CLASS] = psi(self.class_fractions, live)
            self._since_export = 0
        return out

    def export(self) -> dict[str, float]:
        """Set the drift gauges from the current window; return the PSI per feature."""
        values = self.values()
        for name, v in values.items():
            DRIFT_PSI.labels(task=self.task, feature=name).set(v)
        if values:
            # Gauges show from the minimum count on; the flag waits for a full window, because a
            # partial window of an ordered stream (e.g. asteroids by number) drifts by chance.
            full = self._observed >= self.window
            DRIFT_DETECTED.labels(task=self.task).set(float(full and max(values.values()) > self.threshold))
        return values
