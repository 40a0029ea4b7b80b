"""Faust's aiokafka transport with a configurable fetch long-poll and fenced offset commits.

Faust fixes the consumer's ``fetch_max_wait_ms`` at 1500. A broker that does not answer a waiting
fetch when data arrives (the embedded tansu broker holds it for the full wait, measured: a message
sent 0.3 s into a fetch is delivered 0.55 s later with a 500 ms wait, 1.3 s with 1500 ms) then adds
up to that much latency at every hop of the pipeline. Real Kafka answers as soon as data arrives, so
a short wait costs it only a few more idle fetch requests per second.

Commits are fenced by the cluster id. A worker that outlived a broker restart (the in-memory broker,
or a Kafka whose storage was wiped) reconnects on its own, rejoins the group on the new cluster and
can then commit the offsets it had reached on the old one; the next owner of those partitions then
skips the new cluster's first messages (measured:
3 files lost in 1 of 2 loaded runs of a broker restart, their features at offsets 0-1 of the new
topic). So before each commit the consumer asks the broker for its cluster id, and a worker that
finds another cluster than the one it started on exits at once, committing nothing: its supervisor
starts a fresh one (stream/runtime/supervisor.py).
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

from stream.runtime.supervisor import EXIT_OTHER_CLUSTER
from stream.settings import Settings

__all__ = ["SCHEME", "Transport", "fence_commits"]

log = logging.getLogger(__name__)

SCHEME = "skystream-kafka"

_fence: dict[str, str | None] = {"cluster_id": None}


def fence_commits(cluster_id: str | None) -> None:
    """Commit offsets only into the cluster ``cluster_id`` (the one this worker started on); None: no fence."""
    _fence["cluster_id"] = cluster_id


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its Fetcher at start(); Faust offers no setting for it.
        consumer._fetch_max_wait_ms = Settings().fetch_max_wait_ms
        return consumer

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        expected = _fence["cluster_id"]
        if expected is not None:
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


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, with a configurable fetch long-poll and commits fenced by cluster id."""
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
