"""The embedded broker starts on loopback, serves Kafka clients, and leaves no process behind."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from aiokafka.admin import AIOKafkaAdminClient
from helpers import process_gone, wait_until

from stream.runtime.embedded_broker import EmbeddedBroker, free_port
from stream.runtime.kafka import ensure_topics
from stream.settings import TOPICS, Settings


def _topics(bootstrap: str) -> dict[str, int]:
    async def run() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(TOPICS.values()))
            return {t["topic"]: len(t["partitions"]) for t in described}
        finally:
            await admin.close()

    return asyncio.run(run())


def test_topics_are_created_once_with_their_partitions() -> None:
    with EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap, Settings(partitions=3)))
        asyncio.run(ensure_topics(broker.bootstrap, Settings(partitions=3)))  # idempotent
        topics = _topics(broker.bootstrap)
        pid = broker.proc.pid
    assert topics[TOPICS["files"]] == 3 and topics[TOPICS["models"]] == 1
    wait_until(lambda: process_gone(pid), 10, f"the broker process {pid} to exit")


def test_skystream_broker_command_stops_cleanly_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "broker", "--engine", "tansu", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        assert _topics(f"127.0.0.1:{port}")[TOPICS["predictions"]] >= 1
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "no tansu child process"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    wait_until(lambda: all(process_gone(int(child)) for child in children), 10, "tansu to exit after Ctrl-C")
