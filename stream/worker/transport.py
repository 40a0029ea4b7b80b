"""Faust's aiokafka transport, set up by the broker profile (stream/runtime/profiles.py): the fetch
long-poll, offset commits fenced by cluster id (tansu), and an idempotent producer (Kafka).

Faust fixes the consumer's ``fetch_max_wait_ms`` at 1500. A broker that does not answer a waiting
fetch when data arrives (the embedded tansu broker holds it for the full wait, measured: a message
sent 0.3 s into a fetch is delivered 0.55 s later with a 500 ms wait, 1.3 s with 1500 ms) then adds
up to that much latency at every hop of the pipeline. Real Kafka answers as soon as data arrives, so
its profile keeps Kafka's default of 500 ms; tansu's is 50 ms.

Commits are fenced by the cluster id (tansu profile). A worker that outlived a broker restart (the
in-memory broker) reconnects on its own, rejoins the group on the new cluster and can then commit
the offsets it had reached on the old one; the next owner of those partitions then skips the new
cluster's first messages (measured: 3 files lost in 1 of 2 loaded runs of a broker restart, their
features at offsets 0-1 of the new topic). So before each commit the consumer asks the broker for its
cluster id, and a worker that finds another cluster than the one it started on exits at once,
committing nothing: its supervisor starts a fresh one (stream/worker/supervisor.py).

On Kafka the producer is idempotent (``enable_idempotence`` with ``acks=all``, which it requires): a
send retried after a lost acknowledgement is not written twice. tansu cannot (its InitProducerId fails).
Faust turns idempotence on only inside transactions, so the producer class here adds it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream.runtime.kafka import bootstrap_servers
from stream.runtime.profiles import TANSU, BrokerProfile
from stream.worker.exits import EXIT_OTHER_CLUSTER

__all__ = ["SCHEME", "Transport", "faust_broker_url", "fence_commits", "kafka_producer", "use_profile"]

log = logging.getLogger(__name__)

SCHEME = "skystream-kafka"

# One Faust app per worker process: what the consumer and producer below read when Faust creates them.
_config: dict[str, Any] = {"cluster_id": None, "fetch_max_wait_ms": TANSU.fetch_max_wait_ms, "idempotent": False}


def faust_broker_url(broker: str) -> str:
    """Faust's broker URL for ``broker`` ('h:p,h2:p' or 'kafka://h:p;...'), on this transport."""
    return ";".join(f"{SCHEME}://{p}" for p in bootstrap_servers(broker).split(","))


def use_profile(profile: BrokerProfile, fetch_max_wait_ms: int) -> None:
    """Set the consumers' fetch long-poll and the producer's idempotence for the app about to be made."""
    _config["fetch_max_wait_ms"] = fetch_max_wait_ms
    _config["idempotent"] = profile.idempotent_producer


def fence_commits(cluster_id: str | None) -> None:
    """Commit offsets only into the cluster ``cluster_id`` (the one this worker started on); None: no fence."""
    _config["cluster_id"] = cluster_id


def kafka_producer(app: Any) -> Any:
    """The started aiokafka producer under ``app``'s Faust producer (built with this transport's settings)."""
    # Faust offers no public accessor; this is the producer its topic sends go through.
    return app.producer._ensure_producer()


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its Fetcher at start(); Faust offers no setting for it.
        consumer._fetch_max_wait_ms = _config["fetch_max_wait_ms"]
        return consumer

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        expected = _config["cluster_id"]
        if expected is not None:  # tansu only (docs/embedded-broker.md defect 4)
            client = self._ensure_consumer()._client
            node = client.get_random_node()
            try:
                if node is None:
                    raise KafkaError("no broker known")
                found = (await client.send(node, MetadataRequest([]))).to_object().get("cluster_id")
            except KafkaError as exc:  # cannot tell which cluster this is: commit later (Faust retries)
                log.warning("not committing now: the broker's cluster id is unknown (%s)", exc)
                return False
            if found and found != expected:
                log.critical("the broker is another cluster (%s, started on %s): exiting without committing",
                             found, expected)
                logging.shutdown()
                os._exit(EXIT_OTHER_CLUSTER)
        return await super()._commit(offsets)


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Producer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        # Faust builds every aiokafka producer (threaded or not) from these settings, the extra ones last.
        extra = dict(super()._settings_extra())
        if _config["idempotent"]:  # Kafka only: tansu's InitProducerId fails (docs/embedded-broker.md defect 3)
            extra.update(acks="all", enable_idempotence=True)
        return extra


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the profile's fetch long-poll, fenced commits and idempotence."""

    Consumer = _Consumer
    Producer = _Producer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
