"""Score and publish: features messages -> predictions, alerts and dead letters, handed to a sink.

The one path from features to outputs. The worker's score agents (a sink on Faust topics),
`skystream score` (a sink that collects) and `skystream rescore` (a sink on a Kafka producer) all
call ``score_and_publish``, so the same features and model version give the same prediction (same
prediction_id, same TOI match), the same dead letters and the same metrics everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import schemas
from stream.alerts.policy import alerts_for
from stream.errors import Rejected
from stream.kinds import Kind
from stream.runtime.deadletters import rejected_record
from stream.runtime.metrics import ALERTS, END_TO_END_LATENCY, MESSAGES_PROCESSED, STAGE_LATENCY
from stream.scoring.scorer import Scorer
from stream.settings import TOPICS

__all__ = ["CollectingSink", "Outcome", "Sink", "score_and_publish", "send_dead_letter"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where outputs go: a Kafka topic (by name), a message key and the Avro bytes.

    ``send`` may return before the message is delivered; ``flush`` returns only once everything sent
    so far is (raising, or ending the process, when it cannot be). A caller commits its inputs only
    after a flush: consume → score → produce → flush → commit is what makes delivery at-least-once.
    """

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one message to ``topic``; implementations may buffer until a flush."""

    async def flush(self) -> None:
        """Wait until every message sent so far is delivered."""


@dataclass
class CollectingSink:
    """A sink that keeps what it is sent, in order (offline scoring, tests)."""

    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Keep the message in ``sent``."""
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        """Nothing to wait for: ``sent`` already holds every message."""


@dataclass
class Outcome:
    """What became of one features message: its prediction, or the dead letter that explains why not."""

    prediction: dict[str, Any] | None = None
    rejected: dict[str, Any] | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)


async def send_dead_letter(sink: Sink, stage: str, exc: BaseException, **ref: Any) -> dict[str, Any]:
    """Send one Rejected message (stage, reason, input reference) and return its record."""
    record = rejected_record(stage, exc, **ref)
    key = (ref.get("file_id") or ref.get("uri") or "").encode()
    await sink.send(TOPICS["rejected"], key, schemas.encode("Rejected", record))
    return record


async def score_and_publish(scorer: Scorer, kind: Kind, messages: Sequence[bytes], sink: Sink, *,
                            alerts: bool = True) -> list[Outcome]:
    """Decode a batch of ``kind``'s features messages, score them in one call, send the outcomes.

    One Outcome per message, in order. An undecodable message or a record the model refuses becomes a
    dead letter and the rest of the batch goes on; ``Unavailable`` (no model can serve now) is raised
    before anything is sent. ``alerts=False`` sends predictions only (offline
    scoring and replays do not alert subscribers again).
    """
    t0 = time.perf_counter()
    # The model first, before anything is sent: without one (registry unreachable, no champion yet)
    # this raises Unavailable and the caller retries the whole batch later, nothing dead-lettered.
    # Loading reads the registry (maybe S3, maybe down): off the event loop, which must heartbeat.
    if scorer.serving(kind.task) is None:
        await asyncio.to_thread(scorer.model, kind.task)
    outcomes = [Outcome() for _ in messages]
    decoded: list[tuple[int, dict[str, Any], bytes]] = []
    for i, raw in enumerate(messages):
        try:
            decoded.append((i, schemas.decode(raw, expect=kind.features_schema)[1], raw))
        except schemas.SchemaError as exc:
            outcomes[i].rejected = await send_dead_letter(sink, "decode", Rejected("bad-message", str(exc)),
                                                          topic=kind.features_topic, payload=raw)
            MESSAGES_PROCESSED.labels(agent="score", outcome="rejected").inc()
    if not decoded:
        return outcomes
    records = [rec for _, rec, _ in decoded]
    try:
        # Light-curve predictions take longer: keep them off the event loop, which must heartbeat.
        results: list[Any] = (await asyncio.to_thread(scorer.score, kind.name, records) if kind.slow
                              else scorer.score(kind.name, records))
    except Exception as exc:  # e.g. no model in the registry: every record is a dead letter
        if isinstance(exc, Rejected):
            log.warning("scoring a batch of %d %s records failed: %s", len(records), kind.name, exc)
        else:
            log.exception("scoring batch failed")
        results = [exc] * len(records)
    now = time.time()
    for (i, rec, raw), res in zip(decoded, results, strict=True):
        ref = {"uri": rec["uri"], "file_id": rec["file_id"], "topic": kind.features_topic}
        if isinstance(res, BaseException):
            outcomes[i].rejected = await send_dead_letter(sink, "score", res, payload=raw, **ref)
            MESSAGES_PROCESSED.labels(agent="score", outcome="rejected").inc()
            continue
        key = rec["file_id"].encode()
        await sink.send(TOPICS["predictions"], key, schemas.encode("Prediction", res))
        outcomes[i].prediction = res
        END_TO_END_LATENCY.labels(kind=kind.name).observe(max(0.0, now - res["detected_at_ms"] / 1000))
        MESSAGES_PROCESSED.labels(agent="score", outcome="ok").inc()
        if not alerts:
            continue
        try:
            # Transit alerts draw a figure from the file (seconds): keep it off the event loop.
            found = (await asyncio.to_thread(alerts_for, res, scorer.settings) if kind.slow
                     else alerts_for(res, scorer.settings))
            for alert in found:
                await sink.send(TOPICS["alerts"], key, schemas.encode("Alert", alert))
                ALERTS.labels(task=kind.task, reason=alert["reason"]).inc()
                outcomes[i].alerts.append(alert)
        except Exception as exc:
            await send_dead_letter(sink, "alert", exc, **ref)
    STAGE_LATENCY.labels(stage="score").observe((time.perf_counter() - t0) / max(1, len(records)))
    return outcomes
