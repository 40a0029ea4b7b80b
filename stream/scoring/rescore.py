"""Replay the retained features topics through the current champions (`skystream rescore`).

After a promotion, subscribers get updated predictions (marked with the new model version) without
re-reading any file: the features topics are the claim-checked inputs of every prediction made.
Replayed features go through the same ``score_and_publish`` as the workers' (same TOI matching, same
dead letters); replays send predictions only, not alerts again.
"""

from __future__ import annotations

from typing import Any

from stream import kinds
from stream.runtime.kafka import bootstrap_servers, client_kwargs, read_to_end
from stream.scoring.publish import score_and_publish
from stream.scoring.scorer import scorer_for
from stream.settings import Settings

__all__ = ["ProducerSink", "rescore"]


class ProducerSink:
    """A sink on an aiokafka producer."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send the message with the Kafka producer (without waiting for delivery)."""
        await self.producer.send(topic, value, key=key)


async def rescore(settings: Settings, kind_names: list[str], since_s: float | None = None,
                  batch: int = 256) -> dict[str, int]:
    """Replay the features of ``kind_names`` (those written at or after ``since_s``, else everything
    retained) to the end of their topics. Returns counts: replayed (decoded), predictions, rejected."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

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
                parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
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
        await producer.flush()
    finally:
        await producer.stop()
    return counts
