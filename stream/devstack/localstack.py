"""Run the whole stream on one machine: embedded broker, worker processes, and result collection.

Used by `skystream demo`, the end-to-end tests and the throughput benchmark, so all three exercise
the same processes a deployment runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

import schemas
from stream.runtime.embedded_broker import EmbeddedBroker, free_port
from stream.runtime.kafka import bootstrap_servers, ensure_topics
from stream.runtime.local_kafka import LocalKafka
from stream.settings import TOPICS, Settings, child_environment

__all__ = ["Collected", "LocalStack", "collect", "stop_process"]


class LocalStack:
    """An embedded broker (unless ``broker`` is given) plus worker and archiver subprocesses.

    Every child gets SIGTERM, then SIGKILL after a grace period, when the stack stops: no orphans.
    """

    def __init__(self, state_dir: Path, broker: str | None = None, registry: str | None = None,
                 partitions: int = 4, app_id: str | None = None, log_dir: Path | None = None,
                 archive: str | None = None, sources: str | None = None, engine: str = "tansu",
                 broker_dir: Path | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.log_dir = Path(log_dir or self.state_dir / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # The broker this stack starts when none is given: tansu (zero-install, in memory) or a durable
        # single-node Apache Kafka with its log under the state directory (stream/runtime/local_kafka.py).
        self.engine = engine
        self._embedded: EmbeddedBroker | LocalKafka | None = None
        if not broker:
            if engine == "kafka":
                self._embedded = LocalKafka(broker_dir or self.state_dir / "kafka",
                                            settings=Settings(partitions=partitions))
            else:
                self._embedded = EmbeddedBroker(log_file=self.log_dir / "broker.log")
        self._broker = broker
        self.registry = registry
        self.partitions = partitions
        # Where workers may read inputs (SKYSTREAM_SOURCES): given, else the environment's, else the
        # directory that holds the stack's state (the demo's work directory, a test's tmp_path).
        self.sources = sources or Settings().sources or str(self.state_dir.resolve().parent)
        self.app_id = app_id or f"skystream-{os.getpid()}-{int(time.time())}"
        self.archive = archive
        self.workers: list[subprocess.Popen[bytes]] = []
        self.archivers: list[subprocess.Popen[bytes]] = []
        self.worker_metrics_ports: list[int] = []

    @property
    def broker(self) -> str:
        """The bootstrap servers: the given broker or the embedded one."""
        return self._broker or self._embedded.bootstrap  # type: ignore[union-attr]

    def env(self) -> dict[str, str]:
        """The workers' environment: this process's, with the stack's settings."""
        return child_environment(self.settings())

    @property
    def broker_pid(self) -> int | None:
        """The embedded broker's process id (None for an external broker)."""
        if isinstance(self._embedded, LocalKafka):
            return next(iter(self._embedded.pids()), None)
        proc = self._embedded.proc if self._embedded else None
        return proc.pid if proc else None

    def broker_log_bytes(self) -> int | None:
        """Bytes of the started Kafka's log on disk (None for tansu or an external broker)."""
        return self._embedded.log_bytes() if isinstance(self._embedded, LocalKafka) else None

    def settings(self) -> Settings:
        """Settings pointing at this stack's broker, state, archive, sources and registry."""
        engine = self.engine if self._embedded else Settings().broker_engine
        return Settings(broker=self.broker, broker_engine=engine, state_dir=self.state_dir, partitions=self.partitions,
                        app_id=self.app_id, archive=self.archive, sources=self.sources,
                        **({"registry": self.registry} if self.registry else {}))

    def start(self) -> LocalStack:
        """Start the embedded broker (if any) and create the topics; return self."""
        if self._embedded:
            self._embedded.start()
        asyncio.run(ensure_topics(self.broker, self.settings()))
        return self

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start a `skystream worker` process with its own metrics port and log file."""
        port = free_port()
        log = open(self.log_dir / f"worker-{len(self.workers)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker", "--metrics-port", str(port)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.workers.append(proc)
        self.worker_metrics_ports.append(port)
        return proc

    def start_archiver(self, batch_seconds: float = 2.0) -> subprocess.Popen[bytes]:
        """`skystream archive` beside the workers (its own consumer group), writing to
        ``archive_uri(self.settings())``; it drains the topics and flushes when the stack stops."""
        log = open(self.log_dir / f"archiver-{len(self.archivers)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "archive", "--batch-seconds", str(batch_seconds)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.archivers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> int:
        """Stop a process with SIGTERM, killing it after ``grace`` seconds; return its exit code."""
        return stop_process(proc, grace)

    def assigned(self, port: int, topic: str = TOPICS["files"]) -> float:
        """Partitions of ``topic`` the worker behind metrics ``port`` owns now (0 if not up yet)."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("skystream_assigned_partitions{") and f'topic="{topic}"' in line:
                return float(line.rpartition(" ")[2])
        return 0.0

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Block until the running workers together own every partition of the files topic (the
        group has settled); return the seconds it took."""
        t0 = time.monotonic()
        while True:
            live = [p for proc, p in zip(self.workers, self.worker_metrics_ports, strict=True) if proc.poll() is None]
            counts = [self.assigned(p) for p in live]
            if live and all(c > 0 for c in counts) and sum(counts) >= self.partitions:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"workers did not own all {self.partitions} partitions within {timeout:.0f} s "
                                   f"(logs in {self.log_dir})")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop every worker and archiver, then the embedded broker."""
        # Workers first, archivers after: an archiver reads what the workers wrote last before it exits.
        for proc in self.workers + self.archivers:
            with contextlib.suppress(Exception):
                self.stop_worker(proc)
        if self._embedded:
            self._embedded.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Collected:
    """What came out of the stream, keyed the way subscribers see it."""

    predictions: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    received_at: dict[str, float] = field(default_factory=dict)  # prediction_id -> first arrival (unix s)

    def outcomes(self) -> set[str]:
        """URIs (or file ids) that have a final outcome: a prediction or a dead letter."""
        return {p["source"] for p in self.predictions} | {r["uri"] or r["file_id"] or "" for r in self.rejected}


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> int:
    """SIGTERM ``proc``, SIGKILL it after ``grace`` seconds; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def collect(broker: str, until: Callable[[Collected], bool], timeout: float,
                  on_message: Callable[[str, dict[str, Any]], None] | None = None,
                  settings: Settings | None = None) -> Collected:
    """Read predictions, alerts and dead letters from the start of their topics until ``until`` is true."""
    from stream.runtime.kafka import client_kwargs

    consumer = AIOKafkaConsumer(
        TOPICS["predictions"], TOPICS["alerts"], TOPICS["rejected"],
        bootstrap_servers=bootstrap_servers(broker), auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, **client_kwargs(settings or Settings()),
    )
    await consumer.start()
    out = Collected()
    deadline = time.monotonic() + timeout
    try:
        while not until(out) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            now = time.time()
            for msgs in batches.values():
                for m in msgs:
                    try:
                        name, rec = schemas.decode(m.value)
                    except schemas.SchemaError:
                        continue
                    if name == "Prediction":
                        out.predictions.append(rec)
                        out.received_at.setdefault(rec["prediction_id"], now)
                    elif name == "Alert":
                        out.alerts.append(rec)
                    elif name == "Rejected":
                        out.rejected.append(rec)
                    if on_message:
                        on_message(name, rec)
    finally:
        await consumer.stop()
    return out
