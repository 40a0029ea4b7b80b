"""One way to stop on SIGINT/SIGTERM: every long-running command ends cleanly on Ctrl-C or on the
SIGTERM of its service manager (systemd, Docker, Kubernetes), writing what it holds before it exits."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

__all__ = ["STOP_SIGNALS", "stop_on_signals", "wait_for_stop_signal"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals(loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Event:
    """An event set on SIGINT or SIGTERM (from then on, in ``loop``, by default the running one).

    The signals no longer raise KeyboardInterrupt or kill the process: the caller ends its work when
    the event is set, e.g. by passing it to ``stream.runtime.retry`` waits."""
    loop = loop or asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    return stop


def wait_for_stop_signal(alive: Callable[[], bool] | None = None, check_every: float = 0.5) -> int | None:
    """Block (in synchronous code, the main thread) until SIGINT or SIGTERM; the signal's number. With
    ``alive``, also return None as soon as it answers False (a broker process that died).

    The previous handlers are put back before returning."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        """Note the signal: the wait below ends."""
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        while not received:
            if alive is None:
                signal.pause()
            elif not alive():
                return None
            else:
                time.sleep(check_every)  # a signal ends the sleep early
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0] if received else None
