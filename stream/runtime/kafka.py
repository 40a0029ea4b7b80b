"""Kafka client helpers: bootstrap addresses, TLS/SASL settings, topic creation, cluster identity, replay ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from stream.runtime.embedded_broker import BrokerError
from stream.runtime.retry import Stopped, retry
from stream.settings import TOPICS, Settings

__all__ = [
    "RETENTION",
    "ClusterState",
    "bootstrap_servers",
    "client_kwargs",
    "cluster_state",
    "ensure_topics",
    "ensure_topics_forever",
    "min_insync_replicas",
    "read_to_end",
    "topic_partitions",
    "topic_configs",
    "topic_specs",
]

log = logging.getLogger(__name__)


def bootstrap_servers(broker: str) -> str:
    """'kafka://h:p;kafka://h2:p' or 'h:p,h2:p' -> 'h:p,h2:p' for aiokafka."""
    parts = [p.strip().removeprefix("kafka://") for p in broker.replace(";", ",").split(",")]
    return ",".join(p for p in parts if p)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security settings for aiokafka clients (TLS/SASL for production clusters)."""
    kw: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile)
    if settings.security_protocol.startswith("SASL"):
        kw.update(sasl_mechanism=settings.sasl_mechanism or "PLAIN",
                  sasl_plain_username=settings.sasl_username, sasl_plain_password=settings.sasl_password)
    return kw


def min_insync_replicas(settings: Settings) -> int | None:
    """``min.insync.replicas`` for the topics SkyStream creates, or None on a single replica.

    With producers on ``acks=all`` this is what makes a write durable: the leader acknowledges only
    once this many replicas have it (2 of 3 survives one broker down). Never above the replication.
    """
    rf = settings.replication_factor
    if rf <= 1:
        return None
    return min(settings.min_insync_replicas, rf)


DAY_MS = 24 * 3600 * 1000
GIB = 1 << 30
# What each topic keeps (a broker that enforces retention: Apache Kafka; the embedded broker keeps all).
# Inputs and features can be re-made from the files, so a week; results are what subscribers and the
# archive read, so a month; model announcements are state (the newest per task), so compacted; curated
# labels are ground truth for retraining and kept (not compacted: two labels of one object with
# different periods are different signals, stream/ingest/labels.py).
RETENTION: dict[str, dict[str, str]] = {
    "files": {"retention.ms": str(7 * DAY_MS), "retention.bytes": str(GIB)},
    "features.spectrum": {"retention.ms": str(7 * DAY_MS), "retention.bytes": str(GIB)},
    "features.lightcurve": {"retention.ms": str(7 * DAY_MS), "retention.bytes": str(GIB)},
    "predictions": {"retention.ms": str(30 * DAY_MS), "retention.bytes": str(4 * GIB)},
    "alerts": {"retention.ms": str(30 * DAY_MS), "retention.bytes": str(4 * GIB)},
    "rejected": {"retention.ms": str(30 * DAY_MS), "retention.bytes": str(4 * GIB)},
    "models": {"cleanup.policy": "compact"},
    # A star's sectors are read once by the stars agent, which keeps them in its state: a week, as features.
    "stars": {"retention.ms": str(7 * DAY_MS), "retention.bytes": str(GIB)},
    # The state of every star followed (the stars table's changelog): the newest per star, for good.
    "stars.state": {"cleanup.policy": "compact"},
    "labels": {"retention.ms": "-1"},
}
DATA_TOPICS = ("files", "features.spectrum", "features.lightcurve", "predictions", "alerts", "rejected", "stars")


def topic_configs(key: str, settings: Settings) -> dict[str, str]:
    """The configs of the topic ``key`` of TOPICS (or of a filter topic, kept like alerts)."""
    configs = dict(RETENTION.get(key, RETENTION["alerts"]))
    if key in DATA_TOPICS or key not in RETENTION:
        if settings.retention_ms is not None:
            configs["retention.ms"] = str(settings.retention_ms)
        if settings.retention_bytes is not None:
            configs["retention.bytes"] = str(settings.retention_bytes)
        # Retention deletes whole segments: roll them often enough that a short retention can act.
        ms = int(configs["retention.ms"])
        configs["segment.ms"] = str(max(10_000, min(DAY_MS, ms // 4)))
        configs["segment.bytes"] = str(max(1 << 20, min(256 << 20, int(configs["retention.bytes"]) // 4)))
    if isr := min_insync_replicas(settings):
        configs["min.insync.replicas"] = str(isr)
    return configs


def topic_specs(settings: Settings, existing: set[str] | frozenset[str] = frozenset(),
                extra: Iterable[str] = ()) -> list[NewTopic]:
    """The SkyStream topics (and ``extra`` ones, e.g. filter topics) not in ``existing``, with their
    partitions, replication and configs (RETENTION)."""
    # Models and labels are low-volume control topics; one partition keeps them ordered.
    return [
        NewTopic(name, 1 if key in ("models", "labels") else settings.partitions, settings.replication_factor,
                 topic_configs=topic_configs(key, settings))
        for key, name in [*TOPICS.items(), *((n, n) for n in extra)] if name not in existing
    ]


async def ensure_topics(bootstrap: str, settings: Settings, timeout: float = 30.0, extra: Iterable[str] = ()) -> None:
    """Create every SkyStream topic (and ``extra`` ones) that does not exist yet (idempotent; existing
    topics keep their configuration): ``settings.replication_factor`` replicas, ``min.insync.replicas``
    when replicated."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(bootstrap), **client_kwargs(settings))
    try:  # the broker may still be starting: every 0.5 s until ``timeout``
        await retry(admin.start, what=f"reaching Kafka at {bootstrap}", first=0.5, maximum=0.5, timeout=timeout,
                    level=logging.DEBUG)
    except Exception as exc:
        raise BrokerError(await _why_unreachable(bootstrap, settings, exc)) from exc
    try:
        existing = set(await admin.list_topics())
        for t in topic_specs(settings, existing, extra):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([t])
    finally:
        await admin.close()


async def _why_unreachable(bootstrap: str, settings: Settings, exc: BaseException) -> str:
    """What to tell an operator when no client could start: a broker that answers but refuses the
    credentials is not "unreachable" (aiokafka logs the SASL error and raises only "Unable to bootstrap")."""
    if settings.security_protocol.startswith("SASL") or settings.security_protocol == "SSL":
        host, _, port = bootstrap_servers(bootstrap).split(",")[0].rpartition(":")
        kw = client_kwargs(settings)
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=5000, **kw)
            conn.close()
        except (SaslAuthenticationFailed, AuthenticationFailedError, UnsupportedSaslMechanismError) as auth:
            return (f"Kafka at {bootstrap} refused the credentials of user {settings.sasl_username!r} "
                    f"({settings.sasl_mechanism or 'PLAIN'}): {auth}; check SKYSTREAM_KAFKA_SASL_USERNAME and "
                    "SKYSTREAM_KAFKA_SASL_PASSWORD")
        except ssl.SSLCertVerificationError as bad_cert:
            return (f"Kafka at {bootstrap}: its TLS certificate is not trusted ({bad_cert.verify_message}); "
                    "check SKYSTREAM_KAFKA_SSL_CAFILE")
        except Exception:  # unreachable indeed
            pass
    return f"cannot reach Kafka at {bootstrap}: {exc}"


@dataclass(frozen=True)
class ClusterState:
    """What identifies the state a broker holds: its cluster id, and which SkyStream topics it has."""

    cluster_id: str | None
    missing_topics: frozenset[str]


async def cluster_state(bootstrap: str, settings: Settings, timeout: float = 5.0) -> ClusterState | None:
    """The cluster's id and missing SkyStream topics, or None when it cannot be reached within ``timeout``.

    A cluster that lost its storage comes back under a new cluster id (a real Kafka whose data
    directory was wiped; the embedded broker on every start) or without its topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(bootstrap), request_timeout_ms=int(timeout * 1000),
                                **client_kwargs(settings))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            described = await admin.describe_cluster()
            topics = set(await admin.list_topics())
    except Exception as exc:  # unreachable, or answering errors while it starts
        log.debug("broker %s not reachable: %s", bootstrap, exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return ClusterState(described.get("cluster_id"), frozenset(set(TOPICS.values()) - topics))


async def ensure_topics_forever(bootstrap: str, settings: Settings, stop: asyncio.Event | None = None,
                                max_backoff: float = 30.0) -> bool:
    """``ensure_topics`` until it succeeds (backing off up to ``max_backoff`` s) or ``stop`` is set;
    whether it succeeded. For long-running processes, which wait out a broker outage of any length."""
    try:
        await retry(lambda: ensure_topics(bootstrap, settings, timeout=10.0), stop=stop, maximum=max_backoff,
                    what=f"creating topics on {bootstrap}")
    except Stopped:
        return False
    return True


async def read_to_end(consumer: Any, parts: list[Any]) -> bool:
    """Whether an assigned consumer has read every partition up to the high watermark its last fetch
    reported. Fetch answers are right where ListOffsets can be stale (docs/embedded-broker.md, defect 1),
    so replays end on this rather than on end_offsets()."""
    for tp in parts:
        mark = consumer.highwater(tp)
        if mark is None or await consumer.position(tp) < mark:
            return False
    return True


async def topic_partitions(consumer: Any, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (none for a topic that does not exist), from fresh metadata, for a
    consumer that will ``assign`` them.

    A consumer knows the partitions only of topics it subscribed to or was assigned: Apache Kafka then
    answers ``partitions_for_topic`` with None for any other (tansu happened to return all topics).
    aiokafka has no public call that returns another topic's partitions, hence its client's
    ``fetch_all_metadata``."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
