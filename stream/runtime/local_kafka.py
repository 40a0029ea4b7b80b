"""Apache Kafka on this machine: a single durable KRaft broker, or a replicated cluster on loopback.

The broker is the pinned Kafka release of deploy/kafka/pom.xml, run from its Maven jars (fetched and
cached by deploy/kafka/fetch.sh; Java 17). Each node combines the broker and controller roles (KRaft,
no ZooKeeper) and keeps its log under ``state_dir/node-N``, so a stop, a crash or a ``kill -9`` loses
nothing the broker acknowledged: the next start reads the same log, offsets and groups back (the
cluster id is kept in ``state_dir/cluster.id``). With ``nodes=3`` the internal topics get three
replicas and ``min.insync.replicas=2``: the cluster of the fault tests (docs/kafka.md).

``skystream broker --engine kafka`` runs one; tests and benchmarks use :class:`LocalKafka` directly.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.runtime.embedded_broker import BrokerError, free_port
from stream.settings import CHECKOUT, Settings

__all__ = ["KafkaNode", "LocalKafka", "kafka_classpath"]

FETCH_SCRIPT = CHECKOUT / "deploy" / "kafka" / "fetch.sh"


def kafka_classpath(settings: Settings | None = None) -> str:
    """The Java class path of the Kafka jars: ``SKYSTREAM_KAFKA_LIBS``, else the cache that
    deploy/kafka/fetch.sh fills (run here when this is a source checkout: a second run costs a second)."""
    configured = (settings or Settings()).kafka_libs
    if configured:
        libs = Path(configured).expanduser()
    elif FETCH_SCRIPT.is_file():
        done = subprocess.run(["bash", str(FETCH_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True)
        if done.returncode != 0:
            raise BrokerError(f"could not fetch Apache Kafka ({FETCH_SCRIPT} exited {done.returncode})")
        libs = Path(done.stdout.strip().splitlines()[-1])
    else:
        raise BrokerError("no Kafka jars: set SKYSTREAM_KAFKA_LIBS to a directory holding kafka_2.13 and its "
                          "dependencies (a source checkout fetches them with deploy/kafka/fetch.sh)")
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"{libs} holds no kafka_2.13 jar")
    return f"{libs}/*"


def _new_cluster_id() -> str:
    """A random UUID, base64url without padding (22 characters): Kafka's own form. One that starts with
    '-' is drawn again, as Kafka's generator does: the storage tool would read it as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _die_with_parent() -> None:
    # Linux: SIGTERM the JVM if the process that started it dies, so no orphan keeps the ports.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class KafkaNode:
    """One combined broker+controller process of a :class:`LocalKafka`."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """This node's client address, ``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the JVM is running (a frozen one counts as running)."""
        return self.proc is not None and self.proc.poll() is None


class LocalKafka:
    """Apache Kafka on loopback: ``nodes`` KRaft nodes with their logs under ``state_dir``.

    Ports, the cluster id and the logs are kept in ``state_dir``: building a LocalKafka on the same
    directory again (a restarted ``skystream broker --engine kafka``) finds the same cluster. Use as a
    context manager, or ``start()`` / ``stop()``; ``kill``, ``freeze``, ``thaw`` and ``start_node``
    act on one node (fault tests).
    """

    def __init__(self, state_dir: Path, nodes: int = 1, port: int | None = None, heap_mb: int = 384,
                 settings: Settings | None = None, extra_properties: Mapping[str, str] | None = None,
                 listeners: Mapping[str, str] | None = None, log_level: str = "warn",
                 format_args: Sequence[str] = ()) -> None:
        self.state_dir = Path(state_dir)
        self.settings = settings or Settings()
        self.heap_mb = heap_mb
        self.extra_properties = dict(extra_properties or {})
        # Extra named listeners (name -> security protocol), each on its own port, e.g. SASL_SSL for the
        # security tests; PLAINTEXT (clients) and CONTROLLER always exist.
        self.extra_listeners = dict(listeners or {})
        self.log_level = log_level
        # Extra arguments of the first start's StorageTool format, e.g. ``--add-scram`` users: SCRAM
        # credentials live in the cluster metadata, so a broker that talks SCRAM between its own nodes
        # needs them before it first starts.
        self.format_args = list(format_args)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports = self._ports(nodes, port)
        self.nodes = [KafkaNode(i + 1, ports[i][0], ports[i][1], self.state_dir / f"node-{i + 1}")
                      for i in range(nodes)]
        self.extra_ports: dict[tuple[int, str], int] = {}
        for node in self.nodes:
            for name in self.extra_listeners:
                self.extra_ports[(node.node_id, name)] = self._kept_port(f"node-{node.node_id}.{name}.port")
        id_file = self.state_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(_new_cluster_id())
        self.cluster_id = id_file.read_text().strip()
        self._classpath: str | None = None

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated (aiokafka's bootstrap_servers)."""
        return ",".join(n.bootstrap for n in self.nodes)

    def listener_bootstrap(self, name: str) -> str:
        """The bootstrap addresses of an extra listener (``listeners`` in the constructor)."""
        return ",".join(f"127.0.0.1:{self.extra_ports[(n.node_id, name)]}" for n in self.nodes)

    def _kept_port(self, name: str, preferred: int | None = None) -> int:
        """A port remembered in the state directory, so a restarted broker keeps its address."""
        path = self.state_dir / name
        if path.exists():
            return int(path.read_text())
        port = preferred or free_port()
        path.write_text(str(port))
        return port

    def _ports(self, nodes: int, port: int | None) -> list[tuple[int, int]]:
        return [(self._kept_port(f"node-{i + 1}.port", port if i == 0 else None),
                 self._kept_port(f"node-{i + 1}.controller.port")) for i in range(nodes)]

    # -- configuration -----------------------------------------------------------------------------

    def properties(self, node: KafkaNode) -> dict[str, str]:
        """The server.properties of ``node``."""
        n = len(self.nodes)
        isr = min(2, n)
        listeners = [f"PLAINTEXT://127.0.0.1:{node.port}", f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for name, protocol in self.extra_listeners.items():
            listeners.append(f"{name}://127.0.0.1:{self.extra_ports[(node.node_id, name)]}")
            protocols.append(f"{name}:{protocol}")
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in self.nodes),
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(x for x in listeners if not x.startswith("CONTROLLER")),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(node.directory / "log"),
            # Durability: the internal topics (group offsets, transactions) as replicated as the cluster.
            "offsets.topic.replication.factor": str(n),
            "transaction.state.log.replication.factor": str(n),
            "transaction.state.log.min.isr": str(isr),
            "default.replication.factor": str(n),
            "min.insync.replicas": str(isr),
            "num.partitions": str(self.settings.partitions),
            "auto.create.topics.enable": "false",
            # A worker's first join is not held back 3 s waiting for more members (one machine).
            "group.initial.rebalance.delay.ms": "0",
            # Retention is checked every 30 s (Kafka's default is 5 min), so short test retentions show.
            "log.retention.check.interval.ms": "30000",
        }
        props.update(self.extra_properties)
        return props

    def _write_config(self, node: KafkaNode) -> Path:
        node.directory.mkdir(parents=True, exist_ok=True)
        path = node.directory / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties(node).items()))
        return path

    def _java(self, main: str, *args: str, heap_mb: int | None = None) -> list[str]:
        if self._classpath is None:
            self._classpath = kafka_classpath(self.settings)
        heap = heap_mb or self.heap_mb
        # The broker takes its whole heap at start, as Kafka's production advice has it (-Xms = -Xmx),
        # and touches it (AlwaysPreTouch): its memory is the configured size from the first minute, not
        # a figure that creeps up to it over a day. The short-lived tools start small.
        sizing = ([f"-Xms{heap}m", "-XX:+AlwaysPreTouch"] if main == "kafka.Kafka" else [f"-Xms{min(heap, 128)}m"])
        return ["java", *sizing, f"-Xmx{heap}m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                f"-Dorg.slf4j.simpleLogger.defaultLogLevel={self.log_level}",
                "-Dorg.slf4j.simpleLogger.showDateTime=true", "-cp", self._classpath, main, *args]

    def _format(self, nodes: list[KafkaNode]) -> None:
        """Format the log directories of ``nodes`` that were never formatted (KRaft needs it; never
        again after), all at once: each format is a JVM start of its own."""
        todo = [n for n in nodes if not (n.directory / "log" / "meta.properties").exists()]
        runs = [(n, subprocess.Popen(self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c",
                                                str(self._write_config(n)), "--ignore-formatted", *self.format_args,
                                                heap_mb=256),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
                for n in todo]
        for node, run in runs:
            out, _ = run.communicate()
            if run.returncode != 0:
                raise BrokerError(f"formatting {node.directory} failed: {out.decode(errors='replace')[-2000:]}")

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> LocalKafka:
        """Start every node that is not running; wait until each answers; return self."""
        self._format(self.nodes)
        for node in self.nodes:
            if not node.running:
                self._launch(node)
        for node in self.nodes:
            self.wait_ready(node, timeout)
        self.wait_registered(timeout)
        return self

    def wait_registered(self, timeout: float = 90.0) -> None:
        """Wait until every running node is a registered broker of the cluster (topics with a replica
        on each can be created then)."""
        import asyncio

        from aiokafka.admin import AIOKafkaAdminClient

        want = {n.node_id for n in self.nodes if n.running}

        async def registered() -> set[int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                await admin.start()
                return {b["node_id"] for b in (await admin.describe_cluster())["brokers"]}
            except Exception:  # still starting
                return set()
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()

        deadline = time.monotonic() + timeout
        while not want <= asyncio.run(registered()):
            if time.monotonic() > deadline:
                raise BrokerError(f"Kafka nodes {sorted(want)} did not all register within {timeout:.0f} s")
            time.sleep(0.2)

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Start (again) the node ``node_id`` and wait until it accepts connections."""
        node = self.node(node_id)
        if not node.running:
            self._format([node])
            self._launch(node)
        self.wait_ready(node, timeout)

    def node(self, node_id: int) -> KafkaNode:
        """The node with this id (1-based)."""
        return self.nodes[node_id - 1]

    def _launch(self, node: KafkaNode) -> None:
        config = self._write_config(node)
        out = open(node.directory / "server.log", "ab")  # noqa: SIM115 (the child keeps it)
        node.proc = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        out.close()

    def wait_ready(self, node: KafkaNode, timeout: float = 90.0) -> None:
        """Wait until ``node`` accepts client connections; BrokerError if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc is None or node.proc.poll() is not None:
                code = None if node.proc is None else node.proc.returncode
                raise BrokerError(f"Kafka node {node.node_id} exited with code {code}; see "
                                  f"{node.directory / 'server.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", node.port), timeout=0.5):
                return
            time.sleep(0.1)
        raise BrokerError(f"Kafka node {node.node_id} did not answer on {node.bootstrap} within {timeout:.0f} s")

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a crash: whatever it had not written to its log is gone)."""
        node = self.node(node_id)
        if node.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGCONT)  # a frozen JVM must die too
                node.proc.kill()
            node.proc.wait()
        node.proc = None

    def freeze(self, node_id: int) -> None:
        """SIGSTOP one node: it holds its connections and answers nothing (a hung machine)."""
        proc = self.node(node_id).proc
        if proc is not None:
            proc.send_signal(signal.SIGSTOP)

    def thaw(self, node_id: int) -> None:
        """SIGCONT a frozen node."""
        proc = self.node(node_id).proc
        if proc is not None:
            proc.send_signal(signal.SIGCONT)

    def stop_node(self, node_id: int, grace: float = 30.0) -> None:
        """Stop one node cleanly (SIGTERM; SIGKILL after ``grace`` seconds)."""
        node = self.node(node_id)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)
            node.proc.terminate()
            try:
                node.proc.wait(grace)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        node.proc = None

    def stop(self, grace: float = 30.0) -> None:
        """Stop every node: all asked at once, so the controllers shut down together."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            node.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            node.proc.terminate()  # type: ignore[union-attr]
        deadline = time.monotonic() + grace
        for node in running:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                node.proc.kill()  # type: ignore[union-attr]
                node.proc.wait()  # type: ignore[union-attr]
        for node in self.nodes:
            node.proc = None

    def pids(self) -> list[int]:
        """The running nodes' process ids (benchmarks read their CPU and memory)."""
        return [n.proc.pid for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def log_bytes(self) -> int:
        """Bytes allocated on disk under every node's log directory (retention keeps this bounded).

        Allocated blocks, not file sizes: Kafka preallocates each segment's index files (10 MB, sparse),
        which would count ~20 MB per partition that the disk does not hold."""
        files = (f for n in self.nodes for f in (n.directory / "log").rglob("*") if f.is_file())
        return sum(f.stat().st_blocks * 512 for f in files)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def java_available() -> bool:
        """Whether a ``java`` is on PATH (the demo stays on the embedded broker without one)."""
        return shutil.which("java") is not None
