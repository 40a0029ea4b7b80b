"""The separate processes of a one-machine deployment, as the fault tests drive them (imported as a plain
module: tests/ is on sys.path).

Every process is started by the `skystream` CLI as an operator would (`worker`, `watch`); files arrive
in the watched directory by rename, at a steady pace from a thread, so that a fault is injected while
files are still arriving. The watcher's ledger says which files are resolved (their prediction or dead
letter was seen); a Recorder reads every prediction from the topics across broker outages.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from helpers import process_gone, wait_until

from stream.devstack.localstack import Collected, collect, stop_process
from stream.models.registry import BUNDLED
from stream.runtime.embedded_broker import free_port
from stream.settings import Settings, child_environment

__all__ = ["CliBrokerStack", "Recorder", "Stack", "assert_predicted_alike", "assert_same_answers", "file_ids",
           "start_mid_stream", "wait_recorded", "wait_resolved"]


class Stack:
    """Workers and a watcher on ``broker``, each a `skystream` process with its log in ``tmp/logs``."""

    def __init__(self, tmp: Path, broker: str, **settings: object) -> None:
        self.tmp = tmp
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        self.staging = tmp / "staging"
        self.staging.mkdir()
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.state = tmp / "state"
        self.registry = tmp / "registry"
        shutil.copytree(BUNDLED, self.registry)
        self.broker = broker
        self.settings = Settings(broker=broker, state_dir=self.state, registry=str(self.registry), partitions=4,
                                 app_id=f"faults-{os.getpid()}-{free_port()}", sources=str(self.inbox),
                                 **settings)  # type: ignore[arg-type]
        self.env = child_environment(self.settings)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.watcher: subprocess.Popen[bytes] | None = None
        self.watcher_metrics = free_port()

    def _start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`skystream ARGS` with its output in ``logs/NAME.log`` (``env``: other settings than the stack's)."""
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", *args], env=env or self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(proc)
        return proc

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A `skystream worker` (the supervisor and its Faust child)."""
        proc = self._start(f"worker-{len(self.workers)}", "worker", "--metrics-port", str(free_port()))
        self.workers.append(proc)
        return proc

    def start_watcher(self) -> subprocess.Popen[bytes]:
        """`skystream watch` on the inbox, polling every 0.5 s, its /metrics on ``watcher_metrics``."""
        self.watcher = self._start("watch", "watch", str(self.inbox), "--settle", "0", "--interval", "0.5",
                                   "--metrics-port", str(self.watcher_metrics))
        return self.watcher

    def add(self, files: list[Path]) -> None:
        """Move copies into the inbox whole (a rename), as a finished download arrives."""
        for f in files:
            shutil.copy(f, self.staging / f.name)
            os.replace(self.staging / f.name, self.inbox / f.name)

    def feed(self, files: list[Path], per_second: float = 40.0) -> threading.Thread:
        """Add ``files`` at a steady pace from a thread, so arrivals go on while a fault is injected."""
        def run() -> None:
            for f in files:
                self.add([f])
                time.sleep(1 / per_second)

        feeder = threading.Thread(target=run, daemon=True)
        feeder.start()
        return feeder

    def resolved(self) -> set[str]:
        """File ids the watcher's ledger has seen an outcome for."""
        return self._ledger_query("SELECT identity FROM resolved")

    def published(self) -> set[str]:
        """File ids the watcher has published."""
        return self._ledger_query("SELECT identity FROM published")

    def _ledger_query(self, sql: str) -> set[str]:
        paths = list(self.state.glob("watcher-*.sqlite"))
        if not paths:
            return set()
        db = sqlite3.connect(f"file:{paths[0]}?mode=ro", uri=True, timeout=5)
        try:
            return {row[0] for row in db.execute(sql)}
        except sqlite3.OperationalError:  # tables not created yet
            return set()
        finally:
            db.close()

    def log(self, name: str) -> str:
        """What the process started as ``name`` printed so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_process(self, proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
        """SIGTERM one process; SIGKILL it after ``grace`` seconds."""
        stop_process(proc, grace)

    def watcher_metric(self, name: str) -> float:
        """The sum of a metric's samples on the watcher's /metrics (0 when it has none)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.watcher_metrics}/metrics", timeout=5).read().decode()
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith(name) and (line[len(name)] in " {"))

    def all_up(self) -> bool:
        """Whether every process started is still running."""
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """SIGTERM every process, newest first; SIGKILL what is still there 20 s later."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class CliBrokerStack(Stack):
    """The stack with its broker started by `skystream broker --engine ENGINE` as an operator would:
    tansu (in memory: a restart is empty) or Apache Kafka (durable: its log in ``tmp/kafka``)."""

    def __init__(self, tmp: Path, engine: str = "tansu", **settings: object) -> None:
        self.port = free_port()
        self.engine = engine
        super().__init__(tmp, f"127.0.0.1:{self.port}", **settings)
        self.broker_proc: subprocess.Popen[str] | None = None

    def start_broker(self) -> None:
        """Start the broker command and wait until it printed its address (topics created)."""
        argv = [sys.executable, "-m", "stream.cli", "broker", "--engine", self.engine, "--port", str(self.port)]
        if self.engine == "kafka":
            argv += ["--state-dir", str(self.tmp / "kafka")]
        proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)  # type: ignore[arg-type]
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert self.broker in line, line
        self.broker_proc = proc

    def kill_broker(self) -> None:
        """SIGKILL the broker process itself (tansu, or Kafka's JVM) first, then the command that started
        it: no goodbye."""
        assert self.broker_proc is not None
        children = subprocess.run(["pgrep", "-P", str(self.broker_proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        self.broker_proc.kill()
        self.broker_proc.wait()
        self.procs.remove(self.broker_proc)  # type: ignore[arg-type]
        wait_until(lambda: all(process_gone(int(pid)) for pid in children), 10, "the broker process to exit")


class Recorder:
    """Every prediction and dead letter seen on the topics, read in a thread that outlives broker outages."""

    def __init__(self, broker: str, settings: Settings | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.done = threading.Event()
        self.out = Collected()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                asyncio.run(collect(self.broker, lambda _c: self.done.is_set(), 3600, on_message=self._keep,
                                    settings=self.settings))
            except (Exception, asyncio.CancelledError):  # the broker is down: read again once it is back
                self.done.wait(0.5)

    def _keep(self, name: str, rec: dict) -> None:
        # collect() also appends to its own Collected; keep ours across reconnections.
        if name == "Prediction":
            self.out.predictions.append(rec)
        elif name == "Rejected":
            self.out.rejected.append(rec)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(30)


def file_ids(files: list[Path]) -> set[str]:
    """The file ids (sha256 of the content) of ``files``."""
    return {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def assert_same_answers(out: Collected) -> None:
    """A file predicted more than once (a replay, a republish) got the same prediction every time."""
    by_id: dict[str, set[tuple]] = defaultdict(set)
    for p in out.predictions:
        by_id[p["file_id"]].add((p["prediction_id"], p["main_group"], p["bus_class"],
                                 tuple(sorted(p["probabilities"].items()))))
    different = {file_id: answers for file_id, answers in by_id.items() if len(answers) > 1}
    assert not different, f"{len(different)} files got different predictions"


def assert_predicted_alike(out: Collected, ids: set[str]) -> None:
    """Every file got a prediction (not a dead letter: these are good spectra), and a file predicted more
    than once got the same prediction every time."""
    assert {p["file_id"] for p in out.predictions} >= ids, "a good file has no prediction"
    assert_same_answers(out)


def wait_resolved(stack: Stack, ids: set[str], timeout: float = 150) -> float:
    """Wait until the watcher's ledger has every file of ``ids`` resolved; the seconds it took."""
    t0 = time.monotonic()
    wait_until(lambda: ids <= stack.resolved(), timeout,
               f"every file resolved in the ledger (logs in {stack.logs})", interval=0.5)
    return time.monotonic() - t0


def wait_recorded(seen: Recorder, ids: set[str], timeout: float = 60) -> None:
    """The recorder reads the topics a little behind the watcher's ledger: let it catch up."""
    wait_until(lambda: {p["file_id"] for p in list(seen.out.predictions)} >= ids, timeout,
               "the recorder to read every prediction", interval=0.2)


def start_mid_stream(stack: Stack, files: list[Path], first: int = 20, flowing: int = 30,
                     per_second: float = 40.0) -> threading.Thread:
    """Add the first ``first`` files and wait for their outcomes (the stack is up), then feed the rest at
    a steady pace and return once ``flowing`` files are resolved: a fault injected now, while the feeder
    still runs, is mid-stream."""
    stack.add(files[:first])
    wait_resolved(stack, file_ids(files[:first]))
    feeder = stack.feed(files[first:], per_second)
    wait_until(lambda: len(stack.resolved()) >= flowing or not feeder.is_alive(), 150, "outcomes of fed files",
               interval=0.05)
    return feeder

