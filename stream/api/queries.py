"""What the API and the web pages show, read from the archive and the registry (no HTTP here).

Query parameters become a filter of the filter language (stream/alerts/filters.py) and are evaluated
by its ``matches``, so ``GET /alerts?kind=...`` means what ``skystream alerts --archive --kind ...``
and a filters file mean. Every input is checked here, against the definitions of stream/api/params.py that
the OpenAPI description is built from; ``BadRequest`` carries the message a client sees.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stream.alerts.filters import Filter, FilterError, matches, parse_filter
from stream.api.params import ALERT_ID, ALERTS_QUERY, MAX_LIMIT, OBJECT_ID, BadRequest, check_query
from stream.settings import Settings

__all__ = ["BadRequest", "MAX_LIMIT", "alert_by_id", "alert_filter", "alert_json", "alert_query", "list_alerts",
           "models", "object_alerts", "object_history", "parse_limit", "parse_since", "registry_version",
           "check_object"]

# Archive bookkeeping columns a client has no use for.
_INTERNAL = ("kafka_partition", "kafka_offset", "figure_png")
_PARAM = {p.name: p for p in ALERTS_QUERY}


def _values(checked: Mapping[str, Any], key: str) -> list[str]:
    """A parameter given repeated (``?kind=a&kind=b``) or comma-separated (``?kind=a,b``)."""
    return [v.strip() for item in checked.get(key, []) for v in str(item).split(",") if v.strip()]


def alert_filter(params: Mapping[str, Any]) -> Filter | None:
    """``kind``, ``reason``, ``object``, ``min_score`` and ``cone=ra,dec,radius_deg`` as one filter
    (None when none is given); BadRequest names the parameter that is wrong."""
    checked = check_query(ALERTS_QUERY, params)
    spec: dict[str, Any] = {}
    for key in ("kind", "reason", "object"):
        if values := _values(checked, key):
            spec[key] = values
    if "min_score" in checked:
        spec["min"] = {"score": checked["min_score"]}
    if "cone" in checked:
        ra, dec, radius = (float(p) for p in checked["cone"].split(","))
        spec["cone"] = {"ra": ra, "dec": dec, "radius_deg": radius}
    if not spec:
        return None
    try:
        return parse_filter("request", spec)
    except FilterError as exc:  # not reached for what the parameters admit; kept as the last word
        raise BadRequest(str(exc).replace("filter 'request', ", "")) from None


def alert_query(params: Mapping[str, Any], now: float | None = None) -> tuple[Filter | None, int | None, int]:
    """(filter, since in epoch ms, limit) of a ``GET /alerts`` query, every parameter checked."""
    checked = check_query(ALERTS_QUERY, params)
    return alert_filter(params), parse_since(checked.get("since"), now), checked.get("limit", 100)


def parse_since(text: str | None, now: float | None = None) -> int | None:
    """``since`` as epoch milliseconds: a duration back from now (``30m``, ``2h``, ``3d``) or an ISO 8601
    time (``2026-11-22T08:00:00Z``)."""
    if text is None:
        return None
    from stream.alerts.client import parse_duration

    text = str(_PARAM["since"].check(text))
    if text[-1] in "smhdw":
        return int(((now or time.time()) - parse_duration(text)) * 1000)
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def parse_limit(text: str | None, default: int = 100) -> int:
    """``limit``: 1..MAX_LIMIT rows."""
    return default if text is None else int(_PARAM["limit"].check(text))


def check_object(object_id: str) -> str:
    """An object name as the archive knows them (TIC 25155310, 4, 1996 UK, ...), or BadRequest."""
    OBJECT_ID.check(object_id or "")
    return object_id


def alert_json(alert: Mapping[str, Any]) -> dict[str, Any]:
    """An archived alert for a client: every field, the figure as a URL of this server."""
    out = {k: v for k, v in alert.items() if k not in _INTERNAL}
    out["figure_url"] = f"/alerts/{alert['alert_id']}/figure.png" if alert.get("figure_png") else None
    return out


def list_alerts(settings: Settings, where: Filter | None = None, since_ms: int | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` archived alerts that pass ``where``, newest first."""
    from stream.archive import query

    rows = [a for a in query.alerts(since_ms=since_ms, settings=settings) if where is None or matches(where, a)]
    return rows[::-1][:limit]


def alert_by_id(settings: Settings, alert_id: str) -> dict[str, Any] | None:
    """One archived alert by its id (None when the archive has no such alert)."""
    import pyarrow.compute as pc

    from stream.archive import query

    ALERT_ID.check(alert_id)
    rows = query.read("alerts", pc.field("alert_id") == alert_id, settings=settings, dedupe=False)
    found = query.latest_versions(rows.to_pylist(maps_as_pydicts="strict"))
    return found[0] if found else None


def object_history(settings: Settings, object_id: str) -> list[dict[str, Any]]:
    """Every archived prediction of an object (stream.archive.query.history)."""
    from stream.archive import query

    return [{k: v for k, v in r.items() if k not in _INTERNAL}
            for r in query.history(check_object(object_id), settings=settings)]


def object_alerts(settings: Settings, object_id: str) -> list[dict[str, Any]]:
    """The archived alerts of an object, oldest first."""
    import pyarrow.compute as pc

    from stream.archive import query

    names = query.object_names(check_object(object_id))
    return query.read("alerts", pc.field("object").isin(names), settings=settings).to_pylist(
        maps_as_pydicts="strict")


def registry_version(settings: Settings, task: str, version: str) -> dict[str, Any]:
    """The metadata of one registered version; BadRequest (shown as 404) when there is no such one."""
    from stream.models.registry import open_registry

    registry = open_registry(settings.registry)
    if task not in registry.tasks() or version not in registry.versions(task):
        raise LookupError(f"no model version {task}/{version} in the registry")
    return registry.metadata(task, version)


def models(settings: Settings) -> list[dict[str, Any]]:
    """Each task's champion with its metrics, its promotion history and every version's summary."""
    from stream.models.registry import open_registry

    registry = open_registry(settings.registry)
    out = []
    for task in registry.tasks():
        versions = []
        for v in registry.versions(task):
            meta = registry.metadata(task, v)
            versions.append({"version": v, "name": meta.get("name"), "created": meta.get("created"),
                             "description": meta.get("description"), "metrics": meta.get("metrics", {})})
        out.append({"task": task, "champion": registry.champion(task), "history": registry.history(task),
                    "versions": versions})
    return out
