"""The Faust agents' publish sink: outcomes go out on Faust topics, and a batch is done only once the
broker has all of them (the "flush" in consume → score → produce → flush → commit)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from stream.runtime.retry import Backoff
from stream.worker.exits import EXIT_UNDELIVERABLE

__all__ = ["FLUSH_ATTEMPTS", "TopicSink"]

log = logging.getLogger(__name__)

FLUSH_ATTEMPTS = 6  # about 25 s of retries


class TopicSink:
    """The publish sink of one Faust agent: sends to its topics by name.

    A send returns before the broker has the message, and a failed delivery is only logged; an
    agent calls ``flush`` at the end of each batch, so a batch counts as done (and its offsets are
    committed) only once every outcome of it is on the broker.

    With ``producer`` (the app's aiokafka producer, ``transport.kafka_producer``) messages go to it
    directly: Faust's topic send adds a FutureMessage, sensor calls and callbacks per message (about
    a tenth of a worker's CPU) and nothing the flush needs. Same producer, same settings
    (idempotence, acks, linger), same default partitioner: the same message lands on the same partition.
    """

    def __init__(self, topics: dict[str, faust.TopicT], max_backoff: float = 10.0,
                 producer: Callable[[], Any] | None = None) -> None:
        self.topics = topics
        self.max_backoff = max_backoff
        self._producer = producer
        self._in_flight: list[tuple[str, bytes, bytes, Awaitable[Any]]] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a message; its delivery is awaited by ``flush``."""
        if self._producer is not None:
            delivered = await self._producer().send(topic, value, key=key)
        else:
            delivered = await self.topics[topic].send(key=key, value=value)
        self._in_flight.append((topic, key, value, delivered))

    async def flush(self) -> None:
        """Wait for the broker to have every message sent so far; send again, with a growing pause,
        whatever it refused (a broker restarting). A worker that still cannot deliver after
        ``FLUSH_ATTEMPTS`` exits, its batch uncommitted: `skystream worker` starts a new one, which
        replays the batch (a Faust agent that raised would skip it)."""
        backoff = Backoff(0.5, self.max_backoff)
        for _attempt in range(FLUSH_ATTEMPTS):
            batch, self._in_flight = self._in_flight, []
            results = await asyncio.gather(*(delivered for *_, delivered in batch), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if not errors:
                return
            log.warning("%d messages not delivered (%s); sending them again in %.1f s", len(errors), errors[0],
                        backoff.delay)
            await backoff.wait()
            for (topic, key, value, _), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    await self.send(topic, key, value)
        log.critical("outcomes still not delivered after %d attempts: exiting, nothing committed", FLUSH_ATTEMPTS)
        logging.shutdown()
        os._exit(EXIT_UNDELIVERABLE)
