"""What the API and the web pages show, read from the archive and the registry (no HTTP here).

Query parameters become a filter of the filter language (stream/alerts/filters.py) and are evaluated
by its ``matches``, so ``GET /alerts?kind=...`` means what ``skystream alerts --archive --kind ...``
and a filters file mean. Every input is checked here; ``BadRequest`` carries the message a client sees.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stream.alerts.filters import Filter, FilterError, matches, parse_filter
from stream.settings import Settings

__all__ = ["BadRequest", "MAX_LIMIT", "alert_by_id", "alert_filter", "alert_json", "list_alerts", "models",
           "object_alerts", "object_history", "parse_limit", "parse_since", "registry_version", "check_object"]

MAX_LIMIT = 1000
_ALERT_ID = re.compile(r"[0-9a-f]{64}")
_OBJECT = re.compile(r"[\w .+:()\-\[\]]{1,100}")
# Archive bookkeeping columns a client has no use for.
_INTERNAL = ("kafka_partition", "kafka_offset", "figure_png")


class BadRequest(ValueError):
    """A request parameter that cannot be used; the message says which and why."""


def _values(params: Mapping[str, Any], key: str) -> list[str]:
    """A parameter given repeated (``?kind=a&kind=b``) or comma-separated (``?kind=a,b``)."""
    raw = params.getall(key, []) if hasattr(params, "getall") else [params[key]] if key in params else []
    return [v.strip() for item in raw for v in str(item).split(",") if v.strip()]


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{key}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{key}: expected a finite number, got {text!r}")
    return value


def alert_filter(params: Mapping[str, Any]) -> Filter | None:
    """``kind``, ``reason``, ``object``, ``min_score`` and ``cone=ra,dec,radius_deg`` as one filter
    (None when none is given); BadRequest names the parameter that is wrong."""
    spec: dict[str, Any] = {}
    for key in ("kind", "reason", "object"):
        if values := _values(params, key):
            spec[key] = values
    if (text := str(params.get("min_score", "")).strip()) != "":
        spec["min"] = {"score": _number("min_score", text)}
    if (text := str(params.get("cone", "")).strip()) != "":
        parts = [p for p in text.split(",")]
        if len(parts) != 3:
            raise BadRequest(f"cone: expected ra,dec,radius_deg in degrees, got {text!r}")
        spec["cone"] = dict(zip(("ra", "dec", "radius_deg"), (_number("cone", p) for p in parts), strict=True))
    if not spec:
        return None
    try:
        return parse_filter("request", spec)
    except FilterError as exc:
        raise BadRequest(str(exc).replace("filter 'request', ", "")) from None


def parse_since(text: str | None, now: float | None = None) -> int | None:
    """``since`` as epoch milliseconds: a duration back from now (``30m``, ``2h``, ``3d``) or an ISO 8601
    time (``2026-11-22T08:00:00Z``)."""
    if text is None or not text.strip():
        return None
    from stream.alerts.client import parse_duration

    try:
        return int(((now or time.time()) - parse_duration(text)) * 1000)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"since: expected a duration (30m, 2h, 3d) or an ISO 8601 time, got {text!r}") from None
    if when.tzinfo is None:
        raise BadRequest(f"since: give the time zone (e.g. a trailing Z for UTC): {text!r}")
    return int(when.timestamp() * 1000)


def parse_limit(text: str | None, default: int = 100) -> int:
    """``limit``: 1..MAX_LIMIT rows."""
    if text is None or not str(text).strip():
        return default
    if not str(text).strip().isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def check_object(object_id: str) -> str:
    """An object name as the archive knows them (TIC 25155310, 4, 1996 UK, ...), or BadRequest."""
    if not _OBJECT.fullmatch(object_id or ""):
        raise BadRequest(f"object: expected a TIC id or an asteroid number or designation, got {object_id[:100]!r}")
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

    if not _ALERT_ID.fullmatch(alert_id):
        raise BadRequest(f"alert id: expected 64 lowercase hex digits, got {alert_id[:80]!r}")
    rows = query.read("alerts", pc.field("alert_id") == alert_id, settings=settings)
    found = rows.to_pylist(maps_as_pydicts="strict")
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
