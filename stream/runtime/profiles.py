"""Broker profiles: which delivery mechanisms run against which broker.

Some of SkyStream's delivery code exists only to survive the embedded tansu broker's defects
(docs/embedded-broker.md); against Apache Kafka it would cost an admin client a second, restarts of
healthy workers, and group timeouts far below Kafka's. A ``BrokerProfile`` says which of those
mechanisms are on. ``Settings.broker_engine`` names the profile (``kafka``, ``tansu``), or with
``auto`` the broker tells: the embedded broker's cluster id is ``skystream-<hex>`` (tansu's own
default ``tansu_cluster``), anything else is taken for Kafka.

The variables that tuned these mechanisms before keep precedence within a profile:
SKYSTREAM_FETCH_MAX_WAIT_MS (unset: the profile's), SKYSTREAM_WORKER_STALL_SECONDS and
SKYSTREAM_WATCH_RESET_RECHECK_SECONDS (the interval where the profile runs the mechanism; 0 turns it off).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from stream.runtime.kafka import cluster_state
from stream.runtime.retry import retry
from stream.settings import Settings

__all__ = ["ENGINES", "KAFKA", "TANSU", "BrokerProfile", "describe", "profile_for_cluster_id", "profile_named",
           "resolve_profile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerProfile:
    """Which broker the processes talk to, and so which workarounds run (module doc)."""

    name: str  # "kafka" | "tansu"
    # The supervisor polls cluster id/topics every second and SIGKILLs the child on a reset or after
    # `outage_restart` s unreachable; the watcher's results follower polls them every 2 s.
    watch_broker: bool
    fence_commits: bool  # commits fenced by cluster id (stream/worker/transport.py)
    stall_watch: bool  # stream/worker/stall.py exits a worker whose partition stopped
    reset_rechecks: bool  # watcher: 3 rechecks after a reset (stream/ingest/resolver.py)
    # Watcher: a file still without an outcome after this many seconds is published again (0: never).
    # On Kafka what was acknowledged stays, and a backlog waits longer than any such delay: republishing
    # it would only double the work.
    republish_seconds: float
    session_timeout: float  # Faust broker_session_timeout, seconds
    heartbeat_interval: float  # seconds
    rebalance_timeout: float  # seconds
    fetch_max_wait_ms: int  # the consumers' fetch long-poll
    idempotent_producer: bool  # enable_idempotence (and acks=all) on the worker's producer

    def fetch_wait_ms(self, settings: Settings) -> int:
        """The fetch long-poll: SKYSTREAM_FETCH_MAX_WAIT_MS when set, else the profile's."""
        return self.fetch_max_wait_ms if settings.fetch_max_wait_ms is None else settings.fetch_max_wait_ms

    def stall_seconds(self, settings: Settings) -> float:
        """After how long a stalled partition restarts its worker; 0: the stall watch is off."""
        return settings.worker_stall_seconds if self.stall_watch else 0.0

    def republish_after(self, settings: Settings) -> float:
        """The watcher's republish fallback: SKYSTREAM_WATCH_REPUBLISH_SECONDS when set, else the profile's."""
        configured = settings.watch_republish_seconds
        return self.republish_seconds if configured is None else configured

    def recheck_seconds(self, settings: Settings) -> float:
        """The interval of the watcher's rechecks after a broker reset; 0: no rechecks."""
        return settings.watch_reset_recheck_seconds if self.reset_rechecks else 0.0


# The embedded broker: every workaround on (docs/embedded-broker.md, defects 2 to 5 and 7).
TANSU = BrokerProfile(
    name="tansu", watch_broker=True, fence_commits=True, stall_watch=True, reset_rechecks=True,
    republish_seconds=300.0,  # outcomes it acknowledged can be lost (defect 5)
    # Short group timeouts: with Kafka's defaults a worker needs 30-110 s to join a group on tansu (defect 2).
    session_timeout=6.0, heartbeat_interval=1.0, rebalance_timeout=6.0,
    # tansu holds a fetch for its full wait even when data arrives (stream/worker/transport.py).
    fetch_max_wait_ms=50,
    idempotent_producer=False,  # tansu's InitProducerId fails (defect 3)
)

# Apache Kafka: no workaround, the Kafka clients' defaults, and an idempotent producer.
KAFKA = BrokerProfile(
    name="kafka", watch_broker=False, fence_commits=False, stall_watch=False, reset_rechecks=False,
    republish_seconds=0.0,
    session_timeout=45.0, heartbeat_interval=3.0, rebalance_timeout=60.0, fetch_max_wait_ms=500,
    idempotent_producer=True,
)

ENGINES = {p.name: p for p in (KAFKA, TANSU)}

# The embedded broker starts tansu with --cluster-id skystream-<hex>; tansu's default id is tansu_cluster.
TANSU_CLUSTER_PREFIX = "skystream-"
TANSU_DEFAULT_CLUSTER_ID = "tansu_cluster"


def profile_for_cluster_id(cluster_id: str | None) -> BrokerProfile:
    """The profile of the broker reporting ``cluster_id``: tansu for the embedded broker's ids, else Kafka
    (whose ids are 22-character base64 UUIDs; an unknown id gets no workaround)."""
    if cluster_id and (cluster_id.startswith(TANSU_CLUSTER_PREFIX) or cluster_id == TANSU_DEFAULT_CLUSTER_ID):
        return TANSU
    return KAFKA


def profile_named(engine: str) -> BrokerProfile | None:
    """The profile ``engine`` names (kafka, tansu); None for auto; ValueError for anything else."""
    engine = engine.strip().lower()
    if engine == "auto":
        return None
    if engine not in ENGINES:
        raise ValueError(f"SKYSTREAM_BROKER_ENGINE must be kafka, tansu or auto, not {engine!r}")
    return ENGINES[engine]


async def resolve_profile(bootstrap: str, settings: Settings, stop: asyncio.Event | None = None) -> BrokerProfile:
    """The profile for the broker at ``bootstrap``: the one ``settings.broker_engine`` names, or with
    ``auto`` the one its cluster id tells, asked until the broker answers (backing off; raises
    ``stream.runtime.retry.Stopped`` if ``stop`` is set first)."""
    named = profile_named(settings.broker_engine)
    if named is not None:
        return named

    async def ask() -> str | None:
        """The broker's cluster id; ConnectionError while it cannot be reached."""
        state = await cluster_state(bootstrap, settings)
        if state is None:
            raise ConnectionError(f"broker {bootstrap} not reachable")
        return state.cluster_id

    cluster_id = await retry(ask, retry_on=ConnectionError, stop=stop, what="asking the broker's cluster id",
                             maximum=10.0)
    return profile_for_cluster_id(cluster_id)


def describe(profile: BrokerProfile, settings: Settings) -> str:
    """One log line: the profile and what it turns on, with the values in force."""
    on = [name for name, flag in (("broker watch", profile.watch_broker), ("commit fence", profile.fence_commits),
                                  ("stall watch", profile.stall_seconds(settings) > 0),
                                  ("reset rechecks", profile.recheck_seconds(settings) > 0),
                                  ("idempotent producer", profile.idempotent_producer)) if flag]
    return (f"broker profile {profile.name} (SKYSTREAM_BROKER_ENGINE={settings.broker_engine}): "
            f"{', '.join(on) or 'no workaround'}; group session {profile.session_timeout:g} s, heartbeat "
            f"{profile.heartbeat_interval:g} s, rebalance {profile.rebalance_timeout:g} s, fetch wait "
            f"{profile.fetch_wait_ms(settings)} ms")
