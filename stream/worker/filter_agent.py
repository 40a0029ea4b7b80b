"""The filter agent's worker side: reload the filters file, create filter topics, send the matches.

The decisions (which alert matches which filter) are the pure functions of stream/alerts/filters.py;
this module only connects them to Kafka and to the metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from stream.alerts.filters import FILTER_TOPIC_PREFIX, FilterFile, route_alerts
from stream.runtime import metrics
from stream.runtime.kafka import ensure_topics
from stream.settings import Settings

__all__ = ["POLL_SECONDS", "FilterRouter"]

log = logging.getLogger(__name__)

# How often a worker looks at the filters file's mtime: an edit is in force within a few seconds.
POLL_SECONDS = 2.0

Send = Callable[[str, bytes | None, bytes], Awaitable[object]]


class FilterRouter:
    """The filters of one worker, loaded at once: ``poll`` reloads them when the file changed (a bad
    version is refused and the previous filters keep running) and creates their topics; ``route``
    publishes a batch's matches on the filter topics."""

    def __init__(self, path: str | Path, settings: Settings) -> None:
        self.file = FilterFile(path)
        self.settings = settings
        self._created: set[str] = set()
        self._count(self.file.reload_if_changed())

    def _count(self, outcome: bool | None) -> None:
        if outcome is not None:
            metrics.FILTER_RELOADS.labels("loaded" if outcome else "refused").inc()
            metrics.FILTERS_ACTIVE.set(len(self.file.filters))

    async def poll(self) -> None:
        """Reload the filter file if it changed and create the topics of new filters."""
        self._count(await asyncio.to_thread(self.file.reload_if_changed))
        await self._create_topics()

    async def _create_topics(self) -> None:
        missing = {f.topic for f in self.file.filters.values()} - self._created
        if not missing or not self.settings.broker:
            return
        try:
            await ensure_topics(self.settings.broker, self.settings, timeout=5.0, extra=sorted(missing))
        except Exception as exc:  # broker unreachable now: retried on the next batch
            log.warning("cannot create filter topics %s yet: %s", ", ".join(sorted(missing)), exc)
            return
        self._created |= missing

    async def route(self, messages: Iterable[tuple[bytes | None, bytes]], send: Send) -> int:
        """Send every match of a batch of (key, value) alert messages; return how many were sent."""
        filters = self.file.filters
        if not filters:
            return 0
        await self._create_topics()
        sent = route_alerts(filters, messages)
        for topic, key, value in sent:
            await send(topic, key, value)
            metrics.FILTER_MATCHES.labels(topic.removeprefix(FILTER_TOPIC_PREFIX)).inc()
        return len(sent)
