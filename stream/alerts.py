"""Alert policy: which predictions subscribers are told about, and the alert messages."""

from __future__ import annotations

import hashlib
import os
from typing import Any

# Spectra: an asteroid confidently outside the three big complexes (V, A, D, L, K, T, ... types) is
# rare and worth a follow-up look; the threshold is an operator setting.
RARE_GROUP_THRESHOLD = float(os.environ.get("SKYSTREAM_ALERT_RARE_THRESHOLD", "0.8"))


def _alert(prediction: dict[str, Any], reason: str, score: float, summary: str, **extra: Any) -> dict[str, Any]:
    alert_id = hashlib.sha256(f"{prediction['prediction_id']}:{reason}".encode()).hexdigest()
    return {
        "alert_id": alert_id, "prediction_id": prediction["prediction_id"], "file_id": prediction["file_id"],
        "kind": prediction["kind"], "object": prediction["object"], "source": prediction["source"],
        "reason": reason, "score": float(score), "summary": summary, "model": prediction["model"],
        "model_version": prediction["model_version"], "figure_uri": extra.get("figure_uri"),
        "figure_png": extra.get("figure_png"),
    }


def alerts_for(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """Alert records for one prediction (usually none)."""
    if prediction["kind"] == "spectrum":
        p = prediction["probabilities"].get("Other", 0.0)
        if prediction["main_group"] == "Other" and p >= RARE_GROUP_THRESHOLD:
            return [_alert(prediction, "rare-composition", p,
                           f"asteroid {prediction['object']}: {prediction['bus_class']}-type "
                           f"(Other group, p={p:.2f})")]
        return []
    from stream.transit_model import transit_alerts

    return [_alert(prediction, **a) for a in transit_alerts(prediction)]
