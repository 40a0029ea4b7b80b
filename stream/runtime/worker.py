"""The worker's per-event logic, as plain functions the Faust agents (stream/runtime/app.py) call.

Each takes a sink (stream/scoring/publish.py) rather than Faust topics, so it runs without a broker.
Bad input never stops a worker: any failure becomes one dead-letter message (stage, reason, input
reference) and the agent goes on with the next event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import schemas
from stream import kinds
from stream.errors import Rejected, Unavailable
from stream.features import detect
from stream.ingest import allowlist, storage
from stream.runtime.metrics import ASSIGNED_PARTITIONS, CONSUMER_LAG, MESSAGES_PROCESSED, PAUSED, RETRIES, STAGE_LATENCY
from stream.scoring.publish import Sink, send_dead_letter
from stream.settings import TOPICS

log = logging.getLogger(__name__)

# Events are taken in batches: Faust's per-iteration cost is paid once per batch.
PREPROCESS_BATCH = 64
PREPROCESS_WITHIN_SECONDS = 0.01
SCORE_BATCH = 256
SCORE_WITHIN_SECONDS = 0.02

Extraction = tuple[str, dict[str, Any]]  # (features message type, record)
T = TypeVar("T")

# Backoff while storage, the registry or a model is unavailable (seconds): 1, 2, 4, ... 30, 30, ...
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


def extract_from_uri(kind: str, uri: str, file_id: str, detected_at_ms: int) -> Extraction:
    """Read and preprocess one file (module level so a process pool can run it).

    Only URIs under the configured sources are read (a forged event is ``outside-sources``).
    """
    allowlist.check_uri(uri)
    try:
        data = storage.read_bytes(uri)
    except ConnectionError as exc:
        # Storage stayed unreachable through the client's retries: not the file's fault. The agent
        # pauses and retries this event (see ``until_available``) rather than dead-lettering it.
        raise Unavailable("storage-unavailable", f"{uri}: {exc}") from exc
    return detect.extract(kind, data, uri=uri, file_id=file_id, detected_at_ms=detected_at_ms)


class PreprocessPool:
    """One child process for the slow kinds' preprocessing (light-curve period searches take seconds
    of CPU): the event loop keeps heartbeating and spectra keep flowing meanwhile."""

    def __init__(self) -> None:
        self._executor = ProcessPoolExecutor(max_workers=1)

    async def extract(self, kind: str, uri: str, file_id: str, detected_at_ms: int) -> Extraction:
        """``extract_from_uri`` in the child; Rejected('preprocess-crashed') when the child dies on it."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, extract_from_uri, kind, uri, file_id, detected_at_ms)
        except BrokenProcessPool:
            # The child died (out of memory, a crash in a C library): start a new one for the next
            # file, and dead-letter this one rather than retry something that may kill it again.
            self._executor = ProcessPoolExecutor(max_workers=1)
            raise Rejected("preprocess-crashed", "the preprocessing process died on this file") from None


async def preprocess_event(raw: bytes, sink: Sink,
                           extract_slow: Callable[[str, str, str, int], Awaitable[Extraction]]) -> None:
    """One file event -> its features message on the kind's features topic, or one dead letter.

    ``extract_slow`` preprocesses the slow kinds (``PreprocessPool.extract`` in a worker); the others
    run inline, as they take well under a millisecond.
    """
    t0 = time.perf_counter()
    try:
        _, fe = schemas.decode(raw, expect="FileEvent")
    except schemas.SchemaError as exc:
        await send_dead_letter(sink, "decode", Rejected("bad-message", str(exc)), topic=TOPICS["files"], payload=raw)
        MESSAGES_PROCESSED.labels(agent="preprocess", outcome="rejected").inc()
        return
    args = (fe["kind"], fe["uri"], fe["file_id"], fe["detected_at_ms"])
    try:
        kind = kinds.by_name(fe["kind"])
        if kind.slow:
            name, record = await extract_slow(*args)
        elif fe["uri"].startswith("s3://"):
            # A network read (retried by the S3 client for up to minutes when S3 is down) must not block
            # the event loop: the consumer's heartbeats run on it.
            name, record = await asyncio.to_thread(extract_from_uri, *args)
        else:
            name, record = extract_from_uri(*args)
        await sink.send(kind.features_topic, fe["file_id"].encode(), schemas.encode(name, record))
        outcome = "ok"
    except Unavailable:
        raise  # not the input's fault: the caller retries this event
    except Exception as exc:
        if not isinstance(exc, Rejected):
            log.exception("preprocess failed for %s", fe["uri"])
        await send_dead_letter(sink, "preprocess", exc, uri=fe["uri"], file_id=fe["file_id"], topic=TOPICS["files"])
        outcome = "rejected"
    MESSAGES_PROCESSED.labels(agent="preprocess", outcome=outcome).inc()
    STAGE_LATENCY.labels(stage="preprocess").observe(time.perf_counter() - t0)


async def until_available(stage: str, attempt: Callable[[], Awaitable[T]], *, first_delay: float = RETRY_FIRST_SECONDS,
                          max_delay: float = RETRY_MAX_SECONDS) -> T:
    """``attempt()`` until it does not raise Unavailable, sleeping between tries (exponential, capped).

    The sleep is an ``asyncio.sleep``: the event loop keeps heartbeating the consumer group meanwhile,
    and the caller's batch stays uncommitted until the attempt succeeds.
    """
    delay = first_delay
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
                log.warning("%s paused (%s): %s; retrying in %.1f s", stage, exc.reason, exc, delay)
                await asyncio.sleep(delay)
                delay = min(max_delay, delay * 2)
    finally:
        if paused:
            PAUSED.labels(stage=stage).set(0)
            log.warning("%s resumed", stage)


def start_series() -> None:
    """Create the message counters at 0: rate()/increase() cannot see a counter's first sample."""
    for agent in ("preprocess", "score"):
        for outcome in ("ok", "rejected"):
            MESSAGES_PROCESSED.labels(agent=agent, outcome=outcome)
        PAUSED.labels(stage=agent).set(0)


async def export_lag(consumer: Any, exported: set[tuple[str, str]], topics: Iterable[str] = TOPICS.values()) -> None:
    """Set the assigned-partitions and consumer-lag gauges from a consumer's assignment.

    ``exported`` holds the (topic, partition) lag series this worker has set; series of partitions
    it lost are removed (not left frozen) and ``exported`` is updated in place.
    """
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
