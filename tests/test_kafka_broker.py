"""`skystream broker --engine kafka`: a real Apache Kafka (KRaft) whose log lives in the state directory.

A restart, also after ``kill -9`` of the JVM, keeps every acknowledged message and every committed offset,
the cluster id and the port; the topics get their retention; Ctrl-C stops the JVM too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from helpers import process_gone, wait_until

from stream.runtime.embedded_broker import free_port
from stream.runtime.kafka import topic_configs
from stream.settings import TOPICS, Settings, child_environment

pytestmark = pytest.mark.kafka

GROUP = "durability-test"


def _start(state: Path, port: int) -> subprocess.Popen[str]:
    env = child_environment(Settings(state_dir=state, partitions=2))
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "broker", "--engine", "kafka", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert f"127.0.0.1:{port}" in line and "Apache Kafka" in line, line
    return proc


def _jvm(proc: subprocess.Popen[str]) -> int:
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, f"expected one JVM under the command, found {children}"
    return int(children[0])


async def _produce(bootstrap: str, n: int, start: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(TOPICS["predictions"], f"v{i}".encode(), key=f"k{i}".encode())
                   for i in range(start, start + n)]
        await asyncio.gather(*futures)  # every one acknowledged
    finally:
        await producer.stop()


async def _consume_half_and_commit(bootstrap: str, n: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(TOPICS["predictions"], bootstrap_servers=bootstrap, group_id=GROUP,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got = 0
        while got < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=n - got)
            got += sum(len(m) for m in batches.values())
        # Explicit offsets for every assigned partition: a bare commit() skips a partition whose position
        # is not known yet (nothing fetched from it), which would then read back as None, not 0.
        positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
        await consumer.commit(positions)
        return positions
    finally:
        await consumer.stop()


async def _read_back(bootstrap: str, parts: list[TopicPartition]) -> tuple[set[bytes], dict[TopicPartition, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        # Right after a restart the group coordinator may answer before it has loaded the offsets topic
        # (seen about once in ten runs: every partition read back as None). Asked again, it has them; if
        # they were really lost they stay None and the assertion below fails.
        committed = {tp: await consumer.committed(tp) for tp in parts}
        for _ in range(30):
            if all(v is not None for v in committed.values()):
                break
            await asyncio.sleep(1.0)
            committed = {tp: await consumer.committed(tp) for tp in parts}
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        values: set[bytes] = set()
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                values.update(m.value for m in msgs)
        return values, committed
    finally:
        await consumer.stop()


async def _cluster_id(bootstrap: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return (await admin.describe_cluster())["cluster_id"]
    finally:
        await admin.close()


async def _configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {c[0]: c[1] for r in described for res in r.resources for c in res[4]}
    finally:
        await admin.close()


def test_kill_9_and_restart_keeps_every_acknowledged_message_and_committed_offset(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    bootstrap = f"127.0.0.1:{port}"
    proc = _start(state, port)
    try:
        first_id = asyncio.run(_cluster_id(bootstrap))
        asyncio.run(_produce(bootstrap, 500, 0))
        positions = asyncio.run(_consume_half_and_commit(bootstrap, 200))
        asyncio.run(_produce(bootstrap, 500, 500))  # acknowledged after the commit, right before the crash
        jvm = _jvm(proc)
        os.kill(jvm, signal.SIGKILL)  # a crash: no shutdown hook, no final flush
        proc.wait(30)
        wait_until(lambda: process_gone(jvm), 10, "the killed JVM to be gone")
        assert (state / "kafka" / "cluster.id").exists()
        proc = _start(state, port)  # same state directory: same log, same port
        assert asyncio.run(_cluster_id(bootstrap)) == first_id
        values, committed = asyncio.run(_read_back(bootstrap, list(positions)))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert values == {f"v{i}".encode() for i in range(1000)}, f"{1000 - len(values)} acknowledged messages lost"
    assert committed == positions, "committed offsets changed across the crash"
    assert sum(positions.values()) == 200


def test_topics_get_their_retention_and_ctrl_c_stops_the_jvm(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path / "state", port)
    try:
        jvm = _jvm(proc)
        files = asyncio.run(_configs(f"127.0.0.1:{port}", TOPICS["files"]))
        models = asyncio.run(_configs(f"127.0.0.1:{port}", TOPICS["models"]))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    wait_until(lambda: process_gone(jvm), 30, "the JVM to stop after Ctrl-C")
    expected = topic_configs("files", Settings())
    assert files["retention.ms"] == expected["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert files["retention.bytes"] == expected["retention.bytes"]
    assert models["cleanup.policy"] == "compact"
