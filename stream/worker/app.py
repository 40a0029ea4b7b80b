"""The Faust workers: preprocess (file event -> features), score (features -> prediction -> alert) and
stars (a star's scored sectors -> a search over all of them -> multi-sector prediction -> alert).

Delivery is at-least-once: Faust commits an offset only after the agent has finished the event, so
a worker that stops mid-stream leaves its uncommitted events to the next owner of the partition.
Results are idempotent: every message about a file is keyed by its file_id, and the same file and
model version always give the same prediction_id and content. The broker profile
(stream/runtime/profiles.py) sets the group timeouts, the fetch wait, the producer's idempotence and
which tansu workarounds run (the package docstring, stream/worker/__init__.py, has the table).

Bad input never stops a worker: any failure becomes one dead-letter message (stage, reason, input
reference) on the rejected topic, and the agent goes on with the next event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from typing import Any

import faust
from faust.types.enums import ProcessingGuarantee

from stream import kinds
from stream.errors import Rejected, Unavailable
from stream.ingest import allowlist
from stream.models import hot_swap as model_updates
from stream.runtime.profiles import BrokerProfile, describe, resolve_profile
from stream.scoring.publish import score_and_publish
from stream.scoring.scorer import scorer_for
from stream.settings import TOPICS, Settings
from stream.stars import agent as stars
from stream.worker import events as worker
from stream.worker import transport
from stream.worker.exits import EXIT_STALLED
from stream.worker.filter_agent import POLL_SECONDS as FILTER_POLL_SECONDS
from stream.worker.filter_agent import FilterRouter
from stream.worker.sink import TopicSink
from stream.worker.stall import StallWatch

__all__ = ["create_app", "run_worker"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, broker: str, worker_name: str = "worker", loglevel: str = "warning",
               profile: BrokerProfile | None = None) -> faust.App:
    """The Faust app of one worker: a preprocess agent, a score agent per kind, the stars agent and its
    table (stream/stars), the lag exporter and the model-update follower, set up for ``profile`` (None:
    ask the broker, stream/runtime/profiles.py). The per-event logic is in stream/worker/events.py and
    stream/stars/agent.py."""
    if profile is None:
        profile = asyncio.run(resolve_profile(broker, settings))
    guarantee = _processing_guarantee(settings, profile)
    datadir = settings.state_dir / "faust" / worker_name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    transport.use_profile(profile, profile.fetch_wait_ms(settings))
    app = faust.App(
        settings.app_id,
        broker=transport.faust_broker_url(broker),
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # The profile's group timeouts: Kafka's defaults, or on tansu short ones, with which a join takes
        # seconds instead of 30-110 s (tansu only, docs/embedded-broker.md defect 2).
        broker_session_timeout=profile.session_timeout,
        broker_rebalance_timeout=profile.rebalance_timeout,
        broker_heartbeat_interval=profile.heartbeat_interval,
        broker_commit_interval=1.0,
        producer_linger_ms=2,
        processing_guarantee=guarantee,
        # Every topic, the stars table's changelog too, is made by ensure_topics (stream/runtime/kafka.py)
        # with its partitions and retention; on a secured cluster the workers may not create topics at all.
        topic_allow_declare=False,
    )
    topics = {name: app.topic(name, key_type=bytes, value_type=bytes, internal=False) for name in TOPICS.values()}
    settings_with_broker = dataclasses.replace(settings, broker=broker)
    scorer = scorer_for(settings_with_broker)
    pool = worker.PreprocessPool(settings)

    def direct_producer() -> Any:
        return transport.kafka_producer(app)

    # At least once: the sinks send straight to the app's aiokafka producer (stream/worker/sink.py).
    # Exactly once: Faust's topic sends, which go through its per-partition transaction producers.
    producer = direct_producer if app.conf.processing_guarantee == ProcessingGuarantee.AT_LEAST_ONCE else None
    stall_watch = StallWatch(profile.stall_seconds(settings))  # tansu only (docs/embedded-broker.md defect 7)
    if not allowlist.configured_roots(settings):
        log.warning("NO SOURCES: neither SKYSTREAM_SOURCES nor SKYSTREAM_WATCH_SOURCE is set, so every file event "
                    "will be dead-lettered as outside-sources")

    # Each agent takes its events in batches; Faust commits a batch's offsets only after the agent
    # has finished it, i.e. after every event in it has its outcome sent (at-least-once).
    @app.agent(topics[TOPICS["files"]], name="preprocess")
    async def preprocess(stream: faust.Stream) -> None:
        """Agent: turn file events into feature records (or dead letters), in batches."""
        sink = TopicSink(topics, producer=producer)
        async for events in stream.take_events(worker.PREPROCESS_BATCH, within=worker.PREPROCESS_WITHIN_SECONDS):
            with stall_watch.working(TOPICS["files"]):
                # Storage unreachable: pause on this batch (uncommitted) instead of dead-lettering it.
                await worker.until_available(
                    "preprocess", lambda raws=[event.value for event in events]: worker.preprocess_events(
                        raws, sink, pool.extract))
                await sink.flush()

    def score_agent(kind: kinds.Kind) -> None:
        """Register the agent that scores ``kind``'s feature records."""
        async def score(stream: faust.Stream) -> None:
            """Agent: score feature records in batches and publish predictions and alerts."""
            sink = TopicSink(topics, producer=producer)
            async for events in stream.take_events(worker.SCORE_BATCH, within=worker.SCORE_WITHIN_SECONDS):
                batch = [event.value for event in events]
                with stall_watch.working(kind.features_topic):
                    # No model yet or registry unreachable: pause on this batch until one can serve.
                    outcomes = await worker.until_available(
                        "score", lambda b=batch: score_and_publish(scorer, kind, b, sink))
                    if kind.name == "lightcurve":  # each scored sector joins its star's state
                        await stars.send_sectors(batch, outcomes, sink)
                    await sink.flush()

        app.agent(topics[kind.features_topic], name=f"score-{kind.name}")(score)

    for kind in kinds.KINDS:
        score_agent(kind)

    # Each star's state (stream/stars): a table keyed by TIC id, its changelog the compacted
    # skystream.stars.state, partitioned as skystream.stars so a star's sectors and state meet in one worker.
    star_states = app.Table(
        "stars-state", key_type=bytes, value_type=bytes, partitions=settings.partitions,
        changelog_topic=app.topic(TOPICS["stars.state"], key_type=bytes, value_type=bytes,
                                  partitions=settings.partitions, internal=False))

    @app.agent(topics[TOPICS["stars"]], name="stars")
    async def follow_stars(stream: faust.Stream) -> None:
        """Agent: add each scored sector to its star's state and search the star's sectors together."""
        sink = TopicSink(topics, producer=producer)
        # One event at a time: the table is written in the event's context (its changelog partition).
        async for event in stream.events():
            with stall_watch.working(TOPICS["stars"]):
                state = await worker.until_available("stars", lambda e=event: stars.on_sector(
                    e.key, e.value, star_states, scorer, sink))
                await sink.flush()  # outputs first: a state on the broker says they were delivered
                if state is not None:
                    star_states[event.key] = state
                    await app.producer.flush()  # the changelog has it before the event is committed

    if settings.filters:
        # User-defined filters (docs/filters.md): every matching alert also goes to skystream.alerts.<name>.
        router = FilterRouter(settings.filters, settings_with_broker)

        @app.agent(topics[TOPICS["alerts"]], name="filter-alerts")
        async def filter_alerts(stream: faust.Stream) -> None:
            """Agent: route alerts to the topics of the filters they match."""
            sink = TopicSink(topics, producer=producer)

            async def send(topic: str, key: bytes, value: bytes) -> None:
                """Send to a filter topic, declaring the topic on first use."""
                if topic not in topics:  # a filter topic (skystream.alerts.<filter>)
                    topics[topic] = app.topic(topic, key_type=bytes, value_type=bytes, internal=False)
                await sink.send(topic, key, value)

            async for events in stream.take_events(worker.SCORE_BATCH, within=worker.SCORE_WITHIN_SECONDS):
                with stall_watch.working(TOPICS["alerts"]):
                    await router.route([(e.key, e.value) for e in events], send)
                    await sink.flush()

        @app.timer(interval=FILTER_POLL_SECONDS, on_leader=False)
        async def reload_filters() -> None:
            """Reload the filter file when it changed."""
            await router.poll()

    worker.start_series()

    @app.task
    async def quiet_library_loggers() -> None:
        """Set the libraries' loggers to the worker's log level."""
        # Runs after the worker has set up logging, which leaves the root logger at DEBUG: the
        # libraries' debug calls then build a record for every message sent (~6 % of a worker's
        # CPU) only to drop it.
        for name in ("faust", "aiokafka", "mode"):
            logging.getLogger(name).setLevel(loglevel.upper())

    @app.task
    async def start_preprocessing() -> None:
        """Start the preprocessing forkserver now, not on the first batch (which would wait ~1 s for it)."""
        await asyncio.to_thread(pool.start)

    @app.task
    async def load_models() -> None:
        """Load the champion models at start; log the tasks that cannot serve yet."""
        # Load (and verify) the champions at start, so /metrics shows what serves before any input.
        for kind in kinds.KINDS:
            try:
                await asyncio.to_thread(scorer.model, kind.task)
            except (Rejected, Unavailable) as exc:
                log.error("no %s model can serve yet: %s", kind.task, exc)

    exported_lag: set[tuple[str, str]] = set()

    @app.timer(interval=2.0)
    async def export_lag() -> None:
        """Export the consumer lag to the metrics; exit (to be restarted) if a partition stalled."""
        stalled = await worker.export_lag(app.consumer, exported_lag, watch=stall_watch)
        if stalled:
            log.critical("%s: messages waiting, the agent idle and nothing committed for %.0f s; exiting so that "
                         "a fresh worker reads from the committed offsets", ", ".join(map(str, stalled)),
                         stall_watch.after)
            logging.shutdown()
            os._exit(EXIT_STALLED)

    @app.task
    async def follow_model_updates() -> None:
        """Apply every model update announced on the models topic."""
        # Every worker applies every announcement (hot swap without restart).
        await model_updates.follow(settings_with_broker, scorer)

    app.scorer = scorer  # type: ignore[attr-defined]
    return app


def run_worker(settings: Settings, broker: str, metrics_port: int = 0, loglevel: str = "warning") -> None:
    """Run one Faust worker in this process until it stops (`skystream worker --child`)."""
    from faust.worker import Worker

    from stream.runtime import metrics
    from stream.runtime.kafka import cluster_state, ensure_topics

    asyncio.run(ensure_topics(broker, settings))
    profile = asyncio.run(resolve_profile(broker, settings))
    log.info("worker %d: %s", os.getpid(), describe(profile, settings))
    cluster_id = None
    if profile.fence_commits:  # tansu only (docs/embedded-broker.md defect 4)
        # Offsets go only into the cluster this worker starts on (stream/worker/transport.py).
        for _attempt in range(6):  # the broker just answered ensure_topics; a busy one may be slow
            state = asyncio.run(cluster_state(broker, settings))
            if state is not None and (cluster_id := state.cluster_id):
                break
        if cluster_id is None:
            log.warning("the broker's cluster id is unknown: offset commits are not fenced")
    transport.fence_commits(cluster_id)
    port = metrics.serve(metrics_port)
    print(f"worker {os.getpid()}: broker {broker} ({profile.name} profile), metrics on :{port}", file=sys.stderr,
          flush=True)
    app = create_app(settings, broker, worker_name=f"worker-{os.getpid()}", loglevel=loglevel, profile=profile)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


def _processing_guarantee(settings: Settings, profile: BrokerProfile) -> str:
    """SKYSTREAM_PROCESSING_GUARANTEE, checked: exactly_once needs Kafka transactions, which tansu lacks
    (its InitProducerId fails; docs/experiments/exactly-once.md)."""
    guarantee = settings.processing_guarantee.strip().lower()
    if guarantee not in ("at_least_once", "exactly_once"):
        raise ValueError(f"SKYSTREAM_PROCESSING_GUARANTEE must be at_least_once or exactly_once, not {guarantee!r}")
    if guarantee == "exactly_once" and not profile.idempotent_producer:
        raise ValueError(f"SKYSTREAM_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions: the {profile.name} "
                         "broker has none (its InitProducerId fails); use at_least_once")
    return guarantee


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
