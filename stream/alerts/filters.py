"""User-defined alert filters: a small declarative language, evaluated as a pure function of one alert.

A filters file (YAML or JSON, docs/filters.md) names filters; every alert that matches one is also
published on ``skystream.alerts.<name>``. The same evaluation serves the worker's filter agent, the
ad-hoc options of `skystream alerts` and the archive (rows of the same shape), so a filter means the
same thing everywhere. There is no ``eval``: a filter is a set of conditions, all of which must hold:

- ``kind``, ``reason``, ``object`` and any string field of the Alert schema (``main_group``,
  ``bus_class``, ...): one value or a list of accepted values;
- ``known_toi``: ``true`` (matches a TOI), ``false`` (a new candidate), a designation or a list;
- ``min`` / ``max``: ``{field: number}`` bounds (inclusive) on numeric fields (score, period_days,
  planet_probability, depth_ppm, planet_radius_earth, tmag, snr, ...); a null field never passes;
- ``watch``: ``{tic_ids: [...], asteroids: [...]}`` (numbers or designations), each list inline or
  the path of a file with one entry per line (``#`` comments), relative to the filters file;
- ``cone``: ``{ra: deg, dec: deg, radius_deg: deg}`` around a sky position (ICRS).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import schemas
from stream.settings import TOPICS

__all__ = [
    "FILTER_TOPIC_PREFIX",
    "Filter",
    "FilterError",
    "FilterFile",
    "check_name",
    "load_filters",
    "matches",
    "matching_filters",
    "parse_filter",
    "parse_filters",
    "route_alerts",
    "topic_for",
]

log = logging.getLogger(__name__)

FILTER_TOPIC_PREFIX = TOPICS["alerts"] + "."
# Kafka's topic-name rules: legal characters, at most 249 characters, not "." or "..".
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_KAFKA_MAX_TOPIC = 249


def _alert_fields() -> tuple[dict[str, str], set[str]]:
    """Numeric and string fields of the current Alert schema (the filter language follows the schema)."""
    numeric: dict[str, str] = {}
    strings: set[str] = set()
    for f in schemas.schema_json("Alert")["fields"]:
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        types = [t for t in types if t != "null"]
        if types and types[0] in ("int", "long", "float", "double"):
            numeric[f["name"]] = types[0]
        elif types == ["string"]:
            strings.add(f["name"])
    return numeric, strings


NUMERIC_FIELDS, STRING_FIELDS = _alert_fields()
# Strings without a useful equality (ids, free text, timestamps) are not filter keys.
_EQUALITY_FIELDS = STRING_FIELDS - {"alert_id", "prediction_id", "file_id", "summary", "figure_uri", "alerted_at",
                                    "observation_start", "observation_end", "known_toi", "designation"}
_KEYS = {"min", "max", "watch", "cone", "known_toi", "description"} | _EQUALITY_FIELDS


class FilterError(ValueError):
    """A filter (or filters file) that cannot be used; the message names the filter, the key and why."""


def topic_for(name: str) -> str:
    """The topic a filter publishes its matches on."""
    return FILTER_TOPIC_PREFIX + name


@dataclass(frozen=True)
class Filter:
    """One named filter, checked and normalised; ``matches`` evaluates it."""

    name: str
    equals: dict[str, frozenset[str]] = field(default_factory=dict)
    known_toi: bool | frozenset[str] | None = None
    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    tic_ids: frozenset[int] | None = None
    asteroid_numbers: frozenset[int] = frozenset()
    designations: frozenset[str] = frozenset()
    cone: tuple[float, float, float] | None = None
    description: str = ""

    @property
    def topic(self) -> str:
        """The Kafka topic this filter's alerts go to (skystream.alerts.NAME)."""
        return topic_for(self.name)

    @property
    def watches_asteroids(self) -> bool:
        """Whether the filter names asteroids (by number or designation)."""
        return bool(self.asteroid_numbers or self.designations)


def _norm_designation(text: str) -> str:
    return " ".join(text.split()).upper()


def _fail(name: str, key: str, why: str) -> FilterError:
    return FilterError(f"filter {name!r}, key {key!r}: {why}")


def _strings(name: str, key: str, value: Any) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        raise _fail(name, key, f"expected a string or a list of strings, got {value!r}")
    return frozenset(str(v) for v in values)


def _bounds(name: str, key: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise _fail(name, key, f"expected a mapping of numeric field to number, got {value!r}")
    out = {}
    for fld, bound in value.items():
        if fld not in NUMERIC_FIELDS:
            raise _fail(name, f"{key}.{fld}", f"not a numeric alert field; known: {', '.join(sorted(NUMERIC_FIELDS))}")
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            raise _fail(name, f"{key}.{fld}", f"expected a finite number, got {bound!r}")
        out[fld] = float(bound)
    return out


def _entries(name: str, key: str, value: Any, base: Path | None) -> list[Any]:
    """A watch list inline (a list) or from a file (a path: one entry per line, '#' comments)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise _fail(name, key, f"cannot read watch-list file {str(path)!r}: {exc.strerror or exc}") from None
        return [s for line in lines if (s := line.split("#", 1)[0].strip())]
    raise _fail(name, key, f"expected a list or the path of a watch-list file, got {value!r}")


def _watch(name: str, value: Any, base: Path | None) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not value or set(value) - {"tic_ids", "asteroids"}:
        raise _fail(name, "watch", f"expected a mapping with tic_ids and/or asteroids, got {value!r}")
    out: dict[str, Any] = {}
    if "tic_ids" in value:
        ids = set()
        for entry in _entries(name, "watch.tic_ids", value["tic_ids"], base):
            text = str(entry).strip()
            text = text[3:].strip() if text.upper().startswith("TIC") else text
            if isinstance(entry, bool) or not text.isdigit():
                raise _fail(name, "watch.tic_ids", f"not a TIC id: {entry!r}")
            ids.add(int(text))
        out["tic_ids"] = frozenset(ids)
    if "asteroids" in value:
        numbers, designations = set(), set()
        for entry in _entries(name, "watch.asteroids", value["asteroids"], base):
            if isinstance(entry, bool) or not isinstance(entry, int | str):
                raise _fail(name, "watch.asteroids", f"not an asteroid number or designation: {entry!r}")
            text = str(entry).strip()
            if text.isdigit():
                numbers.add(int(text))
            elif text:
                designations.add(_norm_designation(text))
        out["asteroid_numbers"], out["designations"] = frozenset(numbers), frozenset(designations)
    return out


def _cone(name: str, value: Any) -> tuple[float, float, float]:
    if not isinstance(value, Mapping) or set(value) != {"ra", "dec", "radius_deg"}:
        raise _fail(name, "cone", f"expected {{ra, dec, radius_deg}} in degrees, got {value!r}")
    ra, dec, radius = (value[k] for k in ("ra", "dec", "radius_deg"))
    for k, v in (("ra", ra), ("dec", dec), ("radius_deg", radius)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _fail(name, f"cone.{k}", f"expected a number of degrees, got {v!r}")
    if not 0 <= ra < 360 or not -90 <= dec <= 90 or not 0 < radius <= 180:
        raise _fail(name, "cone", f"out of range (0 <= ra < 360, -90 <= dec <= 90, 0 < radius_deg <= 180): {value!r}")
    return float(ra), float(dec), float(radius)


def check_name(name: Any) -> str:
    """``name`` if it can name a filter (its topic follows Kafka's topic-name rules); else FilterError."""
    if not isinstance(name, str) or not _KAFKA_TOPIC.fullmatch(name) or name in (".", ".."):
        raise FilterError(f"filter name {name!r}: a topic name may only hold letters, digits, '.', '_' and '-'")
    if len(topic_for(name)) > _KAFKA_MAX_TOPIC:
        raise FilterError(f"filter name {name[:40]!r}...: its topic would be longer than {_KAFKA_MAX_TOPIC} characters")
    return name


def parse_filter(name: str, spec: Any, base: Path | None = None) -> Filter:
    """A Filter from its specification (a mapping); FilterError names the filter, the key and why.

    ``base`` is the directory relative watch-list paths are read from (the filters file's)."""
    name = check_name(name)
    if not isinstance(spec, Mapping) or not spec:
        raise FilterError(f"filter {name!r}: expected a mapping of conditions, got {spec!r}")
    unknown = sorted(str(k) for k in spec if k not in _KEYS)
    if unknown:
        raise _fail(name, unknown[0], f"unknown key; known: {', '.join(sorted(_KEYS))}")
    kw: dict[str, Any] = {"name": name, "description": str(spec.get("description", ""))}
    kw["equals"] = {k: _strings(name, k, v) for k, v in spec.items() if k in _EQUALITY_FIELDS}
    if "known_toi" in spec:
        v = spec["known_toi"]
        kw["known_toi"] = v if isinstance(v, bool) else _strings(name, "known_toi", v)
    if "min" in spec:
        kw["minimum"] = _bounds(name, "min", spec["min"])
    if "max" in spec:
        kw["maximum"] = _bounds(name, "max", spec["max"])
    for fld, low in kw.get("minimum", {}).items():
        if fld in kw.get("maximum", {}) and low > kw["maximum"][fld]:
            raise _fail(name, f"min.{fld}", f"{low} is above max.{fld} {kw['maximum'][fld]}: nothing can match")
    if "watch" in spec:
        kw.update(_watch(name, spec["watch"], base))
    if "cone" in spec:
        kw["cone"] = _cone(name, spec["cone"])
    return Filter(**kw)


def parse_filters(document: Any, base: Path | None = None) -> dict[str, Filter]:
    """Filters from a parsed document: ``{"filters": {name: spec, ...}}``."""
    if document is None:
        return {}
    if not isinstance(document, Mapping) or set(document) != {"filters"}:
        raise FilterError("the filters file must hold one top-level key, 'filters', mapping names to conditions")
    specs = document["filters"] or {}
    if not isinstance(specs, Mapping):
        raise FilterError("'filters' must map filter names to their conditions")
    out = {str(n): parse_filter(n, spec, base) for n, spec in specs.items()}
    # Kafka treats '.' and '_' alike in metric names and warns of topics that differ only there.
    seen: dict[str, str] = {}
    for n in out:
        clash = seen.setdefault(n.replace(".", "_"), n)
        if clash != n:
            raise FilterError(f"filter names {clash!r} and {n!r} differ only in '.' vs '_' (Kafka topics collide)")
    return out


def load_filters(path: str | Path) -> dict[str, Filter]:
    """Read and check a filters file (YAML, of which JSON is a subset); FilterError says what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FilterError(f"cannot read filters file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FilterError(f"{path}: not valid YAML/JSON: {exc}") from None
    try:
        return parse_filters(document, path.parent)
    except FilterError as exc:
        raise FilterError(f"{path}: {exc}") from None


def _separation_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return float(SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).deg)


def matches(flt: Filter, alert: Mapping[str, Any]) -> bool:
    """Whether one alert record (a decoded Alert, or an archive row of the same fields) passes ``flt``."""
    for fld, accepted in flt.equals.items():
        if fld == "object":
            if str(alert.get(fld) or "").casefold() not in {a.casefold() for a in accepted}:
                return False
        elif alert.get(fld) not in accepted:
            return False
    if flt.known_toi is not None:
        toi = alert.get("known_toi")
        if isinstance(flt.known_toi, bool):
            if (toi is not None) != flt.known_toi:
                return False
        elif toi not in flt.known_toi:
            return False
    for fld, low in flt.minimum.items():
        v = alert.get(fld)
        if v is None or not v >= low:
            return False
    for fld, high in flt.maximum.items():
        v = alert.get(fld)
        if v is None or not v <= high:
            return False
    if flt.tic_ids is not None or flt.watches_asteroids:
        tic, number, desig = alert.get("tic_id"), alert.get("asteroid_number"), alert.get("designation")
        watched = ((flt.tic_ids is not None and tic in flt.tic_ids)
                   or (number is not None and number in flt.asteroid_numbers)
                   or (desig is not None and _norm_designation(desig) in flt.designations))
        if not watched:
            return False
    if flt.cone is not None:
        ra, dec = alert.get("ra_deg"), alert.get("dec_deg")
        if ra is None or dec is None or _separation_deg(flt.cone[0], flt.cone[1], ra, dec) > flt.cone[2]:
            return False
    return True


def matching_filters(filters: Iterable[Filter], alert: Mapping[str, Any]) -> list[Filter]:
    """The filters ``alert`` passes, in their order."""
    return [f for f in filters if matches(f, alert)]


def route_alerts(filters: Mapping[str, Filter], messages: Iterable[tuple[bytes | None, bytes]]
                 ) -> list[tuple[str, bytes | None, bytes]]:
    """The filter agent's work on one batch: (topic, key, value) to send for every (key, value) Alert
    message that matches a filter. The message is forwarded unchanged (same bytes, same key), so a
    filter topic carries exactly what skystream.alerts does. A message that is not an Alert is skipped
    with a warning (it was already a dead letter or a foreign message upstream)."""
    out = []
    for key, value in messages:
        try:
            _, alert = schemas.decode(value, expect="Alert")
        except schemas.SchemaError as exc:
            log.warning("filter agent: skipping a message on %s: %s", TOPICS["alerts"], exc)
            continue
        out.extend((f.topic, key, value) for f in matching_filters(filters.values(), alert))
    return out


class FilterFile:
    """The filters of a file, reloaded when it changes; a bad new version is refused and the previous
    filters stay in force (the error is kept in ``error``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.filters: dict[str, Filter] = {}
        self.error: str | None = None
        self._stamp: tuple[int, int, int] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload_if_changed(self) -> bool | None:
        """Re-read the file if it changed since the last look: True when new filters are in force,
        False when the new version was refused (the old filters stay), None when unchanged."""
        stamp = self._stat()
        if stamp == self._stamp and self._stamp is not None:
            return None
        self._stamp = stamp
        try:
            new = load_filters(self.path)
        except FilterError as exc:
            self.error = str(exc)
            log.error("filters file refused, keeping the %d previous filters (%s): %s",
                      len(self.filters), ", ".join(self.filters) or "none", exc)
            return False
        self.filters, self.error = new, None
        log.warning("filters loaded from %s: %s", self.path, ", ".join(new) or "none")
        return True
