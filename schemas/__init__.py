"""The message contract: every message on every topic, defined once as an Avro schema.

The schemas live in ``schemas/avro/*.avsc`` so that a subscriber in any language can read them.
On the wire a message is Avro *single-object encoding* (Avro 1.10 spec): the two bytes
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's canonical form,
then the Avro binary body. The fingerprint tells a reader which schema (and version) wrote it, with
no schema-registry service needed.

Schemas evolve (schemas/README.md): ``schemas/avro/*.avsc`` is the current version of each, and
every released version stays in ``schemas/avro/v<N>/``. ``encode`` writes the current version;
``decode`` accepts a message written with any released version and resolves it to the current one
(Avro schema resolution: fields the writer did not have take their defaults), so retained messages
stay readable after a change.

    >>> from schemas import encode, decode
    >>> data = encode("Label", {...})
    >>> name, record = decode(data)
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = [
    "SCHEMA_NAMES",
    "SchemaError",
    "decode",
    "encode",
    "fingerprint_of",
    "released_versions",
    "schema",
    "schema_json",
    "validate",
]

_MAGIC = b"\xc3\x01"
_HEADER_LEN = 10

# Short name -> file. The short name is the record name without its namespace.
_FILES = {
    "FileEvent": "file_event.avsc",
    "SpectrumFeatures": "spectrum_features.avsc",
    "LightCurveFeatures": "lightcurve_features.avsc",
    "Prediction": "prediction.avsc",
    "Alert": "alert.avsc",
    "Rejected": "rejected.avsc",
    "ModelUpdate": "model_update.avsc",
    "Label": "label.avsc",
    "StarSector": "star_sector.avsc",
    "StarState": "star_state.avsc",
}
SCHEMA_NAMES: tuple[str, ...] = tuple(_FILES)


class SchemaError(ValueError):
    """A message does not match its schema, or bytes are not a SkyStream message."""


def _avsc(name: str, version: int | None) -> Traversable:
    try:
        file = _FILES[name]
    except KeyError:
        raise SchemaError(f"unknown message type {name!r}; known: {', '.join(SCHEMA_NAMES)}") from None
    folder = resources.files(__package__).joinpath("avro")
    return folder.joinpath(file) if version is None else folder.joinpath(f"v{version}", file)


def schema_json(name: str, version: int | None = None) -> dict[str, Any]:
    """The schema as written in its .avsc file (a fresh copy); ``version`` picks a released one."""
    if version is None or version == _current_version(name):
        return json.loads(_avsc(name, None).read_text())
    path = _avsc(name, version)
    if not path.is_file():
        raise SchemaError(f"{name} has no released version {version}; released: {released_versions(name)}")
    return json.loads(path.read_text())


@cache
def _current_version(name: str) -> int:
    return int(json.loads(_avsc(name, None).read_text())["version"])


@cache
def released_versions(name: str) -> tuple[int, ...]:
    """Every version of ``name`` a message may have been written with, oldest first (current last)."""
    folder = resources.files(__package__).joinpath("avro")
    found = {int(d.name[1:]) for d in folder.iterdir()
             if d.is_dir() and d.name[:1] == "v" and d.name[1:].isdigit() and d.joinpath(_FILES[name]).is_file()}
    return tuple(sorted(found | {_current_version(name)}))


@cache
def schema(name: str, version: int | None = None) -> dict[str, Any]:
    """The parsed fastavro schema for a message type (the current version unless ``version``)."""
    return fastavro.parse_schema(schema_json(name, version))


def _fingerprint(parsed: dict[str, Any]) -> bytes:
    # fastavro returns the CRC-64-AVRO fingerprint as hex of the 64-bit value; the spec puts it on
    # the wire little-endian.
    value = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
    return struct.pack("<Q", value)


@cache
def _fingerprint_bytes(name: str) -> bytes:
    return _fingerprint(schema(name))


def fingerprint_of(name: str, version: int | None = None) -> str:
    """Hex of the wire fingerprint, as subscribers see it in bytes 2..10 of each message."""
    return _fingerprint_bytes(name).hex() if version is None else _fingerprint(schema(name, version)).hex()


@cache
def _writers() -> dict[bytes, tuple[str, int]]:
    """Wire fingerprint -> (type name, version) for every released version of every type.

    A version that changed only docs or defaults has its predecessor's fingerprint (the canonical
    form drops them): the newest such version is kept, since either reads the same bytes.
    """
    return {_fingerprint(schema(n, v)): (n, v) for n in SCHEMA_NAMES for v in released_versions(n)}


def validate(name: str, record: Mapping[str, Any]) -> None:
    """Raise SchemaError with the offending field when ``record`` does not match ``name``."""
    try:
        fastavro.validation.validate(record, schema(name), raise_errors=True)
    except fastavro.validation.ValidationError as exc:
        raise SchemaError(f"{name} does not match its schema: {exc}") from None


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    """Serialise one message; SchemaError when it does not match its schema.

    fastavro's writer checks every value against the schema as it writes (missing fields, wrong
    types, unknown enum symbols raise); a separate ``validate`` pass would cost three times the
    write on the per-message path, so it runs only where the error message matters. One leniency
    of the writer: a float given for an int/long field is truncated, not refused.
    """
    buf = io.BytesIO()
    buf.write(_MAGIC)
    buf.write(_fingerprint_bytes(name))
    try:
        fastavro.schemaless_writer(buf, schema(name), record)
    except Exception:
        validate(name, record)  # names the offending field
        raise SchemaError(f"{name} cannot be written with its schema") from None
    return buf.getvalue()


def decode(data: bytes, expect: str | None = None) -> tuple[str, dict[str, Any]]:
    """Parse one message; return its type name and the record.

    ``expect`` names the type the caller can handle; anything else raises SchemaError, so a
    consumer never acts on a message of the wrong shape.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < _HEADER_LEN:
        raise SchemaError("not a SkyStream message: too short")
    data = bytes(data)
    if data[:2] != _MAGIC:
        raise SchemaError("not a SkyStream message: missing Avro single-object marker")
    found = _writers().get(data[2:_HEADER_LEN])
    if found is None:
        raise SchemaError(f"unknown schema fingerprint {data[2:_HEADER_LEN].hex()}")
    name, version = found
    if expect is not None and name != expect:
        raise SchemaError(f"expected a {expect} message, got {name} (v{version})")
    # An older writer is resolved to the current reader schema: the record has the current shape.
    current = version == _current_version(name)
    writer = schema(name) if current else schema(name, version)
    reader = None if current else schema(name)
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[_HEADER_LEN:]), writer, reader)
    except Exception as exc:  # fastavro raises several types on corrupt bodies
        raise SchemaError(f"corrupt {name} v{version} message: {exc}") from None
    return name, record
