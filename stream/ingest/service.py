"""The watcher as a service: open a source, publish its new files, follow their outcomes, survive outages.

`skystream watch` parses its arguments and calls ``run_watch``; everything a running watcher does is here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream import kinds
from stream.ingest.resolver import ResultFollower
from stream.ingest.sources import DirectorySource, Source
from stream.ingest.watcher import Ledger, PollResult, Watcher, ledger_path
from stream.runtime.kafka import bootstrap_servers, client_kwargs, ensure_topics_forever
from stream.runtime.profiles import describe, resolve_profile
from stream.runtime.retry import Stopped, retry
from stream.runtime.signals import stop_on_signals
from stream.settings import Settings

__all__ = ["open_source", "run_watch"]

log = logging.getLogger(__name__)


def open_source(uri: str, settings: Settings, settle: float = 1.0) -> Source:
    """The Source for a directory or an ``s3://bucket/prefix``; ValueError for anything else."""
    if uri.startswith("s3://"):
        from stream.ingest.s3 import S3Source

        return S3Source(uri, state_dir=settings.state_dir, settings=settings)
    path = Path(uri)
    if not path.is_dir():
        raise ValueError(f"{uri} is not a directory (or an s3://bucket/prefix)")
    return DirectorySource(path, settle_seconds=settle)


async def run_watch(settings: Settings, broker: str, source: Source, *, interval: float = 2.0,
                    once: bool = False, report: Callable[[PollResult], None] | None = None) -> None:
    """Watch ``source`` until SIGINT/SIGTERM (or one pass with ``once``): publish its new files, follow
    their outcomes, and wait out any broker outage; the watcher never exits on one."""
    stop = stop_on_signals()
    # A broker that is down (or restarting) is waited for, however long: the watcher never exits on it.
    if not await ensure_topics_forever(broker, settings, stop):
        return
    try:
        profile = await resolve_profile(broker, settings, stop)
    except Stopped:
        return
    log.info("watcher: %s", describe(profile, settings))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker), acks="all", linger_ms=5,
                                **client_kwargs(settings))
    await _start_with_backoff(producer.start, stop)
    ledger = Ledger(ledger_path(settings.state_dir, source))
    watcher = Watcher(source, lambda t, k, v: producer.send(t, v, key=k), ledger,
                      max_bytes=kinds.max_bytes(settings), republish_after=profile.republish_after(settings))
    follower = ResultFollower(ledger, broker, settings, source.name, profile=profile)

    following = None
    try:
        if once:
            result = await watcher.poll()
            if report:
                report(result)
        else:
            following = asyncio.create_task(follower.run(stop))
            await watcher.run(interval, stop, report)
    finally:
        stop.set()
        if following is not None:
            await following
        await producer.stop()
        ledger.close()
        close = getattr(source, "close", None)
        if close:  # S3 sources write their listing checkpoint here
            close()


async def _start_with_backoff(start: Callable[[], Awaitable[None]], stop: asyncio.Event,
                              max_backoff: float = 30.0) -> None:
    """Call ``start`` (a Kafka client's) until it succeeds or ``stop`` is set."""
    try:
        await retry(start, retry_on=(KafkaError, OSError), stop=stop, maximum=max_backoff,
                    what="starting the producer (broker unavailable)")
    except Stopped:
        return
