"""Replay the retained features topics through the current champions (`skystream rescore`).

After a promotion, subscribers get updated predictions (marked with the new model version) without
re-reading any file: the features topics are the claim-checked inputs of every prediction made.
Replayed features go through the same ``score_and_publish`` as the workers' (same TOI matching, same
dead letters); replays send predictions only, not alerts again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stream import kinds
from stream.runtime.kafka import bootstrap_servers, client_kwargs, read_to_end, topic_partitions
from stream.scoring.publish import score_and_publish
from stream.scoring.scorer import scorer_for
from stream.settings import Settings

__all__ = ["ProducerSink", "rescore"]


class ProducerSink:
    """A sink on an aiokafka producer: ``send`` hands the message to the producer, ``flush`` waits
    until the broker has acknowledged every one (raising the first delivery error), so a rescore
    reports done only once its predictions are on the broker."""

    def __init__(self, producer: Any, max_in_flight: int = 10_000) -> None:
        self.producer = producer
        self.max_in_flight = max_in_flight
        self._in_flight: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send the message with the Kafka producer (its delivery is awaited by ``flush``)."""
        self._in_flight.append(await self.producer.send(topic, value, key=key))
        if len(self._in_flight) >= self.max_in_flight:  # keep the pending acknowledgements bounded
            await self.flush()

    async def flush(self) -> None:
        """Wait for the broker's acknowledgement of every message sent so far; raise the first error."""
        await self.producer.flush()
        pending, self._in_flight = self._in_flight, []
        await asyncio.gather(*pending)


async def rescore(settings: Settings, kind_names: list[str], since_s: float | None = None,
                  batch: int = 256) -> dict[str, int]:
    """Replay the features of ``kind_names`` (those written at or after ``since_s``, else everything
    retained) to the end of their topics. Returns counts: replayed (decoded), predictions, rejected."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    scorer = scorer_for(settings)
    bootstrap = bootstrap_servers(settings.broker or "")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **client_kwargs(settings))
    await producer.start()
    sink = ProducerSink(producer)
    counts = {"replayed": 0, "predictions": 0, "rejected": 0}
    try:
        for name in kind_names:
            kind = kinds.by_name(name)
            topic = kind.features_topic
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                        **client_kwargs(settings))
            await consumer.start()
            try:
                parts = await topic_partitions(consumer, [topic])
                if not parts:
                    continue
                consumer.assign(parts)
                if since_s is not None:
                    ends = await consumer.end_offsets(parts)
                    found = await consumer.offsets_for_times({tp: int(since_s * 1000) for tp in parts})
                    for tp in parts:
                        consumer.seek(tp, ends[tp] if found.get(tp) is None else found[tp].offset)
                else:
                    await consumer.seek_to_beginning(*parts)
                idle = 0
                while idle < 3:
                    got = await consumer.getmany(timeout_ms=500, max_records=batch)
                    msgs = [m for ms in got.values() for m in ms]
                    idle = 0 if msgs else idle + 1
                    if not msgs:
                        if await read_to_end(consumer, parts):
                            break
                        continue
                    for outcome in await score_and_publish(scorer, kind, [m.value for m in msgs], sink,
                                                           alerts=False):
                        if outcome.prediction is not None:
                            counts["replayed"] += 1
                            counts["predictions"] += 1
                        else:
                            counts["replayed"] += (outcome.rejected or {}).get("stage") != "decode"
                            counts["rejected"] += 1
            finally:
                await consumer.stop()
        await sink.flush()  # done only once every prediction is on the broker
    finally:
        await producer.stop()
    return counts
