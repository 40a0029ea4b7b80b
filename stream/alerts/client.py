"""Receiving alerts: the Python API behind `skystream alerts` (docs/subscribers.md).

    >>> async for alert in subscribe(settings, where=parse_filter("mine", {"kind": "lightcurve"}),
    ...                              from_beginning=True):
    ...     print(alert["object"], alert["reason"])

``subscribe`` reads one alerts topic (``skystream.alerts`` or a filter's ``skystream.alerts.<name>``),
decodes each message (any released Alert version, resolved to the current one), drops the copies
that at-least-once delivery can repeat (same ``alert_id`` and sectors: ``alert_version``; an update of an
alert over more sectors is delivered), applies an optional ad-hoc filter (the
same evaluation as the workers' filters) and yields the alert records. Without ``follow`` it stops
at the end of the topic. With ``group`` it resumes where that group stopped: offsets are committed
after the alerts before them have been handed out, so a crash repeats an alert but never loses one.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

import schemas
from stream.alerts.filters import Filter, matches
from stream.alerts.policy import alert_version
from stream.runtime.kafka import bootstrap_servers, client_kwargs, read_to_end, topic_partitions
from stream.settings import TOPICS, Settings

__all__ = ["AlertClientError", "archived_alerts", "parse_duration", "save_figure", "subscribe"]

log = logging.getLogger(__name__)

# alert_ids remembered for de-duplication: far more than the alerts of any replay window.
_DEDUP_MEMORY = 100_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class AlertClientError(RuntimeError):
    """The subscription cannot start (no such topic, no broker, no archive)."""


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '3d', '1w' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (a number and one of s, m, h, d, w, e.g. 2h or 3d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    found = await topic_partitions(consumer, [topic])
    if not found:
        hint = ""
        if topic.startswith(TOPICS["alerts"] + "."):
            hint = " (is that filter defined in the workers' SKYSTREAM_FILTERS file?)"
        raise AlertClientError(f"topic {topic} does not exist{hint}")
    return found


async def _seek(consumer: AIOKafkaConsumer, parts: list[TopicPartition], group: str | None,
                from_beginning: bool, since_ms: int | None) -> None:
    """Where each partition starts: the group's committed offset, else --since, --from-beginning or the end."""
    fresh = []
    for tp in parts:
        committed = await consumer.committed(tp) if group else None
        if committed is not None:
            consumer.seek(tp, committed)
        else:
            fresh.append(tp)
    if not fresh:
        return
    if since_ms is not None:
        # A broker may answer earlier offsets than asked (the embedded one answers the start): the
        # timestamps are checked again message by message.
        found = await consumer.offsets_for_times({tp: since_ms for tp in fresh})
        for tp in fresh:
            if found.get(tp) is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found[tp].offset)
    elif from_beginning:
        await consumer.seek_to_beginning(*fresh)
    else:
        await consumer.seek_to_end(*fresh)


async def subscribe(settings: Settings, *, topic: str = TOPICS["alerts"], where: Filter | None = None,
                    from_beginning: bool = False, since_seconds: float | None = None, follow: bool = False,
                    group: str | None = None, limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield decoded, de-duplicated alerts of ``topic`` that pass ``where``.

    Start: the group's committed offsets when ``group`` has some; else ``since_seconds`` ago, the
    beginning (``from_beginning``) or the end of the topic. Stop: after ``limit`` alerts, or at the end
    of the topic unless ``follow``. ``settings.broker`` must be set; TLS/SASL come from ``settings``.
    """
    if not settings.broker:
        raise AlertClientError("no broker configured: set SKYSTREAM_BROKER or --broker")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings.broker), group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **client_kwargs(settings))
    await consumer.start()
    done: dict[TopicPartition, int] = {}  # next offset per partition whose earlier alerts are handed out
    try:
        parts = await _partitions(consumer, topic)
        consumer.assign(parts)
        since_ms = int((time.time() - since_seconds) * 1000) if since_seconds is not None else None
        await _seek(consumer, parts, group, from_beginning, since_ms)
        seen: OrderedDict[str, None] = OrderedDict()
        count = 0
        while True:
            batches = await consumer.getmany(*parts, timeout_ms=500, max_records=500)
            for tp, messages in batches.items():
                for m in messages:
                    alert = _accept(m, since_ms, where, seen)
                    if alert is not None:
                        yield alert
                        count += 1
                    done[tp] = m.offset + 1
                    if limit is not None and count >= limit:
                        return
            if group and done:
                await consumer.commit(done)
            if not follow and not batches and await read_to_end(consumer, parts):
                return
    finally:
        try:
            if group and done:
                await consumer.commit(done)
        finally:
            await consumer.stop()


def _accept(message: Any, since_ms: int | None, where: Filter | None,
            seen: OrderedDict[str, None]) -> dict[str, Any] | None:
    if since_ms is not None and message.timestamp is not None and message.timestamp < since_ms:
        return None
    try:
        _, alert = schemas.decode(message.value, expect="Alert")
    except schemas.SchemaError as exc:
        log.warning("skipping message %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
        return None
    version = alert_version(alert)
    if version in seen:
        return None  # a repeated copy (at-least-once delivery, or a replay): same content
    seen[version] = None
    if len(seen) > _DEDUP_MEMORY:
        seen.popitem(last=False)
    if where is not None and not matches(where, alert):
        return None
    return alert


def archived_alerts(settings: Settings, where: Filter | None = None,
                    since_seconds: float | None = None) -> Iterator[Mapping[str, Any]]:
    """Alerts from the Parquet archive (stream/archive) that pass ``where``: the same filter evaluation
    over archive rows, which outlive the topic's retention."""
    try:
        from stream.archive import query
    except ImportError as exc:  # pyarrow missing from a slim install
        raise AlertClientError(f"--archive needs the alert archive (stream.archive), not available here: "
                               f"{exc}") from None
    since_ms = int((time.time() - since_seconds) * 1000) if since_seconds is not None else None
    for row in query.alerts(since_ms=since_ms, settings=settings):
        if where is None or matches(where, row):
            yield row


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "alert"


def save_figure(alert: Mapping[str, Any], directory: Path) -> str | None:
    """Write the alert's figure into ``directory``: the inline PNG, or a copy of the referenced file.
    Returns the path written, the URI when a referenced figure cannot be read here, or None."""
    name = f"{_safe(str(alert.get('object')))}-{_safe(str(alert.get('reason')))}-{alert['alert_id']}.png"
    png = alert.get("figure_png")
    if png is None and alert.get("figure_uri"):
        from stream.ingest import storage

        try:
            png = storage.read_bytes(alert["figure_uri"])
        except Exception as exc:  # missing file, S3 unreachable or denied: the URI is still useful
            log.warning("figure of %s not copied (%s): %s", alert["alert_id"][:12], exc, alert["figure_uri"])
            return alert["figure_uri"]
    if png is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(png)
    return str(path)
