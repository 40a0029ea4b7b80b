"""The worker's per-event logic, as plain functions the Faust agents (stream/worker/app.py) call.

Each takes a sink (stream/scoring/publish.py) rather than Faust topics, so it runs without a broker.
Bad input never stops a worker: any failure becomes one dead-letter message (stage, reason, input
reference) and the agent goes on with the next event.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import schemas
from stream import kinds
from stream.errors import Rejected, Unavailable
from stream.features import detect
from stream.ingest import allowlist, storage
from stream.runtime import bounded
from stream.runtime.metrics import (
    ASSIGNED_PARTITIONS,
    CONSUMER_LAG,
    MESSAGES_PROCESSED,
    PAUSED,
    RETRIES,
    STAGE_LATENCY,
)
from stream.runtime.retry import Backoff
from stream.scoring.publish import Sink, send_dead_letter
from stream.settings import TOPICS, Settings
from stream.worker.stall import StallWatch

__all__ = [
    "PreprocessPool",
    "export_lag",
    "extract_from_uri",
    "preprocess_event",
    "preprocess_events",
    "start_series",
    "until_available",
]

log = logging.getLogger(__name__)

# Events are taken in batches: Faust's per-iteration cost is paid once per batch.
PREPROCESS_BATCH = 64
PREPROCESS_WITHIN_SECONDS = 0.1
SCORE_BATCH = 256
SCORE_WITHIN_SECONDS = 0.1

Extraction = tuple[str, dict[str, Any]]  # (features message type, record)
T = TypeVar("T")

# Backoff while storage, the registry or a model is unavailable (seconds): 1, 2, 4, ... 30, 30, ...
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


def extract_from_uri(kind: str, uri: str, file_id: str, detected_at_ms: int,
                     max_bytes: int | None = None, roots: allowlist.Roots | None = None) -> Extraction:
    """Read and preprocess one file (module level so a child process can run it).

    Only URIs under the configured sources are read (a forged event is ``outside-sources``). With
    ``max_bytes``, at most one byte more is read: a larger file is Rejected('too-large') unread
    (whatever size its event claims: the file may have grown, or the event lie). ``roots`` default to
    the settings' sources (the pool passes its own: a child must not depend on its environment).
    """
    allowlist.check_uri(uri, roots)
    try:
        data = storage.read_bytes(uri) if max_bytes is None else storage.read_bytes(uri, limit=max_bytes + 1)
    except ConnectionError as exc:
        # Storage stayed unreachable through the client's retries: not the file's fault. The agent
        # pauses and retries this event (see ``until_available``) rather than dead-lettering it.
        raise Unavailable("storage-unavailable", f"{uri}: {exc}") from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise Rejected("too-large", f"more than the limit for a {kind} ({max_bytes} bytes)")
    return detect.extract(kind, data, uri=uri, file_id=file_id, detected_at_ms=detected_at_ms)


Job = tuple[str, str, int]  # (uri, file_id, detected_at_ms)
Extract = Callable[[str, list[Job]], Awaitable[list[Any]]]  # (kind, jobs) -> Extraction or exception per job


class PreprocessPool:
    """One child process per kind preprocesses its files, each within the kind's limits (stream/kinds.py,
    Settings): read at most max_bytes (too-large), answer within max_seconds (timeout: the child is
    killed and replaced), allocate at most max_memory (out-of-memory). The event loop keeps
    heartbeating meanwhile, and a file that kills its child costs only its own dead letter."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        bounded.preload([__name__, "stream.features.spectra", "stream.features.transits"])
        roots = allowlist.configured_roots(settings)
        self._children = {
            name: bounded.BoundedChild(
                f"preprocess-{name}",
                functools.partial(extract_from_uri, name, max_bytes=lim.max_bytes, roots=roots),
                bounded.Bounds(seconds=lim.max_seconds, memory_bytes=lim.max_memory_bytes),
            )
            for name, lim in kinds.limits(settings).items()
        }

    async def extract(self, kind: str, jobs: list[Job]) -> list[Any]:
        """Each job's Extraction, or the exception it ended with, in order (one round trip per call)."""
        return await self._children[kinds.by_name(kind).name].run([(uri, fid, ms) for uri, fid, ms in jobs])

    def start(self) -> None:
        """Start the forkserver the children fork from ahead of the first batch (the children themselves
        start on their first batch, in the event loop: forking from a running forkserver takes ms)."""
        bounded.start_forkserver()

    def child_pid(self, kind: str) -> int | None:
        """The process id of the kind's current child (None when none runs)."""
        return self._children[kind].pid

    def stop(self) -> None:
        """Kill the children."""
        for child in self._children.values():
            child.stop()


async def preprocess_events(raws: list[bytes], sink: Sink, extract: Extract) -> None:
    """File events -> each one's features message on its kind's features topic, or one dead letter.

    The events of a kind go to ``extract`` (``PreprocessPool.extract`` in a worker) in one call.
    """
    t0 = time.perf_counter()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for raw in raws:
        try:
            _, fe = schemas.decode(raw, expect="FileEvent")
        except schemas.SchemaError as exc:
            await send_dead_letter(sink, "decode", Rejected("bad-message", str(exc)), topic=TOPICS["files"],
                                   payload=raw)
            MESSAGES_PROCESSED.labels(agent="preprocess", outcome="rejected").inc()
            continue
        by_kind.setdefault(fe["kind"], []).append(fe)
    for name, events in by_kind.items():
        try:
            kind = kinds.by_name(name)
            results = await extract(name, [(fe["uri"], fe["file_id"], fe["detected_at_ms"]) for fe in events])
        except Unavailable:
            raise  # not the inputs' fault: the caller retries the batch
        except Exception as exc:
            results = [exc] * len(events)
        unavailable = next((r for r in results if isinstance(r, Unavailable)), None)
        if unavailable is not None:
            raise unavailable  # e.g. storage down: retry the batch (repeats are idempotent)
        for fe, result in zip(events, results, strict=True):
            try:
                if isinstance(result, BaseException):
                    raise result
                features_type, record = result
                await sink.send(kind.features_topic, fe["file_id"].encode(), schemas.encode(features_type, record))
                outcome = "ok"
            except Exception as exc:
                if not isinstance(exc, Rejected):
                    log.error("preprocess failed for %s: %s", fe["uri"], exc)
                await send_dead_letter(sink, "preprocess", exc, uri=fe["uri"], file_id=fe["file_id"],
                                       topic=TOPICS["files"])
                outcome = "rejected"
            MESSAGES_PROCESSED.labels(agent="preprocess", outcome=outcome).inc()
    if raws:
        per_event = (time.perf_counter() - t0) / len(raws)
        for _ in raws:
            STAGE_LATENCY.labels(stage="preprocess").observe(per_event)


async def preprocess_event(raw: bytes, sink: Sink, extract: Extract) -> None:
    """One file event -> its features message, or one dead letter (``preprocess_events`` of one)."""
    await preprocess_events([raw], sink, extract)


async def until_available(stage: str, attempt: Callable[[], Awaitable[T]], *, first_delay: float = RETRY_FIRST_SECONDS,
                          max_delay: float = RETRY_MAX_SECONDS) -> T:
    """``attempt()`` until it does not raise Unavailable, sleeping between tries (exponential, capped).

    The sleep is an ``asyncio.sleep``: the event loop keeps heartbeating the consumer group meanwhile,
    and the caller's batch stays uncommitted until the attempt succeeds.
    """
    backoff = Backoff(first_delay, max_delay)
    paused = False
    try:
        while True:
            try:
                return await attempt()
            except Unavailable as exc:
                RETRIES.labels(stage=stage, reason=exc.reason).inc()
                if not paused:
                    paused = True
                    PAUSED.labels(stage=stage).set(1)
                log.warning("%s paused (%s): %s; retrying in %.1f s", stage, exc.reason, exc, backoff.delay)
                await backoff.wait()
    finally:
        if paused:
            PAUSED.labels(stage=stage).set(0)
            log.warning("%s resumed", stage)


def start_series() -> None:
    """Create the message counters at 0: rate()/increase() cannot see a counter's first sample."""
    for agent in ("preprocess", "score", "stars"):
        for outcome in ("ok", "rejected"):
            MESSAGES_PROCESSED.labels(agent=agent, outcome=outcome)
        PAUSED.labels(stage=agent).set(0)


async def export_lag(consumer: Any, exported: set[tuple[str, str]], topics: Iterable[str] = TOPICS.values(),
                     watch: StallWatch | None = None) -> list[Any]:
    """Set the assigned-partitions and consumer-lag gauges from a consumer's assignment; return the
    partitions ``watch`` finds stalled (stream/worker/stall.py).

    ``exported`` holds the (topic, partition) lag series this worker has set; series of partitions
    it lost are removed (not left frozen) and ``exported`` is updated in place.
    """
    stalled = []
    assignment = consumer.assignment()
    per_topic: dict[str, int] = {name: 0 for name in topics}
    for tp in assignment:
        per_topic[tp.topic] = per_topic.get(tp.topic, 0) + 1
    for name, n in per_topic.items():
        ASSIGNED_PARTITIONS.labels(topic=name).set(n)
    current = {(tp.topic, str(tp.partition)) for tp in assignment}
    for labels in exported - current:
        CONSUMER_LAG.remove(*labels)
    exported.intersection_update(current)
    for tp in assignment:
        try:
            position = await consumer.position(tp)
            highwater = consumer.highwater(tp)  # from fetch responses: right even where ListOffsets is stale
        except Exception:
            continue
        if position is not None and highwater is not None:
            CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, highwater - position))
            exported.add((tp.topic, str(tp.partition)))
        # Faust keeps the committed offsets it knows in memory and offers no public accessor.
        committed = getattr(consumer, "_committed_offset", {}).get(tp)
        if watch is not None and watch.stalled(tp, committed, highwater):
            stalled.append(tp)
    return stalled
