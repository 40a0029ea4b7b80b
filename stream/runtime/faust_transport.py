"""Faust's aiokafka transport with a configurable fetch long-poll.

Faust fixes the consumer's ``fetch_max_wait_ms`` at 1500. A broker that does not answer a waiting
fetch when data arrives (the embedded tansu broker holds it for the full wait, measured: a message
sent 0.3 s into a fetch is delivered 0.55 s later with a 500 ms wait, 1.3 s with 1500 ms) then adds
up to that much latency at every hop of the pipeline. Real Kafka answers as soon as data arrives, so
a short wait costs it only a few more idle fetch requests per second.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream.settings import Settings

__all__ = ["SCHEME", "Transport"]

SCHEME = "skystream-kafka"


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its Fetcher at start(); Faust offers no setting for it.
        consumer._fetch_max_wait_ms = Settings().fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, with the consumer whose fetch long-poll is configurable."""
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
