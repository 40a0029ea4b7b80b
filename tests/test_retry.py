"""The one backoff (stream/runtime/retry.py) and stop-signal helper (stream/runtime/signals.py), with real
asyncio and short delays."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from stream.runtime.retry import Backoff, Stopped, retry
from stream.runtime.signals import stop_on_signals, wait_for_stop_signal


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    async def run() -> list[float]:
        backoff = Backoff(first=0.01, maximum=0.04)
        slept = []
        for _ in range(5):
            t0 = time.monotonic()
            assert await backoff.wait() is True
            slept.append(time.monotonic() - t0)
        assert backoff.delay == 0.04
        backoff.reset()
        assert backoff.delay == 0.01
        return slept

    slept = asyncio.run(run())
    for took, planned in zip(slept, [0.01, 0.02, 0.04, 0.04, 0.04], strict=True):
        assert planned <= took < planned + 0.05, slept


def test_a_set_stop_ends_the_wait_early() -> None:
    async def run() -> tuple[bool, float, bool]:
        stop = asyncio.Event()
        backoff = Backoff(first=5.0, maximum=5.0)
        asyncio.get_running_loop().call_later(0.05, stop.set)
        t0 = time.monotonic()
        went_on = await backoff.wait(stop)
        took = time.monotonic() - t0
        return went_on, took, await backoff.wait(stop)  # already set: no wait at all

    went_on, took, again = asyncio.run(run())
    assert not went_on and not again
    assert took < 1.0


def test_retry_until_it_works_with_growing_pauses() -> None:
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise ConnectionError("not yet")
        return "ok"

    assert asyncio.run(retry(flaky, retry_on=ConnectionError, what="flaky", first=0.02, maximum=0.05)) == "ok"
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    for gap, planned in zip(gaps, [0.02, 0.04, 0.05], strict=True):
        assert planned <= gap < planned + 0.05, gaps


def test_retry_raises_other_errors_at_once_and_gives_up_after_its_timeout() -> None:
    async def wrong() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        asyncio.run(retry(wrong, retry_on=ConnectionError, first=0.01))

    async def down() -> None:
        raise ConnectionError("down")

    t0 = time.monotonic()
    with pytest.raises(ConnectionError):
        asyncio.run(retry(down, retry_on=ConnectionError, first=0.02, maximum=0.02, timeout=0.1))
    assert time.monotonic() - t0 < 1.0


def test_retry_stops_when_stop_is_set() -> None:
    async def run() -> None:
        stop = asyncio.Event()

        async def down() -> None:
            raise ConnectionError("down")

        asyncio.get_running_loop().call_later(0.05, stop.set)
        await retry(down, retry_on=ConnectionError, stop=stop, first=10.0, maximum=10.0)

    t0 = time.monotonic()
    with pytest.raises(Stopped):
        asyncio.run(run())
    assert time.monotonic() - t0 < 2.0


def test_sigterm_sets_the_stop_event() -> None:
    async def run() -> bool:
        stop = stop_on_signals()
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
        return stop.is_set()

    assert asyncio.run(run())


def test_the_blocking_wait_ends_on_sigterm_or_when_alive_says_no() -> None:
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    before = signal.getsignal(signal.SIGTERM)
    assert wait_for_stop_signal(lambda: True, 0.05) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
    assert wait_for_stop_signal(lambda: False) is None
