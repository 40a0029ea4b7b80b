"""`skystream worker` as a supervisor: the Faust worker runs as a child process that is restarted when
it cannot go on by itself.

On every broker, the child is restarted when it exits (stream/worker/exits.py says why it may), with
a backoff that grows while it keeps failing. That is all it does against Apache Kafka (the kafka
broker profile, stream/runtime/profiles.py), whose consumer groups handle broker restarts.

Against the embedded tansu broker it also watches the broker (profile ``watch_broker``). Faust does
not recover from a broker that lost its state: it keeps, per partition, the offset it read last and
silently drops every message below it ("DROPPED MESSAGE ROFF" in faust/transport/consumer.py), so
against a restarted memory broker whose new topics start again at offset 0 a worker may consume
nothing until its offsets catch up. A fresh process has no such memory. So the parent polls the
broker every second: a new cluster id, or SkyStream topics missing, or unreachable for
``outage_restart`` seconds → SIGKILL the child at once, wait for the broker, re-create the topics,
start a new child. At once and without a graceful stop: a Faust worker that has rejoined the new
broker's group commits offsets there past the messages it dropped, and those would be lost. Killing
it loses nothing: what it had not committed is replayed (at-least-once, idempotent results).

The parent never exits on an outage, only on SIGTERM/SIGINT (passed on to the child). The child gets
the same /metrics port every time and the parent's broker profile, and is SIGKILLed if the parent
dies (no orphan keeps the port).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import signal
import subprocess
import time
from collections.abc import Sequence

from stream.runtime.kafka import ClusterState, cluster_state, ensure_topics_forever
from stream.runtime.profiles import BrokerProfile, describe, resolve_profile
from stream.runtime.retry import Backoff, Stopped, sleep_unless_stopped
from stream.runtime.signals import stop_on_signals
from stream.settings import Settings, child_environment
from stream.worker.exits import EXIT_OTHER_CLUSTER

__all__ = ["Supervisor", "supervise_worker"]

log = logging.getLogger(__name__)


def _killed_with_parent() -> None:
    # Linux: SIGKILL the child if the supervisor dies, so a `kill -9` of `skystream worker` stops it all.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Supervisor:
    """Runs ``child_argv`` and restarts it as described in the module doc, until SIGTERM/SIGINT.

    ``profile`` None: the one ``settings.broker_engine`` names or the broker tells, found at start."""

    def __init__(self, child_argv: Sequence[str], broker: str, settings: Settings, check_interval: float = 1.0,
                 outage_restart: float = 3.0, max_backoff: float = 30.0, stop_grace: float = 15.0,
                 profile: BrokerProfile | None = None) -> None:
        self.child_argv = list(child_argv)
        self.broker = broker
        self.settings = settings
        self.check_interval = check_interval
        self.outage_restart = outage_restart
        self.max_backoff = max_backoff
        self.stop_grace = stop_grace
        self.profile = profile
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def run(self) -> int:
        """Run the supervised child until SIGTERM/SIGINT; return the exit code."""
        return asyncio.run(self._run())

    async def _run(self) -> int:
        stop = stop_on_signals()
        backoff = Backoff(1.0, self.max_backoff)
        try:
            if self.profile is None:
                try:
                    self.profile = await resolve_profile(self.broker, self.settings, stop)
                except Stopped:
                    return 0
            log.info("worker supervisor: %s", describe(self.profile, self.settings))
            while not stop.is_set():
                if not await ensure_topics_forever(self.broker, self.settings, stop):
                    break
                cluster = None
                if self.profile.watch_broker:  # tansu only (docs/embedded-broker.md defect 7)
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
                if time.monotonic() - started > 60:
                    backoff.reset()
                log.warning("worker child: %s; restarting it in %.0f s", why, backoff.delay)
                await backoff.wait(stop)
        finally:
            await asyncio.to_thread(self._stop_child)
        return 0

    async def _watch(self, cluster: ClusterState | None, stop: asyncio.Event) -> tuple[str, bool]:
        """Wait until the child must be restarted or ``stop`` is set: (why, whether the child exited)."""
        assert self.profile is not None
        known_id = cluster.cluster_id if cluster else None
        unreachable_since: float | None = None
        while await sleep_unless_stopped(self.check_interval, stop):
            assert self.child is not None
            if (code := self.child.poll()) is not None:
                if code == EXIT_OTHER_CLUSTER:  # the child found the broker reset before we did
                    return "the broker lost its state (the worker found another cluster id)", False
                return f"exited with code {code}", True
            if not self.profile.watch_broker:
                continue
            # tansu only (docs/embedded-broker.md defect 7): a memory broker restarts empty.
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
        assert self.profile is not None
        # The child runs under the profile found here (no second guess, the same in its log).
        env = child_environment(dataclasses.replace(self.settings, broker_engine=self.profile.name))
        self.child = subprocess.Popen(self.child_argv, stdin=subprocess.DEVNULL, env=env,
                                      preexec_fn=_killed_with_parent)

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
