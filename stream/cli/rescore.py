"""`skystream rescore`: replay retained features through the current champion models.

After a promotion, subscribers get updated predictions (marked with the new model version) without
re-reading any file: the features topics are the claim-checked inputs of every prediction made.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import schemas
from stream.settings import TOPICS, Settings

FEATURE_TOPICS = {"spectrum": ("features.spectrum", "SpectrumFeatures"),
                  "lightcurve": ("features.lightcurve", "LightCurveFeatures")}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rescore", help="replay the retained features topics through the current champion models",
        description="Read the features topics (all retained messages, or those since --since) and publish a "
        "new prediction for each with the registry's current champion. Predictions carry the model version, "
        "so subscribers can tell the new answers from the old. Runs to the end of the topics and exits.",
    )
    p.add_argument("--kind", choices=sorted(FEATURE_TOPICS), action="append",
                   help="only this kind (repeatable; default all)")
    p.add_argument("--since", type=float, default=None, metavar="UNIX_SECONDS",
                   help="only features written at or after this time (default: everything retained)")
    p.add_argument("--broker", help="Kafka bootstrap servers (default: $SKYSTREAM_BROKER)")
    p.add_argument("--registry", help="model registry (default: $SKYSTREAM_REGISTRY)")
    p.set_defaults(func=cmd_rescore)


async def rescore(settings: Settings, kinds: list[str], since_s: float | None = None,
                  batch: int = 256) -> dict[str, int]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from stream.models.registry import open_registry
    from stream.runtime.kafka import bootstrap_servers, client_kwargs, read_to_end
    from stream.scoring.scorer import Scorer

    scorer = Scorer(open_registry(settings.registry))
    bootstrap = bootstrap_servers(settings.broker or "")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **client_kwargs(settings))
    await producer.start()
    counts = {"replayed": 0, "predictions": 0, "rejected": 0}
    try:
        for kind in kinds:
            topic_key, schema_name = FEATURE_TOPICS[kind]
            topic = TOPICS[topic_key]
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                        **client_kwargs(settings))
            await consumer.start()
            try:
                parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
                if not parts:
                    await consumer.stop()
                    continue
                consumer.assign(parts)
                if since_s is not None:
                    ends = await consumer.end_offsets(parts)
                    found = await consumer.offsets_for_times({tp: int(since_s * 1000) for tp in parts})
                    for tp in parts:
                        if found.get(tp) is None:
                            consumer.seek(tp, ends[tp])
                        else:
                            consumer.seek(tp, found[tp].offset)
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
                    records = []
                    for m in msgs:
                        try:
                            records.append(schemas.decode(m.value, expect=schema_name)[1])
                        except schemas.SchemaError:
                            counts["rejected"] += 1
                    counts["replayed"] += len(records)
                    for rec, res in zip(records, scorer.score(kind, records), strict=True):
                        if isinstance(res, Exception):
                            counts["rejected"] += 1
                            continue
                        await producer.send(TOPICS["predictions"], schemas.encode("Prediction", res),
                                            key=rec["file_id"].encode())
                        counts["predictions"] += 1
            finally:
                await consumer.stop()
        await producer.flush()
    finally:
        await producer.stop()
    return counts


def cmd_rescore(args: argparse.Namespace) -> int:
    settings = Settings()
    broker = args.broker or settings.broker
    if not broker:
        sys.exit("rescore: no broker configured (SKYSTREAM_BROKER or --broker)")
    import dataclasses

    settings = dataclasses.replace(settings, broker=broker, registry=args.registry or settings.registry)
    t0 = time.time()
    counts: dict[str, Any] = asyncio.run(rescore(settings, args.kind or sorted(FEATURE_TOPICS), args.since))
    print(f"rescored {counts['replayed']} feature records in {time.time() - t0:.1f} s: "
          f"{counts['predictions']} new predictions, {counts['rejected']} rejected")
    return 0
