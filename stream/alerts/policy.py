"""Alert policy: which predictions subscribers are told about, and the alert messages."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.settings import Settings

__all__ = ["alert_id_for", "alert_record", "alert_version", "alerts_for"]

INLINE_FIGURE_LIMIT = 256 * 1024


_TRANSIT_FIELDS = ("period_days", "epoch_btjd", "duration_hours", "depth_ppm", "snr", "n_transits",
                   "planet_radius_earth", "triage_probability", "planet_probability", "known_toi")
_SPECTRUM_FIELDS = ("main_group", "probabilities", "bus_class", "bus_probability", "calibrated_probabilities", "border",
                    "border_reason", "novelty")
_TARGET_FIELDS = ("observation_start", "observation_end", "tic_id", "sector", "ra_deg", "dec_deg", "tmag",
                  "asteroid_number", "designation")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_id_for(prediction_id: str, reason: str, signal_index: int | None = None) -> str:
    """The alert's id: sha256 hex of ``prediction_id:reason`` (one alert per reason: spectra), or of
    ``prediction_id:reason:signal_index`` for a transit signal.

    A light curve can raise one alert per signal, often with the same reason (each planet of L 98-59
    is a "planet-candidate"), so the signal must be in the id or they collapse into one wherever
    alerts are keyed by it (subscribers' de-duplication, the archive). The signal's index in the
    prediction's ``signals`` is used, not its period: a prediction is fully determined by its file
    and model version (same ``prediction_id``, same signals in the same order on a replay), so the
    index is as stable as the id itself and unique per signal by construction, whereas two signals
    can share a period (aliases) and a float's text is a fragile key. Spectra keep their old ids.
    """
    key = f"{prediction_id}:{reason}" if signal_index is None else f"{prediction_id}:{reason}:{signal_index}"
    return hashlib.sha256(key.encode()).hexdigest()


def alert_version(alert: dict[str, Any]) -> str:
    """What tells copies of an alert from updates of it: its id, and the sectors of a multi-sector search.

    A repeated copy (at-least-once delivery, a replay) has the same version and content; an update (a
    signal a sector alerted on, confirmed by more sectors: stream/stars) keeps the alert_id and lists
    more sectors, so subscribers de-duplicating by version still receive it.
    """
    return alert["alert_id"] + ":" + "+".join(str(s) for s in alert.get("sectors") or ())


def alert_record(prediction: dict[str, Any], reason: str, score: float, summary: str,
                 signal: dict[str, Any] | None = None, signal_index: int | None = None, *,
                 alert_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """An Alert record (schemas/avro/alert.avsc): the prediction's numbers, and the signal's for a transit.

    Everything but ``alerted_at`` follows from the prediction, so a replay gives the same content.
    ``alert_id`` replaces the id derived from the prediction: a multi-sector search updating an earlier
    alert (stream/stars/search.py). ``extra``: figure_png or figure_uri.
    """
    alert_id = alert_id or alert_id_for(prediction["prediction_id"], reason, signal_index)
    spectrum = prediction["kind"] == "spectrum"
    return {
        "alert_id": alert_id, "prediction_id": prediction["prediction_id"], "file_id": prediction["file_id"],
        "kind": prediction["kind"], "object": prediction["object"], "source": prediction["source"],
        "reason": reason, "score": float(score), "summary": summary, "model": prediction["model"],
        "model_version": prediction["model_version"], "figure_uri": extra.get("figure_uri"),
        "figure_png": extra.get("figure_png"), "alerted_at": _now_iso(),
        **{k: prediction.get(k) for k in _TARGET_FIELDS},
        **{k: (signal or {}).get(k) for k in _TRANSIT_FIELDS},
        **{k: prediction.get(k) if spectrum else None for k in _SPECTRUM_FIELDS},
        "sectors": prediction.get("sectors"),
    }


def alerts_for(prediction: dict[str, Any], settings: Settings | None = None) -> list[dict[str, Any]]:
    """Alert records for one prediction (usually none); ``settings`` defaults to the environment now."""
    settings = settings or Settings()
    if prediction["kind"] == "spectrum":
        return _spectrum_alerts(prediction, settings)
    from stream.scoring.transit_predictor import transit_alerts

    found = transit_alerts(prediction)
    if not found:
        return []
    # Astronomers look at the light curve before they trust a candidate: every transit alert carries
    # the diagnostic figure (light curve, periodogram, folded views, scores). The file is read again
    # here (claim check); alerts are rare, so this costs nothing on the common path.
    from stream.alerts.figures import diagnostic_png, source_bytes

    data = source_bytes(prediction, settings)
    out = []
    for a in found:
        signal = prediction["signals"][a["signal_index"]]
        png = diagnostic_png(data, signal, title=a["summary"][:110], earlier=prediction["signals"][:a["signal_index"]])
        out.append(alert_record(prediction, a["reason"], a["score"], a["summary"], signal, a["signal_index"],
                          **_store_figure(png, a, prediction, Path(settings.artifacts))))
    return out


def _spectrum_alerts(prediction: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """rare-composition: an asteroid confidently outside the three big complexes (V, A, D, L, K, T, ...
    types) is rare and worth a follow-up look. novel-spectrum: a spectrum unlike every training spectrum
    (novelty p-value below α; α is the false-alarm rate on spectra like the training set's). A spectrum
    can raise both; each has its own id. Thresholds are operator settings."""
    out = []
    p = prediction["probabilities"].get("Other", 0.0)
    if prediction["main_group"] == "Other" and p >= settings.alert_rare_threshold:
        out.append(alert_record(prediction, "rare-composition", p,
                          f"asteroid {prediction['object']}: {prediction['bus_class']}-type (Other group, p={p:.2f})"))
    novelty = prediction.get("novelty")
    if novelty is not None and novelty < settings.alert_novelty_alpha:
        out.append(alert_record(prediction, "novel-spectrum", 1.0 - novelty,
                          f"asteroid {prediction['object']}: spectrum unlike the training spectra (novelty "
                          f"p={novelty:.4f} < {settings.alert_novelty_alpha:g}; the model says "
                          f"{prediction['main_group']}, {prediction['bus_class']})"))
    return out


def _store_figure(png: bytes, alert: dict[str, Any], prediction: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Inline when small (the usual case, ~tens of KB); else written to the artifact store by reference."""
    if len(png) <= INLINE_FIGURE_LIMIT:
        return {"figure_png": png}
    root = artifacts.resolve() / "figures"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{prediction['prediction_id'][:16]}-{alert['signal_index']}.png"
    path.write_bytes(png)
    return {"figure_uri": str(path)}
