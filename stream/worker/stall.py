"""Noticing a partition that Faust stopped delivering, so that the worker can be restarted.

Faust can leave a partition unprocessed: after a rebalance or a broker reset it may keep lagging while
the agent waits for events that never come (faust-streaming has several reports of partitions that
"keep lagging"; here, once in about 20 broker restarts under load, docs/fault-tolerance.md). Nothing
from outside helps, since the files published again land on the same partition; a fresh worker
process, which reads from the committed offsets, does.

A partition is stalled when it has messages past the group's committed offset, that offset has not
moved for ``after`` seconds, and the agent that consumes its topic is idle (waiting for events). An
agent inside a batch is never stalled: each file it works on has its own time budget, and a paused
stage (storage or the registry unavailable) waits inside its batch.

The watch runs only under the tansu broker profile (stream/runtime/profiles.py): the stalls seen
followed restarts of the embedded broker (docs/embedded-broker.md defect 7).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["StallWatch"]


class StallWatch:
    """Which consumed partitions are stalled (module doc); ``after`` <= 0 turns the watch off."""

    def __init__(self, after: float) -> None:
        self.after = after
        self._busy: dict[str, int] = {}  # topic -> batches in progress
        self._since: dict[Any, tuple[int, float]] = {}  # partition -> (committed offset, since when)

    @contextlib.contextmanager
    def working(self, topic: str) -> Iterator[None]:
        """Mark the agent of ``topic`` busy with a batch while the block runs."""
        self._busy[topic] = self._busy.get(topic, 0) + 1
        try:
            yield
        finally:
            self._busy[topic] -= 1

    def stalled(self, tp: Any, committed: int | None, highwater: int | None, now: float | None = None) -> bool:
        """Whether partition ``tp`` (with ``.topic``) is stalled, given its committed offset (the next
        offset to process; None: nothing committed) and its end (None: unknown)."""
        now = time.monotonic() if now is None else now
        done = committed or 0
        if self.after <= 0 or highwater is None or done >= highwater or self._busy.get(tp.topic, 0):
            self._since.pop(tp, None)
            return False
        last = self._since.get(tp)
        if last is None or last[0] != done:
            self._since[tp] = (done, now)
            return False
        return now - last[1] >= self.after
