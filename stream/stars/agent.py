"""The stars stage's per-event logic, as plain functions the worker's agents call (stream/worker/app.py).

``send_sectors`` runs in the light-curve score agent, inside its batch: each scored sector goes to
``skystream.stars`` before the batch is flushed and committed. ``on_sector`` runs in the stars agent,
one event at a time: state read -> search -> prediction and alerts sent; the agent then flushes them
and only then writes the new state (and waits for its changelog), before the event is committed. A
worker that dies on the way replays the event against a state that lacks the sector (the search runs
again and sends the same prediction and alerts) or, if it died after the state was on the broker,
has it (its outputs were delivered before: nothing more is sent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import schemas
from stream.errors import Rejected
from stream.runtime.metrics import ALERTS, MESSAGES_PROCESSED, STAGE_LATENCY
from stream.scoring.publish import Outcome, Sink, send_dead_letter
from stream.scoring.scorer import Scorer
from stream.settings import TOPICS
from stream.stars.search import search_star
from stream.stars.state import add_sector, empty_state, sector_message

__all__ = ["on_sector", "send_sectors"]

log = logging.getLogger(__name__)


async def send_sectors(messages: Sequence[bytes], outcomes: Sequence[Outcome], sink: Sink) -> int:
    """Send the StarSector message of every scored one-sector light curve of a batch; how many were sent."""
    sent = 0
    for raw, outcome in zip(messages, outcomes, strict=True):
        if outcome.prediction is None:
            continue
        message = sector_message(outcome.prediction, raw, outcome.alerts)
        if message is not None:
            await sink.send(TOPICS["stars"], str(outcome.prediction["tic_id"]).encode(), message)
            sent += 1
    return sent


async def on_sector(key: bytes, value: bytes, table: Mapping[bytes, bytes], scorer: Scorer, sink: Sink
                    ) -> bytes | None:
    """One StarSector event: add it to the star's state and, with two sectors or more, search them all and
    send the multi-sector prediction and alerts. Returns the star's new StarState message for the caller
    to write once the outputs are delivered (None: nothing changed). A message that cannot be read is a
    dead letter."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        _, record = schemas.decode(value, expect="StarSector")
        stored = table.get(key)
        state = schemas.decode(stored, expect="StarState")[1] if stored else empty_state(record["tic_id"])
        state, changed = add_sector(state, value)
    except (schemas.SchemaError, Rejected, KeyError, ValueError) as exc:
        # Stage "score": the star's search is scoring, and Rejected's Stage enum has no default to grow by.
        await send_dead_letter(sink, "score", exc if isinstance(exc, Rejected) else Rejected("bad-message", str(exc)),
                               topic=TOPICS["stars"], payload=value)
        MESSAGES_PROCESSED.labels(agent="stars", outcome="rejected").inc()
        return None
    if not changed:  # a replay of a sector already in the state: its outputs were sent with it
        return None
    model = scorer.serving("tess") or await asyncio.to_thread(scorer.model, "tess")  # Unavailable: retried
    try:
        result = await asyncio.to_thread(search_star, state, model, scorer.toi)
    except Exception as exc:  # a search that fails must not lose the sector: keep it, say why
        log.exception("multi-sector search of TIC %s failed", record["tic_id"])
        await send_dead_letter(sink, "score", exc if isinstance(exc, Rejected) else Rejected(
            "search-failed", f"{type(exc).__name__}: {exc}"), file_id=record["file_id"], topic=TOPICS["stars"])
        result = None
    if result is not None:
        prediction_key = result.prediction["file_id"].encode()
        await sink.send(TOPICS["predictions"], prediction_key, schemas.encode("Prediction", result.prediction))
        for alert in result.alerts:
            await sink.send(TOPICS["alerts"], prediction_key, schemas.encode("Alert", alert))
            ALERTS.labels(task="tess", reason=alert["reason"]).inc()
        state = result.state
    MESSAGES_PROCESSED.labels(agent="stars", outcome="ok").inc()
    STAGE_LATENCY.labels(stage="stars").observe(loop.time() - t0)
    return schemas.encode("StarState", state)
