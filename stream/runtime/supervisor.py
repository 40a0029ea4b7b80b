"""`skystream worker` as a supervisor: the Faust worker runs as a child process that is restarted when
it cannot go on by itself.

Faust does not recover from a broker that lost its state: it keeps, per partition, the offset it read
last and silently drops every message below it ("DROPPED MESSAGE ROFF" in faust/transport/consumer.py),
so against a restarted memory broker (or a wiped Kafka) whose new topics start again at offset 0 a
worker may consume nothing until its offsets catch up. A fresh process has no such memory. So the
parent watches:

- the broker: a new cluster id, or SkyStream topics missing, or unreachable for ``outage_restart``
  seconds → SIGKILL the child at once, wait for the broker, re-create the topics, start a new child.
  At once and without a graceful stop: a Faust worker that has rejoined the new broker's group commits
  offsets there past the messages it dropped, and those would be lost. Killing it loses nothing: what
  it had not committed is replayed (at-least-once, idempotent results);
- the child: it exited → restart it, with a backoff that grows while it keeps failing.

The parent never exits on an outage, only on SIGTERM/SIGINT (passed on to the child). The child gets
the same /metrics port every time, and is SIGKILLed if the parent dies (no orphan keeps the port).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import subprocess
import time
from collections.abc import Sequence

from stream.runtime.kafka import ClusterState, cluster_state, ensure_topics_forever
from stream.settings import Settings

__all__ = ["EXIT_OTHER_CLUSTER", "EXIT_STALLED", "Supervisor", "supervise_worker"]

log = logging.getLogger(__name__)

# The child's exit code when it finds the broker is another cluster than the one it started on
# (stream/runtime/faust_transport.py): a broker reset, restarted at once like one seen from here.
EXIT_OTHER_CLUSTER = 76
# The child's exit code when one of its partitions stalled (stream/runtime/stall.py): restarted as any exit.
EXIT_STALLED = 77


def _killed_with_parent() -> None:
    # Linux: SIGKILL the child if the supervisor dies, so a `kill -9` of `skystream worker` stops it all.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Supervisor:
    """Runs ``child_argv`` and restarts it as described in the module doc, until SIGTERM/SIGINT."""

    def __init__(self, child_argv: Sequence[str], broker: str, settings: Settings, check_interval: float = 1.0,
                 outage_restart: float = 3.0, max_backoff: float = 30.0, stop_grace: float = 15.0) -> None:
        self.child_argv = list(child_argv)
        self.broker = broker
        self.settings = settings
        self.check_interval = check_interval
        self.outage_restart = outage_restart
        self.max_backoff = max_backoff
        self.stop_grace = stop_grace
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def run(self) -> int:
        """Run the supervised child until SIGTERM/SIGINT; return the exit code."""
        return asyncio.run(self._run())

    async def _run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        backoff = 1.0
        try:
            while not stop.is_set():
                if not await ensure_topics_forever(self.broker, self.settings, stop):
                    break
                cluster = await cluster_state(self.broker, self.settings)
                started = time.monotonic()
                self._start_child()
                why, exited = await self._watch(cluster, stop)
                if stop.is_set():
                    break
                self._kill_child()
                self.restarts += 1
                if not exited:  # the broker is why: restart as soon as it is back (the loop waits for it)
                    log.warning("worker child: %s; restarting it", why)
                    continue
                # A child that ran a good while gets restarted at once; one that keeps failing, less often.
                backoff = 1.0 if time.monotonic() - started > 60 else min(self.max_backoff, backoff * 2)
                log.warning("worker child: %s; restarting it in %.0f s", why, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
        finally:
            await asyncio.to_thread(self._stop_child)
        return 0

    async def _watch(self, cluster: ClusterState | None, stop: asyncio.Event) -> tuple[str, bool]:
        """Wait until the child must be restarted or ``stop`` is set: (why, whether the child exited)."""
        known_id = cluster.cluster_id if cluster else None
        unreachable_since: float | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.check_interval)
            if stop.is_set():
                break
            assert self.child is not None
            if (code := self.child.poll()) is not None:
                if code == EXIT_OTHER_CLUSTER:  # the child found the broker reset before we did
                    return "the broker lost its state (the worker found another cluster id)", False
                return f"exited with code {code}", True
            state = await cluster_state(self.broker, self.settings, timeout=max(2.0, self.check_interval))
            if state is None:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since >= self.outage_restart:
                    return f"the broker is unreachable (for {time.monotonic() - unreachable_since:.0f} s)", False
                continue
            unreachable_since = None
            if known_id is None:
                known_id = state.cluster_id
            elif state.cluster_id and state.cluster_id != known_id:
                return f"the broker lost its state (cluster id {known_id} -> {state.cluster_id})", False
            if state.missing_topics:
                return f"the broker lost its topics ({', '.join(sorted(state.missing_topics))})", False
        return "stopping", False

    def _start_child(self) -> None:
        self.child = subprocess.Popen(self.child_argv, stdin=subprocess.DEVNULL, preexec_fn=_killed_with_parent)

    def _kill_child(self) -> None:
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()

    def _stop_child(self, grace: float | None = None) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(self.stop_grace if grace is None else grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def supervise_worker(settings: Settings, broker: str, metrics_port: int = 0, loglevel: str = "warning",
                     verbose: bool = False) -> int:
    """Run `skystream worker --child` under a Supervisor until SIGINT/SIGTERM; returns the exit code."""
    import os
    import sys

    from stream.runtime.embedded_broker import free_port

    # One port for every child, so /metrics stays where it was announced.
    port = metrics_port or free_port("0.0.0.0")
    argv = [sys.executable, "-m", "stream.cli", *(["-v"] if verbose else []), "worker", "--child",
            "--broker", broker, "--metrics-port", str(port), "--loglevel", loglevel]
    print(f"worker supervisor {os.getpid()}: metrics on :{port}", file=sys.stderr, flush=True)
    return Supervisor(argv, broker, settings).run()

