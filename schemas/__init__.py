"""The message contract: every message on every topic, defined once as an Avro schema.

The schemas live in ``schemas/avro/*.avsc`` so that a subscriber in any language can read them.
On the wire a message is Avro *single-object encoding* (Avro 1.10 spec): the two bytes
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's canonical form,
then the Avro binary body. The fingerprint tells a reader which schema (and version) wrote it, with
no schema-registry service needed.

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
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = [
    "SCHEMA_NAMES",
    "SchemaError",
    "decode",
    "encode",
    "fingerprint_of",
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
}
SCHEMA_NAMES: tuple[str, ...] = tuple(_FILES)


class SchemaError(ValueError):
    """A message does not match its schema, or bytes are not a SkyStream message."""


def schema_json(name: str) -> dict[str, Any]:
    """The schema as written in its .avsc file (a fresh copy)."""
    try:
        text = resources.files(__package__).joinpath("avro", _FILES[name]).read_text()
    except KeyError:
        raise SchemaError(f"unknown message type {name!r}; known: {', '.join(SCHEMA_NAMES)}") from None
    return json.loads(text)


@cache
def schema(name: str) -> dict[str, Any]:
    """The parsed fastavro schema for a message type."""
    return fastavro.parse_schema(schema_json(name))


@cache
def _fingerprint_bytes(name: str) -> bytes:
    # fastavro returns the CRC-64-AVRO fingerprint as hex of the 64-bit value; the spec puts it on
    # the wire little-endian.
    value = int(fingerprint(to_parsing_canonical_form(schema(name)), "CRC-64-AVRO"), 16)
    return struct.pack("<Q", value)


def fingerprint_of(name: str) -> str:
    """Hex of the wire fingerprint, as subscribers see it in bytes 2..10 of each message."""
    return _fingerprint_bytes(name).hex()


@cache
def _by_fingerprint() -> dict[bytes, str]:
    return {_fingerprint_bytes(n): n for n in SCHEMA_NAMES}


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
    name = _by_fingerprint().get(data[2:_HEADER_LEN])
    if name is None:
        raise SchemaError(f"unknown schema fingerprint {data[2:_HEADER_LEN].hex()}")
    if expect is not None and name != expect:
        raise SchemaError(f"expected a {expect} message, got {name}")
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[_HEADER_LEN:]), schema(name), None)
    except Exception as exc:  # fastavro raises several types on corrupt bodies
        raise SchemaError(f"corrupt {name} message: {exc}") from None
    return name, record
