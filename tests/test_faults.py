"""Faults on the embedded default, with the real processes an operator starts (`skystream broker`,
`skystream worker` x2, `skystream watch`) and real SMASSII spectra: after each fault every file in
has its outcome (the watcher's ledger has it resolved, i.e. its prediction or dead letter was seen),
none is lost, and a file predicted more than once was predicted the same way every time.

(a) a worker killed with SIGKILL mid-stream; (b) the broker killed with SIGKILL mid-stream and started
again, empty, on the same port, then new files; (c) the watcher killed with SIGKILL and restarted.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from stack import (
    CliBrokerStack,
    Recorder,
    Stack,
    assert_predicted_alike,
    assert_same_answers,
    file_ids,
    start_mid_stream,
    wait_recorded,
    wait_resolved,
)

from stream.devstack.localstack import Collected, collect
from stream.runtime.embedded_broker import free_port

pytestmark = pytest.mark.slow

N_FILES = 240


@pytest.fixture()
def spectra(smass_dir: Path) -> list[Path]:
    return sorted(smass_dir.iterdir())[:N_FILES + 80]


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[CliBrokerStack]:
    s = CliBrokerStack(tmp_path, "tansu")
    s.start_broker()
    try:
        yield s
    finally:
        s.stop()


def test_worker_killed_mid_stream_loses_nothing(stack: Stack, spectra: list[Path]) -> None:
    files = spectra[:N_FILES]
    victim, survivor = stack.start_worker(), stack.start_worker()
    stack.start_watcher()
    with Recorder(stack.broker) as seen:
        feeder = start_mid_stream(stack, files)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert feeder.is_alive(), "killed too late to test: every file had arrived"
        wait_resolved(stack, file_ids(files))
        wait_recorded(seen, file_ids(files))
    assert survivor.poll() is None and stack.watcher.poll() is None
    assert_predicted_alike(seen.out, file_ids(files))


def test_broker_killed_and_restarted_empty_loses_nothing(stack: Stack, spectra: list[Path]) -> None:
    """The operator's case: the memory broker restarts empty while files are in flight, then new files
    arrive. The watcher publishes the unresolved ones again; the workers rejoin and go on."""
    old, new = spectra[:N_FILES], spectra[N_FILES:]
    workers = [stack.start_worker(), stack.start_worker()]
    watcher = stack.start_watcher()
    with Recorder(stack.broker) as seen:
        feeder = start_mid_stream(stack, old)
        stack.kill_broker()
        assert feeder.is_alive(), "killed too late to test: every file had arrived"
        # Read once the broker is gone: what the watcher saw resolved on it (it can see no more). The
        # rest of the old files, whether published, not yet published or still arriving, are in flight.
        at_kill = stack.resolved()
        in_flight = file_ids(old) - at_kill
        stack.start_broker()
        feeder.join()
        stack.add(new)
        wait_resolved(stack, file_ids(old) | file_ids(new))
        # What the restarted broker carries: every file in flight at the kill and every new file.
        after = asyncio.run(collect(stack.broker, lambda c: False, 3))
    on_new_broker = {p["file_id"] for p in after.predictions} | {r["file_id"] for r in after.rejected}
    assert (in_flight | file_ids(new)) <= on_new_broker
    assert watcher.poll() is None and all(w.poll() is None for w in workers), "a process exited on the outage"
    # Predictions: those the recorder saw before the kill, and everything on the new broker read from its
    # start (a consumer that kept its old positions across the reset would skip the new broker's first
    # offsets, so the recorder alone is no proof of absence).
    # Files resolved before the kill may have had their prediction read by the watcher but not yet by
    # the recorder when the old broker vanished: demand a prediction for the rest, and no dead letter
    # for any of these good files wherever one was seen.
    predicted = {p["file_id"] for p in seen.out.predictions} | {p["file_id"] for p in after.predictions}
    assert predicted >= in_flight | file_ids(new), "a file in flight or new has no prediction"
    dead = {r["file_id"] for r in seen.out.rejected + after.rejected} & (file_ids(old) | file_ids(new))
    assert not dead, f"{len(dead)} good files were dead-lettered"
    assert_same_answers(Collected(predictions=seen.out.predictions + after.predictions))


def test_watcher_killed_and_restarted_publishes_nothing_twice_differently(stack: Stack, spectra: list[Path]) -> None:
    files = spectra[:N_FILES]
    stack.start_worker()
    watcher = stack.start_watcher()
    with Recorder(stack.broker) as seen:
        stack.add(files[: N_FILES // 2])
        wait_until(lambda: len(stack.published()) >= 20, 150, "20 files published", interval=0.05)
        watcher.send_signal(signal.SIGKILL)
        watcher.wait()
        stack.add(files[N_FILES // 2:])  # arrive while no watcher runs
        restarted = stack.start_watcher()
        wait_resolved(stack, file_ids(files))
        wait_recorded(seen, file_ids(files))
        assert restarted.poll() is None
    assert_same_answers(seen.out)
    predicted = defaultdict(int)
    for p in seen.out.predictions:
        predicted[p["file_id"]] += 1
    assert set(predicted) == file_ids(files)


def _committed(broker: str, group: str, topic: str, partition: int = 0) -> int | None:
    """The offset ``group`` has committed on ``topic``'s partition, None if none."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def ask() -> int | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            return await consumer.committed(TopicPartition(topic, partition))
        finally:
            await consumer.stop()

    return asyncio.run(ask())


def test_a_worker_that_outlived_a_broker_reset_commits_nothing_into_the_new_cluster(
        stack: Stack, spectra: list[Path]) -> None:
    """The Faust worker itself, without its supervisor: it read 20 events on the old broker, so on the
    new, empty one it skips offsets 0-19 and processes the rest. Committing those would make every
    later owner of the partition skip 0-19 too (the in-flight files, published again). It must exit
    instead (code 76), committing nothing."""
    from stream.settings import TOPICS
    from stream.worker.exits import EXIT_OTHER_CLUSTER

    stack.kill_broker()  # again, with one partition: the offsets below are then the file events'
    stack.env["SKYSTREAM_PARTITIONS"] = "1"
    stack.start_broker()
    child = stack._start("child", "worker", "--child", "--broker", stack.broker, "--metrics-port", str(free_port()))
    stack.start_watcher()
    stack.add(spectra[:20])
    wait_resolved(stack, file_ids(spectra[:20]))
    wait_until(lambda: _committed(stack.broker, stack.env["SKYSTREAM_APP_ID"], TOPICS["files"]) == 20, 30,
               "the worker to commit its 20 file events")
    stack.kill_broker()
    stack.start_broker()
    stack.add(spectra[20:60])  # at offsets 0-39 of the new broker: the worker skips 0-19, processes 20-39
    assert child.wait(120) == EXIT_OTHER_CLUSTER, f"the worker went on (logs in {stack.logs})"
    assert _committed(stack.broker, stack.env["SKYSTREAM_APP_ID"], TOPICS["files"]) is None
