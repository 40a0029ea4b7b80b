"""Dead letters: read them back from the rejected topic, and re-drive them once their cause is fixed.

A dead letter of the watch or preprocess stage names its file (``uri``): re-driving reads the file
again (size, kind, file_id, as the watcher does) and publishes a new FileEvent. A dead letter of the
score stage carries its features message (``payload``): re-driving publishes it again on its features
topic. Results are idempotent (same file and model version, same prediction_id and content), so
re-driving something twice, or something that already succeeded, repeats a message but never changes
an answer. Other dead letters (an undecodable message, an alert) have nothing to re-drive.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

import schemas
from stream.errors import Rejected
from stream.features import detect
from stream.ingest import allowlist, storage
from stream.runtime.kafka import bootstrap_servers, client_kwargs, read_to_end, topic_partitions
from stream.settings import TOPICS, Settings

__all__ = ["Redrive", "plan", "read_dead_letters", "replay"]

FILE_STAGES = ("watch", "preprocess")


@dataclass
class Redrive:
    """What re-driving one dead letter does (or, with ``topic`` None, why it cannot)."""

    letter: dict[str, Any]
    topic: str | None = None
    key: bytes = b""
    value: bytes = b""
    note: str = ""


async def read_dead_letters(settings: Settings, reason: str | None = None,
                            since_s: float | None = None) -> list[dict[str, Any]]:
    """The dead letters retained on the rejected topic, oldest first per partition, optionally only
    those with ``reason`` and written at or after ``since_s`` (unix seconds)."""
    from aiokafka import AIOKafkaConsumer

    topic = TOPICS["rejected"]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings.broker or ""), group_id=None,
                                enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    letters: list[dict[str, Any]] = []
    try:
        parts = await topic_partitions(consumer, [topic])
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        idle = 0
        while idle < 3:
            got = await consumer.getmany(timeout_ms=500, max_records=1000)
            msgs = [m for ms in got.values() for m in ms]
            idle = 0 if msgs else idle + 1
            if not msgs and await read_to_end(consumer, parts):
                break
            for m in msgs:
                try:
                    letters.append(schemas.decode(m.value, expect="Rejected")[1])
                except schemas.SchemaError:
                    continue  # not a dead letter we can read: nothing to show or re-drive
    finally:
        await consumer.stop()
    since_ms = None if since_s is None else since_s * 1000
    return [d for d in letters
            if (reason is None or d["reason"] == reason) and (since_ms is None or d["at_ms"] >= since_ms)]


def plan(letter: dict[str, Any], roots: allowlist.Roots) -> Redrive:
    """What re-driving ``letter`` would publish, reading its file again for the file stages."""
    stage, uri = letter["stage"], letter.get("uri")
    if stage in FILE_STAGES and uri:
        return _file_event(letter, uri, roots)
    if stage == "score" and letter.get("payload") and letter.get("topic"):
        return Redrive(letter, letter["topic"], (letter.get("file_id") or "").encode(), letter["payload"],
                       "features again")
    return Redrive(letter, note=f"nothing to re-drive for a dead letter of the {stage} stage")


def _file_event(letter: dict[str, Any], uri: str, roots: allowlist.Roots) -> Redrive:
    source = roots.root_of(uri)
    if source is None:
        return Redrive(letter, note="outside the configured sources (SKYSTREAM_SOURCES)")
    try:
        if uri.startswith("s3://"):
            from stream.ingest import s3

            found = s3.read_with_etag(uri, s3=s3.client())
            if found is None:
                raise Rejected("missing-object", f"no such object: {uri}")
            data, etag = found
            file_id = hashlib.sha256(f"{uri}\n{etag}".encode()).hexdigest()  # the watcher's identity
            size = len(data)
            head = data[: detect.HEAD_BYTES]
        else:
            etag = None
            size = os.stat(storage.local_path(uri)).st_size
            head = storage.read_head(uri, detect.HEAD_BYTES)
            file_id = storage.sha256_hex(uri)
        kind = detect.detect_kind(head)
    except (Rejected, OSError) as exc:
        reason = exc.reason if isinstance(exc, Rejected) else type(exc).__name__
        return Redrive(letter, note=f"still failing ({reason}): {exc}")
    event = {"file_id": file_id, "uri": uri, "kind": kind, "size_bytes": size, "source": source,
             "etag": etag, "detected_at_ms": int(time.time() * 1000)}
    return Redrive(letter, TOPICS["files"], file_id.encode(), schemas.encode("FileEvent", event), "file event again")


async def replay(settings: Settings, reason: str | None = None, since_s: float | None = None,
                 dry_run: bool = False) -> list[Redrive]:
    """Re-drive the retained dead letters (filtered by ``reason`` and ``since_s``); each input once per
    call even when it was dead-lettered several times. ``dry_run`` publishes nothing."""
    roots = allowlist.configured_roots(settings)
    seen: set[tuple[str, str]] = set()
    plans: list[Redrive] = []
    for letter in await read_dead_letters(settings, reason, since_s):
        group = "file" if letter["stage"] in FILE_STAGES else letter["stage"]
        ref = (group, letter.get("uri") or letter.get("file_id") or "")
        if ref[1] and ref in seen:
            continue
        seen.add(ref)
        plans.append(plan(letter, roots))
    todo = [p for p in plans if p.topic]
    if dry_run or not todo:
        return plans
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.broker or ""), acks="all",
                                **client_kwargs(settings))
    await producer.start()
    try:
        for p in todo:
            await producer.send(p.topic, p.value, key=p.key)
        await producer.flush()
    finally:
        await producer.stop()
    return plans
