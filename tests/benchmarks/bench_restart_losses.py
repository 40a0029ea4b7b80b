"""Where files stop after an empty broker restart (a diagnostic benchmark, not a test).

    .venv/bin/python tests/benchmarks/bench_restart_losses.py --runs 10 --busy 2

Each run is bench_faults.py's broker-restart scenario (2 workers, 240 SMASSII spectra, the broker
SIGKILLed once 20 are resolved and restarted empty on the same port, 80 new files), with the watcher's
once-per-file fallback off so that a loss stays visible; the recheck after a reset stays on (set
SKYSTREAM_WATCH_RESET_RECHECK_SECONDS=0 to see the broker's own losses). ``--busy N`` runs N CPU-bound
processes beside the stack, as a shared CI machine does. Printed per run: files in flight at the kill,
and the seconds until every file was resolved, or how many were not within ``--wait``. For each file
left unresolved, the (partition, offset) of its messages on the new broker's files, features and
predictions topics, and the group's committed offsets: a file with features and no prediction was
skipped by scoring, one with an event and no features by preprocessing.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from aiokafka import AIOKafkaConsumer  # noqa: E402
from bench_faults import spectra, wait_some  # noqa: E402
from stack import CliBrokerStack, file_ids  # noqa: E402
from test_faults import _committed  # noqa: E402

from stream.runtime.kafka import topic_partitions  # noqa: E402
from stream.settings import TOPICS  # noqa: E402

INSPECTED = (TOPICS["files"], TOPICS["features.spectrum"], TOPICS["predictions"], TOPICS["rejected"])


async def messages_by_key(broker: str) -> dict[str, list[tuple[str, int, int]]]:
    """Every message key on the inspected topics -> [(topic, partition, offset)], read from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: dict[str, list[tuple[str, int, int]]] = {}
    try:
        parts = await topic_partitions(consumer, INSPECTED)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                for m in msgs:
                    found.setdefault(m.key.decode() if m.key else "", []).append((tp.topic, tp.partition, m.offset))
    finally:
        await consumer.stop()
    return found


def run(files: list[Path], tmp: Path, wait: float) -> None:
    stack = CliBrokerStack(tmp, "tansu")
    stack.env["SKYSTREAM_WATCH_REPUBLISH_SECONDS"] = "0"
    stack.start_broker()
    try:
        stack.start_worker()
        stack.start_worker()
        stack.start_watcher()
        old, new = files[:240], files[240:]
        stack.add(old)
        wait_some(stack)
        stack.kill_broker()
        in_flight = len(file_ids(old) - stack.resolved())
        stack.start_broker()
        t0 = time.monotonic()
        stack.add(new)
        ids = file_ids(files)
        while not ids <= stack.resolved() and time.monotonic() - t0 < wait:
            time.sleep(0.5)
        missing = ids - stack.resolved()
        took = f"all resolved {time.monotonic() - t0:.0f} s after the restart" if not missing else \
            f"{len(missing)} unresolved {wait:.0f} s after the restart"
        print(f"in flight at the kill {in_flight}; {took}", flush=True)
        if missing:
            where = asyncio.run(messages_by_key(stack.broker))
            for file_id in sorted(missing):
                print(f"  {file_id[:12]}: {where.get(file_id, [])}")
            group = stack.env["SKYSTREAM_APP_ID"]
            for topic in INSPECTED[:2]:
                print(f"  committed {topic}:", [_committed(stack.broker, group, topic, p) for p in range(4)])
    finally:
        stack.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run beside the stack")
    ap.add_argument("--wait", type=float, default=90.0, help="seconds after the restart to wait for every file")
    args = ap.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = spectra(Path(tmp), 320)
            for i in range(args.runs):
                print(f"run {i}: ", end="", flush=True)
                (Path(tmp) / f"run{i}").mkdir()
                run(files, Path(tmp) / f"run{i}", args.wait)
    finally:
        for hog in hogs:
            hog.kill()


if __name__ == "__main__":
    main()
