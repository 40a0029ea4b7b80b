"""The API's request parameters, defined once: the OpenAPI description (stream/api/openapi.py) is built from
these definitions and the handlers check every request against the same ones, so that the two cannot drift.

A ``Param`` holds what JSON Schema can say of one parameter (type, bounds, pattern, length); its ``check``
applies exactly that to the text of a request. Patterns use explicit ASCII classes (no ``\\d``, ``\\w``,
``\\s``) and are matched whole, so that they mean the same in Python and in the ECMA dialect of JSON Schema,
and each one is tight enough that whatever it admits the handlers can use (tests/test_api.py checks that).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALERTS_QUERY", "ALERT_ID", "BadRequest", "MAX_LIMIT", "OBJECT_ID", "Param", "SCORE_QUERY", "check_query"]

MAX_LIMIT = 1000


class BadRequest(ValueError):
    """A request parameter that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Param:
    """One query or path parameter: its JSON Schema and the check of a request's text against it."""

    name: str
    where: str  # "query" or "path"
    description: str
    type: str = "string"  # "string", "integer" or "number"
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None  # matched against the whole value
    max_length: int | None = None
    many: bool = False  # repeated (?kind=a&kind=b) or comma-separated (?kind=a,b): an array of strings
    max_items: int | None = None  # of a ``many``
    hint: str = ""  # what a client is told on a bad value
    label: str = ""  # how that message names the parameter (default: its name)
    _compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_compiled", re.compile(self.pattern))

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON Schema (OpenAPI 3.0)."""
        schema: dict[str, Any] = {"type": self.type}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$"
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.many:
            return {"type": "array", "items": schema, **({"maxItems": self.max_items} if self.max_items else {})}
        return schema

    def spec(self) -> dict[str, Any]:
        """The parameter's OpenAPI description."""
        out = {"name": self.name, "in": self.where, "required": self.where == "path",
               "description": self.description, "schema": self.schema()}
        if self.many:
            out.update(style="form", explode=True)
        return out

    def _fail(self, text: str) -> BadRequest:
        return BadRequest(f"{self.label or self.name}: expected {self.hint or self.description}, got {text[:100]!r}")

    def check(self, text: str) -> str | int | float:
        """``text`` as its type when the schema admits it, else BadRequest naming the parameter."""
        value: str | int | float = text
        if self.type == "integer":
            if not re.fullmatch(r"-?[0-9]{1,18}", text):
                raise self._fail(text)
            value = int(text)
        elif self.type == "number":
            if not re.fullmatch(r"-?(?:0|[1-9][0-9]{0,400})(?:\.[0-9]{1,400})?(?:[eE][+-]?[0-9]{1,3})?", text):
                raise self._fail(text)
            value = float(text)  # finite: the bounds below are
        if isinstance(value, int | float) and (self.minimum is not None and value < self.minimum
                                               or self.maximum is not None and value > self.maximum):
            raise self._fail(text)
        if self.max_length is not None and len(text) > self.max_length:
            raise self._fail(text)
        if self._compiled is not None and not self._compiled.fullmatch(text):
            raise self._fail(text)
        return value


def check_query(params: tuple[Param, ...], query: Mapping[str, Any]) -> dict[str, Any]:
    """The query's values of ``params`` (as their types, a list for ``many``), each checked; others are ignored.
    An absent parameter is left out; an empty one is checked like any value (and so refused unless admitted)."""
    out: dict[str, Any] = {}
    for p in params:
        raw = query.getall(p.name, []) if hasattr(query, "getall") else [query[p.name]] if p.name in query else []
        if not raw:
            continue
        if p.many:
            if p.max_items is not None and len(raw) > p.max_items:
                raise BadRequest(f"{p.label or p.name}: at most {p.max_items} values, got {len(raw)}")
            out[p.name] = [p.check(str(v)) for v in raw]
        else:
            out[p.name] = p.check(str(raw[0]))
    return out


# -- the definitions ------------------------------------------------------------------------------------
# Every parameter is bounded in length, so that no request the description admits is longer than what
# aiohttp reads of a request line (8190 bytes), even with each character percent-encoded.
# An object as the archive names them: a TIC id, an asteroid number or designation, a SMASS file name.
# Not starting with a dot, so that no id is a '.' or '..' path segment.
_OBJECT_CHARS = r"A-Za-z0-9_ +:()\[\]"
OBJECT_ID = Param("id", "path", "a TIC id (TIC 25155310 or 25155310), an asteroid number (4) or designation "
                  "(1996 UK): letters, digits, spaces and _+:()[]-. (not first), at most 100 characters",
                  pattern=f"[{_OBJECT_CHARS}-][{_OBJECT_CHARS}.-]{{0,99}}",
                  hint="a TIC id or an asteroid number or designation", label="object")
ALERT_ID = Param("alert_id", "path", "an alert's id", pattern="[0-9a-f]{64}", hint="64 lowercase hex digits",
                 label="alert id")

# cone=ra,dec,radius_deg, each in its range: 0 <= ra < 360, -90 <= dec <= 90, 0 < radius_deg <= 180.
_FRACTION = r"(?:\.[0-9]{1,9})?"
_RA = rf"(?:[0-9]|[1-9][0-9]|[12][0-9]{{2}}|3[0-5][0-9]){_FRACTION}"
_DEC = rf"-?(?:(?:[0-9]|[1-8][0-9]){_FRACTION}|90(?:\.0{{1,9}})?)"
_RADIUS = rf"(?:0\.[0-9]{{0,8}}[1-9][0-9]{{0,8}}|(?:[1-9]|[1-9][0-9]|1[0-7][0-9]){_FRACTION}|180(?:\.0{{1,9}})?)"
_CONE = f"{_RA} *, *{_DEC} *, *{_RADIUS}"
# since=: a duration back from now, or a real calendar time (years 1900-2999) with its zone.
_DURATION = r"[0-9]{1,9}(?:\.[0-9]{1,6})?[smhdw]"
_YEAR = r"(?:19|2[0-9])[0-9]{2}"
_LEAP_YEAR = r"(?:(?:19|2[0-9])(?:0[48]|[2468][048]|[13579][26])|2000|2400|2800)"
_DATE = (rf"(?:{_YEAR}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
         rf"|(?:0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)")
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_ZONE = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_SINCE = f"{_DURATION}|{_DATE}T{_TIME}{_ZONE}"

_WORDS = r"[A-Za-z0-9_,-]{0,60}"
ALERTS_QUERY = (
    Param("kind", "query", "lightcurve or spectrum (repeat or comma-separate for several)", pattern=_WORDS,
          many=True, max_items=5, hint="kinds: letters, digits, _ and -, separated by commas"),
    Param("reason", "query",
          "planet-candidate, known-planet-candidate, multi-sector-candidate, rare-composition, novel-spectrum "
          "(several: as kind)",
          pattern=_WORDS, many=True, max_items=5, hint="reasons: letters, digits, _ and -, separated by commas"),
    Param("min_score", "query", "only alerts with score >= this (scores are probabilities)", type="number",
          minimum=0, maximum=1, hint="a number from 0 to 1"),
    Param("object", "query", "only this object (several: as kind)", pattern=rf"[{_OBJECT_CHARS},.-]{{0,200}}",
          many=True, max_items=5, hint="objects (TIC ids, asteroid numbers or designations), separated by commas"),
    Param("cone", "query", "ra,dec,radius_deg in ICRS degrees (0 <= ra < 360, -90 <= dec <= 90, "
          "0 < radius_deg <= 180)", pattern=_CONE, hint="ra,dec,radius_deg in degrees, each in its range"),
    Param("since", "query", "a duration back from now (30m, 2h, 3d, 1w) or an ISO 8601 time with its zone "
          "(2026-11-22T08:00:00Z)", pattern=_SINCE,
          hint="a duration (30m, 2h, 3d) or an ISO 8601 time with its zone (2026-11-22T08:00:00Z)"),
    Param("limit", "query", f"at most this many (1-{MAX_LIMIT}, default 100)", type="integer", minimum=1,
          maximum=MAX_LIMIT, hint=f"a whole number from 1 to {MAX_LIMIT}"),
)
SCORE_QUERY = (
    Param("name", "query", "the file's name when the body is raw bytes (default: upload); only its last "
          "path segment is kept", max_length=200),
)
