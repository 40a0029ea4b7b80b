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
from helpers import process_gone, report, wait_until
from stack import (
    CliBrokerStack,
    Stack,
    assert_predicted_alike,
    file_ids,
    start_mid_stream,
    wait_resolved,
)

from stream.devstack.localstack import collect
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
def _kill_for_10s(kafka: LocalKafka, victim: int) -> None:
    kafka.kill(victim)
    time.sleep(10)
    kafka.start_node(victim)


def _kill_leader(kafka: LocalKafka, stack: Stack) -> None:
    _kill_for_10s(kafka, _leader(kafka))


def _kill_controller(kafka: LocalKafka, stack: Stack) -> None:
    _kill_for_10s(kafka, _active_controller(kafka))


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


def _run_fault(stack: Stack, spectra: list[Path], what: str, fault: Callable[[], None]) -> None:
    """Two workers and a watcher on ``stack``; ``fault`` while files are still arriving, then new files;
    assert that every file is resolved and predicted alike, nothing republished, no reset seen, every
    process up; report the time from the fault to the last outcome."""
    old, new = spectra[:N_OLD], spectra[N_OLD:N_OLD + N_NEW]
    ids = file_ids(old) | file_ids(new)
    try:
        stack.start_worker()
        stack.start_worker()
        stack.start_watcher()
        feeder = start_mid_stream(stack, old, per_second=20.0)
        assert feeder.is_alive(), "fault too late to test: every file had arrived"
        t_fault = time.monotonic()
        fault()
        feeder.join()
        stack.add(new)
        wait_resolved(stack, ids, timeout=300)
        recovery = time.monotonic() - t_fault
        republished = stack.watcher_metric("skystream_files_republished_total")
        resets = stack.watcher_metric("skystream_broker_resets_total")
        up = stack.all_up()
        # What a subscriber finds: the predictions topic read from its start. Kafka kept everything, so this
        # is the whole record (on tansu the fault tests need a recorder running through the fault instead).
        seen = asyncio.run(collect(stack.broker, lambda c: ids <= {p["file_id"] for p in c.predictions}, 120))
        report(f"kafka, {what}: {len(ids)} files resolved, fault to last outcome {recovery:.1f} s, "
               f"{len(seen.predictions)} prediction messages for {len(ids)} files")
    finally:
        stack.stop()
    assert up, f"a process exited (logs in {stack.logs})"
    assert republished == 0, f"{republished:.0f} files republished: the broker lost nothing, so nothing should be"
    assert resets == 0, "the watcher saw a broker reset on a cluster that kept its state"
    assert not seen.rejected, f"good files dead-lettered: {seen.rejected[:3]}"
    missing = ids - {p["file_id"] for p in seen.predictions}
    assert not missing, f"{len(missing)} files resolved by the watcher have no prediction on the topic"
    assert_predicted_alike(seen, ids)


# Both stacks: the republish fallback and the reset rechecks off (they are off on the kafka profile
# anyway), so that only the broker's durability can keep the files.
NO_SECOND_CHANCE = {"broker_engine": "kafka", "watch_republish_seconds": 0.0, "watch_reset_recheck_seconds": 0.0}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fault_on_a_three_broker_cluster_loses_nothing(scenario: str, cluster: LocalKafka, tmp_path: Path,
                                                       smass_dir: Path) -> None:
    stack = Stack(tmp_path, cluster.bootstrap, replication_factor=3, min_insync_replicas=2, **NO_SECOND_CHANCE)
    _run_fault(stack, sorted(smass_dir.iterdir()), f"three-broker cluster, {scenario}",
               lambda: SCENARIOS[scenario](cluster, stack))


def test_the_durable_single_broker_killed_9_mid_stream_and_restarted_loses_and_republishes_nothing(
        tmp_path: Path, smass_dir: Path) -> None:
    """The operator's one-machine service: `skystream broker --engine kafka`, two workers and a watcher.
    The broker's JVM is SIGKILLed mid-stream and the command started again on the same state directory:
    every file is resolved from what the broker kept, nothing is published twice, no reset is seen."""
    stack = CliBrokerStack(tmp_path, "kafka", **NO_SECOND_CHANCE)
    try:
        stack.start_broker()
    except BaseException:
        stack.stop()
        raise

    def kill_and_restart() -> None:
        stack.kill_broker()
        stack.start_broker()

    _run_fault(stack, sorted(smass_dir.iterdir()), "single durable broker, kill -9 and restart", kill_and_restart)
