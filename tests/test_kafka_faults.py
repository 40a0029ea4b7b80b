"""Faults on a real three-broker Apache Kafka cluster (KRaft, loopback): RF 3, min.insync.replicas 2,
acks=all, idempotent producers, with the watcher's republish fallback and its restart rechecks OFF, so
that what keeps the files is the broker's durability and the workers' commits, not a second chance.

Each scenario runs two `skystream worker` processes and `skystream watch` on real SMASSII spectra that
arrive at a steady pace, injects its fault while files are still arriving (asserted), then adds new files,
and asserts: every file in is resolved (a prediction or dead letter seen by the watcher) and predicted,
none lost, repeats identical, nothing republished, no broker reset seen, every process still up. The
time from the fault to the last file resolved is printed (`pytest -s` shows it).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from helpers import process_gone, wait_until
from stack import Recorder, Stack, assert_predicted_alike, file_ids, start_mid_stream, wait_recorded, wait_resolved

from stream.runtime.kafka import ensure_topics
from stream.runtime.local_kafka import LocalKafka
from stream.settings import TOPICS, Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_OLD, N_NEW = 200, 40
CLUSTER = Settings(replication_factor=3, min_insync_replicas=2, partitions=4)


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[LocalKafka]:
    with LocalKafka(tmp_path / "kafka", nodes=3, settings=CLUSTER, heap_mb=320) as kafka:
        asyncio.run(ensure_topics(kafka.bootstrap, CLUSTER))
        yield kafka


def _describe(bootstrap: str, topic: str) -> list[dict]:
    async def run() -> list[dict]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        await admin.start()
        try:
            return (await admin.describe_topics([topic]))[0]["partitions"]
        finally:
            await admin.close()

    return asyncio.run(run())


def _leader(kafka: LocalKafka, topic: str = TOPICS["files"], partition: int = 0) -> int:
    """The broker leading ``topic``'s partition (the files partitions are busy while files arrive)."""
    return next(p["leader"] for p in _describe(kafka.bootstrap, topic) if p["partition"] == partition)


def _active_controller(kafka: LocalKafka) -> int:
    """The KRaft quorum's leader, from a running node's quorum-state file (clients are not told it)."""
    for node in kafka.nodes:
        state = node.directory / "log" / "__cluster_metadata-0" / "quorum-state"
        if node.running and state.exists():
            leader = json.loads(state.read_text()).get("leaderId", -1)
            if leader > 0:
                return leader
    raise AssertionError("no node knows the active controller")


def _wait_fully_replicated(kafka: LocalKafka, timeout: float = 120) -> None:
    """Every partition of the files topic has all three replicas in sync again."""
    wait_until(lambda: all(len(p["isr"]) == 3 for p in _describe(kafka.bootstrap, TOPICS["files"])), timeout,
               "every replica back in sync", interval=1)


# Each fault gets the cluster and the stack, injects itself and returns once it is over (a node that
# comes back is started again inside it); the stream keeps running throughout.
def _kill_leader(kafka: LocalKafka, stack: Stack) -> None:
    victim = _leader(kafka)
    kafka.kill(victim)
    time.sleep(10)
    kafka.start_node(victim)


def _kill_controller(kafka: LocalKafka, stack: Stack) -> None:
    victim = _active_controller(kafka)
    kafka.kill(victim)
    time.sleep(10)
    kafka.start_node(victim)


def _one_broker_gone(kafka: LocalKafka, stack: Stack) -> None:
    kafka.kill(_leader(kafka))  # never started again: the stream goes on on two (min.insync.replicas 2)


def _all_killed(kafka: LocalKafka, stack: Stack) -> None:
    for node in kafka.nodes:
        kafka.kill(node.node_id)
    time.sleep(3)
    kafka.start()


def _frozen(kafka: LocalKafka, stack: Stack) -> None:
    victim = _leader(kafka)
    kafka.freeze(victim)
    time.sleep(20)
    kafka.thaw(victim)


def _worker_killed(kafka: LocalKafka, stack: Stack) -> None:
    victim = stack.workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stack.procs.remove(victim)  # its Faust child dies with it (PDEATHSIG); the other worker takes over
    wait_until(lambda: process_gone(victim.pid), 10, "the killed worker to be gone")


def _rolling_restart(kafka: LocalKafka, stack: Stack) -> None:
    for node in kafka.nodes:
        kafka.stop_node(node.node_id)
        kafka.start_node(node.node_id)
        _wait_fully_replicated(kafka)


SCENARIOS: dict[str, Callable[[LocalKafka, Stack], None]] = {
    "leader-kill-9": _kill_leader,
    "controller-kill-9": _kill_controller,
    "one-broker-gone-for-good": _one_broker_gone,
    "all-three-killed-and-restarted": _all_killed,
    "broker-frozen-20s": _frozen,
    "worker-kill-9": _worker_killed,
    "rolling-restart": _rolling_restart,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fault_on_a_three_broker_cluster_loses_nothing(scenario: str, cluster: LocalKafka, tmp_path: Path,
                                                       smass_dir: Path) -> None:
    spectra = sorted(smass_dir.iterdir())
    old, new = spectra[:N_OLD], spectra[N_OLD:N_OLD + N_NEW]
    stack = Stack(tmp_path, cluster.bootstrap, replication_factor=3, min_insync_replicas=2, broker_engine="kafka",
                  watch_republish_seconds=0.0, watch_reset_recheck_seconds=0.0)
    try:
        stack.start_worker()
        stack.start_worker()
        stack.start_watcher()
        with Recorder(cluster.bootstrap) as seen:
            feeder = start_mid_stream(stack, old, per_second=20.0)
            assert feeder.is_alive(), "fault too late to test: every file had arrived"
            t_fault = time.monotonic()
            SCENARIOS[scenario](cluster, stack)
            feeder.join()
            stack.add(new)
            wait_resolved(stack, file_ids(old) | file_ids(new), timeout=300)
            recovery = time.monotonic() - t_fault
            wait_recorded(seen, file_ids(old) | file_ids(new))
            republished = stack.watcher_metric("skystream_files_republished_total")
            resets = stack.watcher_metric("skystream_broker_resets_total")
            up = stack.all_up()
        print(f"\n[{scenario}] {len(old) + len(new)} files resolved; fault to last outcome {recovery:.1f} s; "
              f"{len(seen.out.predictions)} prediction messages for {len(old) + len(new)} files")
    finally:
        stack.stop()
    assert up, f"a process exited (logs in {stack.logs})"
    assert republished == 0, f"{republished:.0f} files republished: the broker lost nothing, so nothing should be"
    assert resets == 0, "the watcher saw a broker reset on a cluster that kept its state"
    assert not seen.out.rejected, f"good files dead-lettered: {seen.out.rejected[:3]}"
    assert_predicted_alike(seen.out, file_ids(old) | file_ids(new))
