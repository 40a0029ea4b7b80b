"""The message contract: every schema parses, round-trips, and rejects what does not match it."""

from __future__ import annotations

import json

import fastavro
import pytest

import schemas

SAMPLES = {
    "FileEvent": {"file_id": "ab" * 32, "uri": "/data/a000001.[2]", "kind": "spectrum", "size_bytes": 4000,
                  "source": "/data", "etag": None, "detected_at_ms": 1_700_000_000_000},
    "Rejected": {"stage": "preprocess", "reason": "all-nan", "error": "no finite reflectance", "error_type": "Rejected",
                 "uri": "/data/x.txt", "file_id": None, "topic": "skystream.files", "payload": b"\x00\x01",
                 "worker": "host:1", "at_ms": 1},
    "ModelUpdate": {"task": "smass", "version": "2", "action": "promote", "registry": "var/registry",
                    "sha256": "0" * 64, "at_ms": 5},
    "Label": {"task": "tess", "object": "TIC 25155310", "label": "PC", "source": "TFOPWG", "file_id": None,
              "period_days": 3.289, "at_ms": 5},
}


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_every_schema_file_is_valid_avro_with_a_version(name: str) -> None:
    raw = schemas.schema_json(name)
    assert raw["namespace"].startswith("skystream.v") and isinstance(raw["version"], int)
    fastavro.parse_schema(raw)
    assert len(schemas.fingerprint_of(name)) == 16


def test_fingerprints_are_distinct() -> None:
    assert len({schemas.fingerprint_of(n) for n in schemas.SCHEMA_NAMES}) == len(schemas.SCHEMA_NAMES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_uses_single_object_encoding(name: str) -> None:
    data = schemas.encode(name, SAMPLES[name])
    assert data[:2] == b"\xc3\x01" and data[2:10].hex() == schemas.fingerprint_of(name)
    got_name, record = schemas.decode(data)
    assert got_name == name
    assert record == SAMPLES[name]


def test_a_subscriber_with_only_the_avsc_file_can_read_a_message() -> None:
    # What a subscriber in another language does: strip the 10-byte header, read with the schema file.
    import io

    data = schemas.encode("Label", SAMPLES["Label"])
    parsed = fastavro.parse_schema(json.loads(json.dumps(schemas.schema_json("Label"))))
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), parsed, None) == SAMPLES["Label"]


def test_encode_refuses_a_record_that_does_not_match() -> None:
    bad = dict(SAMPLES["FileEvent"], kind="image")
    with pytest.raises(schemas.SchemaError, match="FileEvent"):
        schemas.encode("FileEvent", bad)
    missing = {k: v for k, v in SAMPLES["FileEvent"].items() if k != "uri"}
    with pytest.raises(schemas.SchemaError):
        schemas.encode("FileEvent", missing)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\xc3\x01" + b"\x00" * 8 + b"x", b"\xc3\x01" + b"\xff" * 20])
def test_decode_refuses_bytes_that_are_not_a_message(data: bytes) -> None:
    with pytest.raises(schemas.SchemaError):
        schemas.decode(data)


def test_decode_checks_the_expected_type() -> None:
    data = schemas.encode("Label", SAMPLES["Label"])
    with pytest.raises(schemas.SchemaError, match="expected a FileEvent"):
        schemas.decode(data, expect="FileEvent")


def test_truncated_body_is_an_error_not_a_crash() -> None:
    data = schemas.encode("FileEvent", SAMPLES["FileEvent"])
    with pytest.raises(schemas.SchemaError):
        schemas.decode(data[:20])
