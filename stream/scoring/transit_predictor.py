"""Scoring transit signals with the TESS triage/vetting model, and the alert policy for them.

The model (trained by ``skystream train tess`` on Yu et al. 2019's labelled TESS signals) reads
the two Astronet-Triage views of a signal and a few scalars, and answers with calibrated
probabilities of three classes: PC (planet candidate), EB (eclipsing binary), J (junk:
instrumental or noise). From them:

- ``triage_probability`` = P(PC) + P(EB): the signal is astrophysical (Yu et al.'s triage);
- ``planet_probability`` = P(PC): the signal is a planet candidate (Yu et al.'s vetting).

The scalar inputs are built here, once, for training and serving alike (``scalar_features``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from stream.errors import Rejected
from stream.features.lightcurves import btjd_to_utc_iso
from stream.features.transits import GLOBAL_BINS, LOCAL_BINS
from stream.scoring.onnx_model import OnnxModel
from stream.stars import sectors_phrase

__all__ = [
    "ALERT_POLICY",
    "CLASSES",
    "MODEL_NAME",
    "SCALAR_FEATURES",
    "model_inputs",
    "predict_transits",
    "scalar_features",
    "signal_probabilities",
    "transit_alerts",
]

MODEL_NAME = "tess-triage-cnn"
CLASSES = ("PC", "EB", "J")
SCALAR_FEATURES = ("log10_period_days", "log10_duration_hours", "log10_depth_ppm")
EARTH_RADII_PER_SOLAR_RADIUS = 109.076  # IAU nominal R_sun / R_earth (equatorial)

# The alert policy (documented in one place; thresholds chosen on the real light curves and the
# injection benchmark, see tests/benchmarks/bench_tess_injection.py):
# a signal alerts when the model calls it a planet candidate with planet_probability >= 0.5, it is
# at least 10 sigma (correlated-noise SNR), at least two transits show it (a lone transit's period
# is unknown), and its depth is below 5 % (deeper is a stellar eclipse, whatever the shape says).
ALERT_POLICY = {
    "min_planet_probability": 0.5,
    "min_snr": 10.0,
    "min_transits": 2,
    "max_depth_ppm": 50_000.0,
}


def scalar_features(period_days: np.ndarray, duration_hours: np.ndarray, depth_ppm: np.ndarray) -> np.ndarray:
    """(N, 3) float32: log10 of period (d), duration (h) and depth (ppm), clipped to sane ranges."""
    p = np.clip(np.asarray(period_days, dtype=np.float64), 0.05, 1000.0)
    d = np.clip(np.asarray(duration_hours, dtype=np.float64), 0.1, 100.0)
    depth = np.clip(np.asarray(depth_ppm, dtype=np.float64), 1.0, 1e6)
    return np.stack([np.log10(p), np.log10(d), np.log10(depth)], axis=-1).astype(np.float32)


def model_inputs(signals: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The model's named inputs for TransitSignal records (views as (N, bins, 1))."""
    g = np.array([s["global_view"] for s in signals], dtype=np.float32).reshape(-1, GLOBAL_BINS, 1)
    loc = np.array([s["local_view"] for s in signals], dtype=np.float32).reshape(-1, LOCAL_BINS, 1)
    scalars = scalar_features(
        np.array([s["period_days"] for s in signals]),
        np.array([s["duration_hours"] for s in signals]),
        np.array([s["depth_ppm"] for s in signals]),
    )
    return {"global_view": g, "local_view": loc, "scalars": scalars}


def _check_model(model: OnnxModel) -> None:
    meta = model.metadata
    classes = tuple(meta.get("classes", CLASSES))
    if classes != CLASSES:
        raise Rejected("model-mismatch", f"{model.name} v{model.version} has classes {classes}, expected {CLASSES}")
    scalars = tuple(meta.get("scalar_features", ()))
    if "scalars" in model.input_names and scalars != SCALAR_FEATURES:
        raise Rejected("model-mismatch",
                       f"{model.name} v{model.version} expects scalars {scalars}, this code makes {SCALAR_FEATURES}")


def signal_probabilities(model: OnnxModel, signals: list[dict[str, Any]]) -> np.ndarray:
    """(N, 3) class probabilities (PC, EB, J) for TransitSignal records."""
    if not signals:
        return np.zeros((0, len(CLASSES)), dtype=np.float32)
    _check_model(model)
    inputs = model_inputs(signals)
    out = model.run({name: inputs[name] for name in model.input_names})
    probs = np.asarray(out.get("probabilities", next(iter(out.values()))), dtype=np.float64)
    if probs.shape != (len(signals), len(CLASSES)):
        raise Rejected("model-mismatch", f"model output shape {probs.shape}, expected ({len(signals)}, 3)")
    return probs


def planet_radius_earth(depth_ppm: float, radius_rsun: float | None) -> float | None:
    """Rp = R* sqrt(depth), in Earth radii (no limb darkening or dilution: a first look)."""
    if radius_rsun is None or not depth_ppm > 0:
        return None
    return float(radius_rsun * math.sqrt(depth_ppm * 1e-6) * EARTH_RADII_PER_SOLAR_RADIUS)


def predict_transits(model: OnnxModel, features: list[dict[str, Any]], toi: Any | None) -> list[dict[str, Any]]:
    """Prediction records (kind "lightcurve") for LightCurveFeatures records, in order.

    All signals of the batch go through the model in one call. ``toi`` is a TOICatalog (or None):
    each signal carries the designation of the known TOI it matches, null when it is new.
    """
    flat = [s for f in features for s in f["signals"]]
    probs = signal_probabilities(model, flat)
    out, k = [], 0
    for f in features:
        signals = []
        star = f.get("star") or {}
        radius = star.get("radius_rsun")
        for s in f["signals"]:
            p = probs[k]
            k += 1
            known = (toi.match(f["tic_id"], s["period_days"], s["epoch_btjd"], s["duration_hours"],
                               s.get("n_transits", 2)) if toi is not None else None)
            signals.append({
                "period_days": float(s["period_days"]),
                "epoch_btjd": float(s["epoch_btjd"]),
                "duration_hours": float(s["duration_hours"]),
                "depth_ppm": float(s["depth_ppm"]),
                "snr": float(s["snr"]),
                "n_transits": int(s.get("n_transits", 0)),
                "planet_radius_earth": planet_radius_earth(s["depth_ppm"], radius),
                "triage_probability": float(p[0] + p[1]),
                "planet_probability": float(p[0]),
                "known_toi": known,
            })
        out.append({
            "prediction_id": hashlib.sha256(f"{f['file_id']}:{model.name}:{model.version}".encode()).hexdigest(),
            "file_id": f["file_id"],
            "kind": "lightcurve",
            "source": f["uri"],
            "object": f["object"],
            "model": model.name,
            "model_version": str(model.version),
            "detected_at_ms": int(f["detected_at_ms"]),
            "main_group": None,
            "probabilities": None,
            "bus_class": None,
            "bus_probability": None,
            "sector": f.get("sector"),
            "signals": signals,
            # Features written before v2 resolve with nulls here: a rescore of them has no position or span.
            "observation_start": btjd_to_utc_iso(f.get("time_start_btjd")),
            "observation_end": btjd_to_utc_iso(f.get("time_end_btjd")),
            "tic_id": int(f["tic_id"]),
            "ra_deg": star.get("ra_deg"),
            "dec_deg": star.get("dec_deg"),
            "tmag": star.get("tmag"),
            "asteroid_number": None,
            "designation": None,
            "bus_probabilities": None,
            "sectors": None,  # one file; stream/stars sets these for a search over several sectors
            "sources": None,
        })
    return out


def transit_alerts(prediction: dict[str, Any], policy: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The alerts a light-curve prediction raises under ``ALERT_POLICY``: one per qualifying signal.

    Each is a dict with ``reason`` ("planet-candidate" for a new signal, "known-planet-candidate"
    when it matches a TOI), ``score`` (planet_probability), a one-line ``summary`` and the
    ``signal_index`` it is about (for the figure).
    """
    rules = {**ALERT_POLICY, **(policy or {})}
    alerts = []
    for i, s in enumerate(prediction.get("signals") or []):
        if (s["planet_probability"] >= rules["min_planet_probability"] and s["snr"] >= rules["min_snr"]
                and s.get("n_transits", 0) >= rules["min_transits"] and s["depth_ppm"] <= rules["max_depth_ppm"]):
            reason = "known-planet-candidate" if s.get("known_toi") else "planet-candidate"
            radius = f", Rp~{s['planet_radius_earth']:.1f} Re" if s.get("planet_radius_earth") else ""
            known = f", matches {s['known_toi']}" if s.get("known_toi") else ", new"
            summary = (f"{prediction['object']} {sectors_phrase(prediction)}: P={s['period_days']:.4f} d, "
                       f"depth {s['depth_ppm']:.0f} ppm{radius}, SNR {s['snr']:.1f}, "
                       f"P(planet)={s['planet_probability']:.2f}{known}")
            alerts.append({"reason": reason, "score": float(s["planet_probability"]), "summary": summary,
                           "signal_index": i})
    return alerts
