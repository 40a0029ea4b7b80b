"""One way to wait and try again: an exponential backoff that a stop event cuts short.

Every long-running process (watcher, results follower, worker supervisor, the worker's agents) must
wait out a broker, storage or registry outage of any length without busy-looping and without
ignoring SIGTERM meanwhile. They all use ``Backoff`` (the delays 1, 2, 4, ... up to a cap, reset
after a success) or ``retry`` (a call repeated under a Backoff), so the delays and the way a stop
ends a wait are the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Backoff", "Stopped", "retry", "sleep_unless_stopped"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stopped(Exception):
    """``retry`` gave up because its stop event was set (the process is shutting down)."""


async def sleep_unless_stopped(seconds: float, stop: asyncio.Event | None = None) -> bool:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile; whether to go on (``stop`` not set).

    A plain ``asyncio.sleep`` would hold a SIGTERM for up to the whole delay (30 s at the cap)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return True
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return not stop.is_set()


class Backoff:
    """Delays that double from ``first`` to ``maximum`` seconds: ``wait`` sleeps the current one and
    doubles it, ``reset`` (after a success) starts again from ``first``."""

    def __init__(self, first: float = 1.0, maximum: float = 30.0) -> None:
        if first <= 0 or maximum < first:
            raise ValueError(f"a backoff needs 0 < first <= maximum (got {first}, {maximum})")
        self.first = first
        self.maximum = maximum
        self.delay = first  # what the next ``wait`` sleeps (for log messages)

    def reset(self) -> None:
        """Start again from ``first`` (the thing waited for worked)."""
        self.delay = self.first

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Sleep the current delay (less if ``stop`` is set meanwhile), then double it up to the cap;
        whether to go on (``stop`` not set)."""
        delay, self.delay = self.delay, min(self.maximum, self.delay * 2)
        return await sleep_unless_stopped(delay, stop)


async def retry(call: Callable[[], Awaitable[T]], *,
                retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                stop: asyncio.Event | None = None, what: str = "the call", first: float = 1.0,
                maximum: float = 30.0, timeout: float | None = None, level: int = logging.WARNING) -> T:
    """``await call()`` until it returns, waiting under a ``Backoff(first, maximum)`` after each
    ``retry_on`` error (logged at ``level`` with ``what``).

    Raises ``Stopped`` once ``stop`` is set, and the last error when it fails after ``timeout``
    seconds (None: never gives up). Any other exception propagates at once.
    """
    backoff = Backoff(first, maximum)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if stop is not None and stop.is_set():
            raise Stopped(what)
        try:
            return await call()
        except retry_on as exc:
            if isinstance(exc, Stopped) or (deadline is not None and time.monotonic() > deadline):
                raise
            log.log(level, "%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, backoff.delay)
            if not await backoff.wait(stop):
                raise Stopped(what) from exc
