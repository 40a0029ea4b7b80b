"""The watcher's results follower: a file is done only once its prediction or dead letter has been seen.

It reads the predictions and dead-letter topics (every message is keyed by its file_id, a watcher's
own dead letters by the identity it recorded) and marks those files resolved in the watcher's ledger.
It also notices a broker that came back without its state, which a memory-only broker (the embedded
tansu) always does and a real Kafka does when its storage is lost:

- a new cluster id (the ledger keeps the one its offsets belong to): on both;
- SkyStream topics missing: tansu only;
- a partition whose end (the high watermark of a fetch) is below the offset already read: tansu only.

A Kafka that lost its storage is formatted again under a new cluster id, so the id tells; the other
two signs appear on a healthy Kafka for a few seconds after its brokers crash and restart (metadata
still loading, a leader's checkpointed high watermark behind the offsets already read), and acting on
them would republish what the broker kept.

Then it re-creates the topics and marks every unresolved file due: the watcher's next pass publishes
them again (stream/ingest/watcher.py ``Watcher.republish_due``). A repeat is harmless: the same file
and model version always give the same prediction_id and content.

Three times after a reset, every ``watch_reset_recheck_seconds``, every file still without an
outcome that was last published more than half that time earlier is marked due again. The embedded
broker answers some produce requests with UnknownError for a while after a restart, and a few outcomes
sent then were acknowledged on retry yet never appeared (docs/fault-tolerance.md); the rechecks
republish them within about half a minute instead of after the slow fallback (``watch_republish_seconds``).

The broker profile (stream/runtime/profiles.py) decides what runs: the rechecks only on tansu; the
cluster check (one admin client) every ``check_interval`` on tansu, and on Kafka only when the reading
starts or restarts after an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from stream.ingest.watcher import Ledger
from stream.runtime.kafka import (
    bootstrap_servers,
    client_kwargs,
    cluster_state,
    ensure_topics_forever,
    topic_partitions,
)
from stream.runtime.metrics import BROKER_RESETS, FILES_UNRESOLVED
from stream.runtime.profiles import BrokerProfile, resolve_profile
from stream.runtime.retry import Backoff, Stopped
from stream.settings import TOPICS, Settings

__all__ = ["ResultFollower", "OUTCOME_TOPICS"]

log = logging.getLogger(__name__)

OUTCOME_TOPICS = (TOPICS["predictions"], TOPICS["rejected"])
RECHECKS = 3  # after a reset, every watch_reset_recheck_seconds
FOLLOW_PERIOD_SECONDS = 0.25  # ResultFollower._follow


class _BrokerReset(Exception):
    """The broker lost its state (the reason is the message)."""


class ResultFollower:
    """Marks files resolved as their outcomes appear; marks every unresolved file due after a broker reset.

    ``profile`` None: the one ``settings.broker_engine`` names or the broker tells, found when ``run`` starts."""

    def __init__(self, ledger: Ledger, broker: str, settings: Settings, source_name: str,
                 check_interval: float = 2.0, max_backoff: float = 30.0, profile: BrokerProfile | None = None) -> None:
        self.ledger = ledger
        self.broker = broker
        self.settings = settings
        self.source_name = source_name
        self.check_interval = check_interval
        self.max_backoff = max_backoff
        self.profile = profile
        self._rechecks_left = 0  # after the last reset
        self._next_recheck = 0.0  # monotonic time

    @property
    def recheck_after(self) -> float:
        """Seconds between the rechecks after a reset; 0: none (tansu only, docs/embedded-broker.md defect 5)."""
        if self.profile is None:
            return self.settings.watch_reset_recheck_seconds
        return self.profile.recheck_seconds(self.settings)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop``; an outage of any length or a broker reset only restarts the reading."""
        if self.profile is None:
            try:
                self.profile = await resolve_profile(self.broker, self.settings, stop)
            except Stopped:
                return
        backoff = Backoff(1.0, self.max_backoff)
        reset_before = False  # the last pass ended in a reset too
        while not stop.is_set():
            try:
                await self._follow(stop)
                backoff.reset()
                reset_before = False
                continue
            except _BrokerReset as reset:
                # A reset seen again at once (a broker still coming up) is not acted on in a tight loop.
                if reset_before:
                    await backoff.wait(stop)
                reset_before = True
                await self._on_reset(str(reset), stop)
                continue
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("results follower: broker unavailable (%s: %s); retrying in %.0f s",
                            type(exc).__name__, exc, backoff.delay)
            await backoff.wait(stop)

    @property
    def _tansu(self) -> bool:
        """Whether the broker-reset heuristics that only the embedded broker needs are on."""
        return self.profile is None or self.profile.watch_broker

    async def check_cluster(self) -> None:
        """Raise _BrokerReset when the broker is not the one the ledger's offsets belong to (and keep
        the cluster id the first time); nothing when it cannot be reached (nothing to conclude)."""
        state = await cluster_state(self.broker, self.settings)
        if state is None:
            return
        known = self.ledger.get_meta("cluster_id")
        if state.cluster_id and known and state.cluster_id != known:
            raise _BrokerReset(f"cluster id changed from {known} to {state.cluster_id}")
        # A Kafka that lost its storage is formatted anew, under a new cluster id: the id alone tells. Topics
        # or partitions missing for a moment, while its brokers restart, are not a reset there.
        if state.missing_topics and self._tansu:
            raise _BrokerReset(f"topics missing: {', '.join(sorted(state.missing_topics))}")
        if state.cluster_id and not known:
            self.ledger.set_meta("cluster_id", state.cluster_id)
            self.ledger.commit()

    async def _on_reset(self, why: str, stop: asyncio.Event) -> None:
        log.warning("the broker lost its state (%s): re-creating topics, publishing unresolved files again", why)
        BROKER_RESETS.labels(process="watcher").inc()
        if not await ensure_topics_forever(self.broker, self.settings, stop):
            return
        state = await cluster_state(self.broker, self.settings)
        due = self.ledger.mark_all_due()
        self.ledger.forget_follow_offsets()
        if state is not None and state.cluster_id:
            self.ledger.set_meta("cluster_id", state.cluster_id)
        self.ledger.commit()
        log.warning("%d unresolved files will be published again", due)
        if self.recheck_after > 0:  # tansu only (docs/embedded-broker.md defect 5)
            self._rechecks_left = RECHECKS
            self._next_recheck = time.monotonic() + self.recheck_after

    def recheck_if_due(self) -> int:
        """A recheck after a reset (module doc), when its time has come; how many files it marked due."""
        if not self._rechecks_left or time.monotonic() < self._next_recheck:
            return 0
        self._rechecks_left -= 1
        self._next_recheck = time.monotonic() + self.recheck_after
        due = self.ledger.mark_due_sent_before(int((time.time() - self.recheck_after / 2) * 1000))
        self.ledger.commit()
        if due:
            log.warning("%d files published again after the broker reset still have no outcome: publishing "
                        "them once more", due)
        return due

    async def _follow(self, stop: asyncio.Event) -> None:
        await self.check_cluster()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.broker), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", **client_kwargs(self.settings),
        )
        await consumer.start()
        try:
            parts = await topic_partitions(consumer, OUTCOME_TOPICS)
            if len({tp.topic for tp in parts}) < len(OUTCOME_TOPICS):
                if self._tansu:
                    raise _BrokerReset("outcome topics have no partitions")
                raise KafkaError("the outcome topics have no partitions yet")  # retried with backoff
            consumer.assign(parts)
            read = self.ledger.follow_offsets()
            for tp in parts:
                if (tp.topic, tp.partition) in read:
                    consumer.seek(tp, read[(tp.topic, tp.partition)])
                else:
                    await consumer.seek_to_beginning(tp)
            checked = time.monotonic()
            while not stop.is_set():
                started = time.monotonic()
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                keys = [m.key.decode() for msgs in batches.values() for m in msgs if m.key]
                for tp, msgs in batches.items():
                    if msgs:
                        read[(tp.topic, tp.partition)] = msgs[-1].offset + 1
                # tansu only (docs/embedded-broker.md defect 7): an empty restart starts every partition at 0.
                # On Kafka a leader that restarted reports its checkpointed high watermark, which can lag the
                # offsets already read for a few seconds after a crash: not a loss.
                for tp in parts if self._tansu else ():
                    mark = consumer.highwater(tp)  # from fetches: right where ListOffsets may be stale
                    if mark is not None and mark < read.get((tp.topic, tp.partition), 0):
                        raise _BrokerReset(f"{tp.topic}[{tp.partition}] ends at {mark}, below the offset read")
                if batches:
                    self.ledger.resolve(keys)
                    self.ledger.save_follow_offsets(read)
                    self.ledger.commit()
                FILES_UNRESOLVED.labels(source=self.source_name).set(self.ledger.unresolved())
                if time.monotonic() - checked > self.check_interval:
                    if self._tansu:
                        await self.check_cluster()  # tansu only (docs/embedded-broker.md defect 7)
                    self.recheck_if_due()
                    checked = time.monotonic()
                # At most a few passes a second: each is a ledger transaction and a count of what is
                # unresolved, and on a busy stream a pass per handful of outcomes was a tenth of the
                # watcher's CPU. What arrives meanwhile waits in the consumer's buffer.
                await asyncio.sleep(max(0.0, FOLLOW_PERIOD_SECONDS - (time.monotonic() - started)))
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
