"""The search over all of a star's sectors: stitched light curve -> signals -> multi-sector prediction -> alerts."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from stream.alerts.figures import diagnostic_png
from stream.alerts.policy import alert_id_for, alert_record
from stream.features.transits import features_from_lightcurve
from stream.scoring.transit_predictor import predict_transits, transit_alerts
from stream.stars.state import Sector, sectors_of, stitched

__all__ = ["MULTI_SECTOR_REASON", "StarResult", "same_signal", "search_star", "star_file_id"]

log = logging.getLogger(__name__)

MULTI_SECTOR_REASON = "multi-sector-candidate"
# Two detections are one signal when their periods agree within this fraction and their transits line
# up within a transit duration: one sector measures a 3-day period to ~0.1 %, a 30-day one far worse.
PERIOD_TOLERANCE = 0.01


@dataclass
class StarResult:
    """What one search of a star's sectors gave: the prediction, its alerts and the star's new state."""

    prediction: dict[str, Any]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def star_file_id(sectors: list[Sector]) -> str:
    """The file_id of a multi-sector prediction: sha256 of its sectors' file ids, sorted (the same set of
    files gives the same id, and so the same prediction_id, whatever order they came in)."""
    return hashlib.sha256(("star:" + ",".join(sorted(s.file_id for s in sectors))).encode()).hexdigest()


def same_signal(a: dict[str, Any], b: dict[str, Any], tolerance: float = PERIOD_TOLERANCE) -> bool:
    """Whether two detections (period_days, epoch_btjd, duration_hours) are the same periodic signal."""
    pa, pb = float(a["period_days"]), float(b["period_days"])
    if abs(pa - pb) > tolerance * max(pa, pb):
        return False
    cycles = (float(a["epoch_btjd"]) - float(b["epoch_btjd"])) / pb
    return abs(cycles - round(cycles)) * pb <= max(float(a["duration_hours"]), float(b["duration_hours"])) / 24.0


def _earlier_alert(signal: dict[str, Any], sectors: list[Sector], taken: set[str]) -> str | None:
    """The alert_id of the earliest sector's own alert on ``signal``, None when no sector alerted on it alone."""
    for sector in sectors:
        for index, alert_id in sorted(sector.alerts.items()):
            if alert_id not in taken and same_signal(sector.features["signals"][index], signal):
                return alert_id
    return None


def search_star(state: dict[str, Any], model: Any, toi: Any = None, *, figures: bool = True) -> StarResult | None:
    """Search all the sectors in ``state`` stitched (None with fewer than two) and score the signals.

    The prediction is a light-curve Prediction with ``sectors`` and ``sources``. Its alerts follow the
    transit alert policy; each is an update of a sector's own alert on the same signal, an update of an
    earlier multi-sector alert, or a new ``multi-sector-candidate`` (stream/stars/__init__.py).
    """
    sectors = sectors_of(state)
    if len(sectors) < 2:
        return None
    lc = stitched(sectors)
    first = sectors[0].features
    record = features_from_lightcurve(lc, uri=first["uri"], file_id=star_file_id(sectors),
                                      detected_at_ms=max(int(s.features["detected_at_ms"]) for s in sectors))
    record["sector"] = None
    prediction = predict_transits(model, [record], toi)[0]
    prediction["sectors"] = [s.sector for s in sectors]
    prediction["sources"] = [s.features["uri"] for s in sectors]

    numbers = prediction["sectors"]
    known = list(state["signals"])
    taken: set[str] = set()
    alerts = []
    for found in transit_alerts(prediction):
        index = found["signal_index"]
        signal = prediction["signals"][index]
        reason = found["reason"]
        alert_id = _earlier_alert(signal, sectors, taken)
        if alert_id is None:
            reason = MULTI_SECTOR_REASON
            earlier = next((k for k in known if k["alert_id"] not in taken and same_signal(k, signal)), None)
            alert_id = earlier["alert_id"] if earlier else alert_id_for(prediction["prediction_id"], reason, index)
            known = [k for k in known if k is not earlier]
            known.append({"alert_id": alert_id, "period_days": signal["period_days"],
                          "epoch_btjd": signal["epoch_btjd"], "duration_hours": signal["duration_hours"],
                          "sectors": numbers})
        taken.add(alert_id)
        extra: dict[str, Any] = {}
        if figures:
            extra["figure_png"] = diagnostic_png(lc, signal, title=found["summary"][:110],
                                                 earlier=prediction["signals"][:index])
        alerts.append(alert_record(prediction, reason, found["score"], found["summary"], signal, index,
                                   alert_id=alert_id, **extra))
    return StarResult(prediction, alerts, {**state, "signals": known})
