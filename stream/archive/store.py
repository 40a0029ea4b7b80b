"""Where the archive lives, how it is laid out, and its column types (derived from the Avro schemas).

Layout, under a directory or ``s3://bucket/prefix``::

    predictions/kind=<spectrum|lightcurve>/day=<YYYY-MM-DD>/<partition>-<first offset>-<uuid>.parquet
    alerts/kind=<kind>/day=<YYYY-MM-DD>/...
    rejected/stage=<stage>/day=<YYYY-MM-DD>/...

``day`` is the UTC day the message was published (its Kafka timestamp). Dead letters have no kind;
they are partitioned by the stage that refused them. Files are immutable; a new schema version only
adds columns, which older files read as null (the dataset is opened with the current schema).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

import schemas
from stream.settings import TOPICS, Settings

__all__ = [
    "BY_TOPIC",
    "DAY",
    "RECORD_TYPES",
    "RecordType",
    "archive_uri",
    "dataset_schema",
    "file_schema",
    "open_location",
    "record_schema",
    "s3_filesystem",
]


@dataclass(frozen=True)
class RecordType:
    """One archived message type: its folder, topic, schema and partition column."""

    table: str
    topic: str
    schema_name: str
    partition: str
    key: tuple[str, ...]  # what identifies one record: duplicates (redeliveries, replays) share it


RECORD_TYPES = {
    "predictions": RecordType("predictions", TOPICS["predictions"], "Prediction", "kind", ("prediction_id",)),
    "alerts": RecordType("alerts", TOPICS["alerts"], "Alert", "kind", ("alert_id",)),
    # A dead letter may have no file_id (a file the watcher could not read): the URI tells those apart.
    "rejected": RecordType("rejected", TOPICS["rejected"], "Rejected", "stage", ("file_id", "uri", "stage", "reason")),
}
BY_TOPIC = {r.topic: r for r in RECORD_TYPES.values()}

# Columns the archive adds to each message's fields: where and when the message was published.
KAFKA_COLUMNS = [pa.field("published_at_ms", pa.int64()), pa.field("kafka_partition", pa.int32()),
                 pa.field("kafka_offset", pa.int64())]
DAY = pa.field("day", pa.string())


def archive_uri(settings: Settings) -> str:
    """``SKYSTREAM_ARCHIVE``, else ``<state_dir>/archive``."""
    return settings.archive or str(Path(settings.state_dir) / "archive")


_PRIMITIVE = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "float": pa.float32(),
              "double": pa.float64(), "boolean": pa.bool_(), "bytes": pa.binary()}


def _arrow_type(avro: Any) -> pa.DataType:
    """The Arrow type of an Avro type: maps stay maps, arrays lists, records structs (queryable as
    such by pyarrow or DuckDB); enums become strings; ``["null", T]`` becomes a nullable T."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise TypeError(f"the archive cannot store the union {avro}")
        return _arrow_type(branches[0])
    if isinstance(avro, str):
        return _PRIMITIVE[avro]
    kind = avro["type"]
    if kind == "enum":
        return pa.string()
    if kind == "map":
        return pa.map_(pa.string(), _arrow_type(avro["values"]))
    if kind == "array":
        return pa.list_(_arrow_type(avro["items"]))
    if kind == "record":
        return pa.struct([pa.field(f["name"], _arrow_type(f["type"])) for f in avro["fields"]])
    return _arrow_type(kind)  # {"type": "string"} and the like


@cache
def record_schema(table: str) -> pa.Schema:
    """The columns of one archived type as the current schema has them: every message field, then the
    Kafka columns. The partition column (kind or stage) is among the fields; files omit it (the
    path holds it) and the dataset adds it back."""
    fields = schemas.schema_json(RECORD_TYPES[table].schema_name)["fields"]
    return pa.schema([pa.field(f["name"], _arrow_type(f["type"])) for f in fields] + KAFKA_COLUMNS)


def file_schema(table: str) -> pa.Schema:
    """The columns written into a file: the record's, without its partition column."""
    full = record_schema(table)
    return full.remove(full.get_field_index(RECORD_TYPES[table].partition))


def dataset_schema(table: str) -> pa.Schema:
    """What a query sees: the record's columns plus the ``day`` partition."""
    return record_schema(table).append(DAY)


def s3_filesystem(settings: Settings) -> Any:
    """pyarrow's S3 filesystem configured like SkyStream's boto3 clients: ``SKYSTREAM_S3_ENDPOINT``,
    the AWS credential chain (resolved by boto3, so profiles and roles work too), the region."""
    import boto3
    from pyarrow import fs

    from stream.ingest.s3 import DEFAULT_REGION, _unsigned_setting, credentials_available

    session = boto3.session.Session()
    kwargs: dict[str, Any] = {"region": session.region_name or DEFAULT_REGION,
                              "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=settings.aws_max_attempts)}
    unsigned = _unsigned_setting(settings)
    if unsigned or (unsigned is None and not credentials_available()):
        kwargs["anonymous"] = True
    else:
        creds = session.get_credentials().get_frozen_credentials()
        kwargs.update(access_key=creds.access_key, secret_key=creds.secret_key, session_token=creds.token)
    if settings.s3_endpoint:
        scheme, _, host = settings.s3_endpoint.rpartition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    return fs.S3FileSystem(**kwargs)


def open_location(uri: str, settings: Settings) -> tuple[Any, str]:
    """(pyarrow filesystem, base path in it) for an archive URI: a directory or s3://bucket/prefix."""
    from pyarrow import fs

    if uri.startswith("s3://"):
        return s3_filesystem(settings), uri.removeprefix("s3://").rstrip("/")
    return fs.LocalFileSystem(), str(Path(uri).resolve())
