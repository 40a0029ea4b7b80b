"""The Faust workers: preprocess (file event -> features) and score (features -> prediction -> alert).

Delivery is at-least-once: Faust commits an offset only after the agent has finished the event, so
a worker that stops mid-stream leaves its uncommitted events to the next owner of the partition.
Results are idempotent: every message about a file is keyed by its file_id, and the same file and
model version always give the same prediction_id and content.

Bad input never stops a worker: any failure becomes one dead-letter message (stage, reason, input
reference) on the rejected topic, and the agent goes on with the next event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import faust

import schemas
from stream.alerts.policy import alerts_for
from stream.errors import Rejected
from stream.features import detect as features
from stream.ingest import storage
from stream.models import hot_swap as model_updates
from stream.models.registry import open_registry
from stream.runtime.deadletters import rejected_record
from stream.runtime.kafka import faust_broker_url
from stream.runtime.metrics import (
    ALERTS,
    ASSIGNED_PARTITIONS,
    CONSUMER_LAG,
    END_TO_END_LATENCY,
    MESSAGES_PROCESSED,
    STAGE_LATENCY,
)
from stream.scoring.scorer import TASK_OF_KIND, Scorer
from stream.settings import TOPICS, Settings

log = logging.getLogger(__name__)

PREPROCESS_BATCH = 64
PREPROCESS_WITHIN_SECONDS = 0.01
SCORE_BATCH = 256
SCORE_WITHIN_SECONDS = 0.02


def _extract_from_uri(kind: str, uri: str, file_id: str, detected_at_ms: int) -> tuple[str, dict[str, Any]]:
    """Read and preprocess one file (module level so a process pool can run it)."""
    try:
        data = storage.read_bytes(uri)
    except ConnectionError as exc:
        # Storage stayed unreachable through the client's retries. The dead letter keeps the
        # reference, so the file can be replayed once storage is back; the stream goes on.
        raise Rejected("storage-unavailable", f"{uri}: {exc}") from exc
    return features.extract(kind, data, uri=uri, file_id=file_id, detected_at_ms=detected_at_ms)


def create_app(settings: Settings, broker: str, worker_name: str = "worker", loglevel: str = "warning") -> faust.App:
    datadir = settings.state_dir / "faust" / worker_name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=faust_broker_url(broker),
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # Short group timeouts: with the defaults a worker needs 30-110 s to join a group on the
        # embedded broker (docs/embedded-broker.md); these keep rebalances to seconds on any Kafka.
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        producer_linger_ms=2,
    )
    topics = {k: app.topic(v, key_type=bytes, value_type=bytes, internal=False) for k, v in TOPICS.items()}
    scorer = Scorer(open_registry(settings.registry), toi=_toi(settings))
    # Light-curve period searches take seconds of CPU: run them in a process so the event loop keeps
    # heartbeating and spectra keep flowing. Spectra take well under a millisecond and run inline.
    pools = [ProcessPoolExecutor(max_workers=1)]

    async def in_pool(*args: Any) -> tuple[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pools[0], _extract_from_uri, *args)
        except BrokenProcessPool:
            # The child died (out of memory, a crash in a C library): start a new one for the next
            # file, and dead-letter this one rather than retry something that may kill it again.
            pools[0] = ProcessPoolExecutor(max_workers=1)
            raise Rejected("preprocess-crashed", "the preprocessing process died on this file") from None

    async def dead_letter(stage: str, exc: BaseException, **ref: Any) -> None:
        record = rejected_record(stage, exc, **ref)
        key = (ref.get("file_id") or ref.get("uri") or "").encode()
        await topics["rejected"].send(key=key, value=schemas.encode("Rejected", record))

    async def preprocess_one(raw: bytes) -> None:
        t0 = time.perf_counter()
        try:
            _, fe = schemas.decode(raw, expect="FileEvent")
        except schemas.SchemaError as exc:
            await dead_letter("decode", Rejected("bad-message", str(exc)), topic=TOPICS["files"], payload=raw)
            MESSAGES_PROCESSED.labels(agent="preprocess", outcome="rejected").inc()
            return
        args = (fe["kind"], fe["uri"], fe["file_id"], fe["detected_at_ms"])
        try:
            if fe["kind"] == "lightcurve":
                name, record = await in_pool(*args)
            else:
                name, record = _extract_from_uri(*args)
            topic = topics[features.KINDS[fe["kind"]][1]]
            await topic.send(key=fe["file_id"].encode(), value=schemas.encode(name, record))
            outcome = "ok"
        except Exception as exc:
            if not isinstance(exc, Rejected):
                log.exception("preprocess failed for %s", fe["uri"])
            await dead_letter("preprocess", exc, uri=fe["uri"], file_id=fe["file_id"], topic=TOPICS["files"])
            outcome = "rejected"
        MESSAGES_PROCESSED.labels(agent="preprocess", outcome=outcome).inc()
        STAGE_LATENCY.labels(stage="preprocess").observe(time.perf_counter() - t0)

    @app.agent(topics["files"], name="preprocess")
    async def preprocess(stream: faust.Stream) -> None:
        # Events are taken in batches: Faust's per-iteration cost is paid once per batch, and the
        # batch's offsets are committed only after every event in it has its outcome sent.
        async for events in stream.take_events(PREPROCESS_BATCH, within=PREPROCESS_WITHIN_SECONDS):
            for event in events:
                await preprocess_one(event.value)

    async def score_stream(stream: faust.Stream, kind: str, schema_name: str, topic_name: str) -> None:
        async for events in stream.take_events(SCORE_BATCH, within=SCORE_WITHIN_SECONDS):
            t0 = time.perf_counter()
            records, raws = [], []
            for ev in events:
                try:
                    records.append(schemas.decode(ev.value, expect=schema_name)[1])
                    raws.append(ev.value)
                except schemas.SchemaError as exc:
                    await dead_letter("decode", Rejected("bad-message", str(exc)), topic=topic_name, payload=ev.value)
                    MESSAGES_PROCESSED.labels(agent="score", outcome="rejected").inc()
            if not records:
                continue
            try:
                results = await asyncio.to_thread(scorer.score, kind, records) if kind == "lightcurve" \
                    else scorer.score(kind, records)
            except Exception as exc:  # e.g. no model in the registry: every record is a dead letter
                log.exception("scoring batch failed")
                results = [exc] * len(records)
            now = time.time()
            for rec, raw, res in zip(records, raws, results, strict=True):
                if isinstance(res, BaseException):
                    await dead_letter("score", res, uri=rec["uri"], file_id=rec["file_id"], topic=topic_name,
                                      payload=raw)
                    MESSAGES_PROCESSED.labels(agent="score", outcome="rejected").inc()
                    continue
                await topics["predictions"].send(key=rec["file_id"].encode(), value=schemas.encode("Prediction", res))
                END_TO_END_LATENCY.labels(kind=kind).observe(max(0.0, now - res["detected_at_ms"] / 1000))
                MESSAGES_PROCESSED.labels(agent="score", outcome="ok").inc()
                try:
                    # Transit alerts draw a figure from the file (seconds): keep it off the event loop.
                    alerts = await asyncio.to_thread(alerts_for, res) if kind == "lightcurve" else alerts_for(res)
                    for alert in alerts:
                        await topics["alerts"].send(key=rec["file_id"].encode(), value=schemas.encode("Alert", alert))
                        ALERTS.labels(task=TASK_OF_KIND[kind], reason=alert["reason"]).inc()
                except Exception as exc:
                    await dead_letter("alert", exc, uri=rec["uri"], file_id=rec["file_id"], topic=topic_name)
            STAGE_LATENCY.labels(stage="score").observe((time.perf_counter() - t0) / max(1, len(records)))

    @app.agent(topics["features.spectrum"], name="score-spectra")
    async def score_spectra(stream: faust.Stream) -> None:
        await score_stream(stream, "spectrum", "SpectrumFeatures", TOPICS["features.spectrum"])

    @app.agent(topics["features.lightcurve"], name="score-lightcurves")
    async def score_lightcurves(stream: faust.Stream) -> None:
        await score_stream(stream, "lightcurve", "LightCurveFeatures", TOPICS["features.lightcurve"])

    exported_lag: set[tuple[str, str]] = set()
    # Series exist at 0 from the start: rate()/increase() cannot see a counter's first sample.
    for agent in ("preprocess", "score"):
        for outcome in ("ok", "rejected"):
            MESSAGES_PROCESSED.labels(agent=agent, outcome=outcome)

    @app.task
    async def quiet_library_loggers() -> None:
        # Runs after the worker has set up logging, which leaves the root logger at DEBUG: the
        # libraries' debug calls then build a record for every message sent (~6 % of a worker's
        # CPU) only to drop it.
        for name in ("faust", "aiokafka", "mode"):
            logging.getLogger(name).setLevel(loglevel.upper())

    @app.task
    async def load_models() -> None:
        # Load (and verify) the champions at start, so /metrics shows what serves before any input.
        for task in TASK_OF_KIND.values():
            try:
                await asyncio.to_thread(scorer.model, task)
            except Rejected as exc:
                log.error("no %s model can serve yet: %s", task, exc)

    @app.timer(interval=2.0)
    async def export_lag() -> None:
        consumer = app.consumer
        assignment = consumer.assignment()
        per_topic: dict[str, int] = {name: 0 for name in TOPICS.values()}
        for tp in assignment:
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + 1
        for name, n in per_topic.items():
            ASSIGNED_PARTITIONS.labels(topic=name).set(n)
        # Partitions this worker lost: drop their series rather than leave a frozen value behind.
        current = {(tp.topic, str(tp.partition)) for tp in assignment}
        for labels in exported_lag - current:
            CONSUMER_LAG.remove(*labels)
        exported_lag.intersection_update(current)
        for tp in assignment:
            try:
                position = await consumer.position(tp)
                highwater = consumer.highwater(tp)  # from fetch responses: right even where ListOffsets is stale
            except Exception:
                continue
            if position is not None and highwater is not None:
                CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, highwater - position))
                exported_lag.add((tp.topic, str(tp.partition)))

    @app.task
    async def follow_model_updates() -> None:
        # Every worker applies every announcement (hot swap without restart).
        await model_updates.follow(settings_with_broker, scorer)

    settings_with_broker = dataclasses.replace(settings, broker=broker)
    app.scorer = scorer  # type: ignore[attr-defined]
    return app


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol.startswith("SASL"):
        ssl_context = None
        if settings.security_protocol == "SASL_SSL":
            from aiokafka.helpers import create_ssl_context

            ssl_context = create_ssl_context(cafile=settings.ssl_cafile)
        return faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN", ssl_context=ssl_context,
        )
    if settings.security_protocol == "SSL":
        from aiokafka.helpers import create_ssl_context

        return faust.SSLCredentials(create_ssl_context(cafile=settings.ssl_cafile))
    return None


def _toi(settings: Settings) -> Any:
    try:
        from stream.scoring import toi
    except ImportError:  # the TOI matcher arrives with the TESS work
        return None
    return toi.load_default(settings.toi_table)
