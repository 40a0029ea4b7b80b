"""The archiver: result topics -> batched, immutable Parquet files, committed only once written.

It consumes skystream.predictions, .alerts and .rejected in its own consumer group
(``<app_id>-archive``), so it never takes partitions from the workers and a slow disk or S3 never
slows the stream. Rows are buffered per (type, kind or stage, day) and written as one file each when
the buffer holds ``max_rows`` rows or its oldest row is ``max_seconds`` old; the offsets are
committed after the files are durably written. A crash between the two repeats messages in a later
file (at least once), so queries de-duplicate (stream/archive/query.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError

import schemas
from stream.archive.store import BY_TOPIC, RECORD_TYPES, archive_uri, file_schema
from stream.runtime.kafka import bootstrap_servers, client_kwargs, read_to_end
from stream.settings import Settings

__all__ = ["ArchiveStats", "Archiver", "day_of", "group_id", "to_row", "write_batch"]

log = logging.getLogger(__name__)


@dataclass
class ArchiveStats:
    """What one run of the archiver did."""

    rows: int = 0
    files: list[str] = field(default_factory=list)
    undecodable: int = 0


def group_id(settings: Settings) -> str:
    """The archiver's consumer group: its own, beside the workers'."""
    return f"{settings.app_id}-archive"


def to_row(table: str, record: dict[str, Any], partition: int, offset: int, timestamp_ms: int) -> dict[str, Any]:
    """One archive row: the decoded message's fields plus where and when it was published."""
    row = dict(record)
    row.update(published_at_ms=timestamp_ms, kafka_partition=partition, kafka_offset=offset)
    return row


def day_of(timestamp_ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of a timestamp in milliseconds: the archive's day partition."""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d")


def write_batch(uri: str, table: str, part_value: str, day: str, rows: list[dict[str, Any]],
                settings: Settings) -> str:
    """Write ``rows`` as one new Parquet file of the archive at ``uri``; return its location.

    The name (Kafka partition, first offset, a short uuid) never collides, so files are only ever
    added. Locally the file is written under a hidden temporary name (datasets skip those), fsynced
    and renamed; on S3 a PUT is atomic by itself.
    """
    kind = RECORD_TYPES[table]
    data = pa.Table.from_pylist(rows, schema=file_schema(table))
    first = rows[0]
    name = f"p{first['kafka_partition']}-{first['kafka_offset']:012d}-{uuid.uuid4().hex[:8]}.parquet"
    folder = f"{table}/{kind.partition}={part_value}/day={day}"
    if uri.startswith("s3://"):
        from stream.ingest import s3

        buf = io.BytesIO()
        pq.write_table(data, buf, compression="zstd")
        target = f"{uri.rstrip('/')}/{folder}/{name}"
        # botocore retries the PUT itself; the name is unique, so a repeated PUT rewrites the same bytes.
        s3.put_bytes(target, buf.getvalue(), s3=s3.client(settings=settings))
        return target
    directory = Path(uri) / folder
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        pq.write_table(data, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    target_path = directory / name
    os.replace(tmp, target_path)
    dir_fd = os.open(directory, os.O_RDONLY)  # the rename itself must survive a crash too
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return str(target_path)


class Archiver:
    """Consume the result topics and append them to the archive (see the module docstring)."""

    def __init__(self, settings: Settings, uri: str | None = None, *, max_rows: int = 5000,
                 max_seconds: float = 30.0, group: str | None = None) -> None:
        self.settings = settings
        self.uri = uri or archive_uri(settings)
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.group = group or group_id(settings)
        self.stats = ArchiveStats()
        self._buffer: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        self._rows = 0
        self._oldest: float | None = None
        self._pending: dict[TopicPartition, int] = {}  # next offset to commit, once the buffer is written
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self, stop: asyncio.Event | None = None, *, once: bool = False,
                  drain_seconds: float = 5.0) -> ArchiveStats:
        """Archive until ``stop`` is set (then read what is already published for up to
        ``drain_seconds`` more, and flush) or, with ``once``, until the end of the topics."""
        stop = stop or asyncio.Event()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.settings.broker or ""), group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.max_rows,
            # Short group timeouts, as the workers use: a join takes a fraction of the session timeout.
            session_timeout_ms=6000, heartbeat_interval_ms=1000, rebalance_timeout_ms=6000,
            **client_kwargs(self.settings),
        )
        self._consumer = consumer
        await consumer.start()
        consumer.subscribe(list(BY_TOPIC), listener=_FlushOnRevoke(self))
        drain_until: float | None = None
        try:
            while True:
                got = await consumer.getmany(timeout_ms=500, max_records=self.max_rows)
                for tp, msgs in got.items():
                    for m in msgs:
                        self._add(tp, m)
                if self._rows >= self.max_rows or (
                        self._oldest is not None and time.monotonic() - self._oldest >= self.max_seconds):
                    await self.flush()
                if stop.is_set() and drain_until is None:
                    drain_until = time.monotonic() + drain_seconds
                at_end = not got and bool(consumer.assignment()) and await read_to_end(
                    consumer, list(consumer.assignment()))
                if (once or drain_until is not None) and at_end:
                    break
                if drain_until is not None and time.monotonic() > drain_until:
                    break
            await self.flush()
        finally:
            await consumer.stop()
            self._consumer = None
        return self.stats

    def _add(self, tp: TopicPartition, m: Any) -> None:
        kind = BY_TOPIC[tp.topic]
        self._pending[tp] = m.offset + 1
        try:
            _, record = schemas.decode(m.value, expect=kind.schema_name)
        except schemas.SchemaError as exc:
            # Not archivable; the offset still moves on, or one bad message would block the partition.
            self.stats.undecodable += 1
            log.warning("archive: skipping %s[%d]@%d: %s", tp.topic, tp.partition, m.offset, exc)
            return
        row = to_row(kind.table, record, tp.partition, m.offset, m.timestamp)
        self._buffer[(kind.table, str(record[kind.partition]), day_of(m.timestamp))].append(row)
        self._rows += 1
        if self._oldest is None:
            self._oldest = time.monotonic()

    async def flush(self) -> None:
        """Write every buffered batch, then commit the offsets they came from."""
        batches, self._buffer = self._buffer, defaultdict(list)
        pending, self._pending = self._pending, {}
        self._rows, self._oldest = 0, None
        for (table, part_value, day), rows in batches.items():
            # Parquet encoding and the upload run in a thread: the consumer keeps heartbeating.
            written = await asyncio.to_thread(write_batch, self.uri, table, part_value, day, rows, self.settings)
            self.stats.files.append(written)
            self.stats.rows += len(rows)
            log.info("archived %d %s to %s", len(rows), table, written)
        if pending and self._consumer is not None:
            try:
                await self._consumer.commit(pending)
            except CommitFailedError as exc:  # partitions moved: the new owner re-archives (duplicates)
                log.warning("archive: offsets not committed (%s); the messages will be archived again", exc)


class _FlushOnRevoke(ConsumerRebalanceListener):
    """Write and commit before partitions move to another archiver, so it does not repeat them."""

    def __init__(self, archiver: Archiver) -> None:
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Write and commit what the archiver holds before the partitions move."""
        await self.archiver.flush()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing to do: the archiver starts from the group's committed offsets."""
        pass
