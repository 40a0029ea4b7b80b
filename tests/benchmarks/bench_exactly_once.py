"""Faust's processing guarantees on Apache Kafka: at_least_once against exactly_once (a benchmark, not a test).

    .venv/bin/python tests/benchmarks/bench_exactly_once.py                      # both, 1 Kafka node
    .venv/bin/python tests/benchmarks/bench_exactly_once.py --clean 1000 --killed 400 --nodes 3
    .venv/bin/python tests/benchmarks/bench_exactly_once.py --guarantee exactly_once

For each guarantee (SKYSTREAM_PROCESSING_GUARANTEE), on a fresh LocalKafka (stream/runtime/local_kafka.py):
two `skystream worker` processes and a watcher (tests/stack.py, started as an operator would) on real
SMASSII spectra, each copy with its own content hash. After a warm-up (both workers have joined):

(a) clean: ``--clean`` spectra dropped in the watched directory at once; spectra/s from the drop to the
    last prediction seen by a read_committed subscriber, and CPU ms per spectrum of the workers (with
    their process pools), the watcher and the broker JVM(s), from /proc (the machine may be shared:
    the CPU figure holds where the rate does not).
(b) killed: ``--killed`` spectra fed at ``--rate``/s; once a quarter of them are resolved one worker
    (its supervisor, and with it its Faust child) is SIGKILLed; the other takes its partitions after
    the group session timeout. Then the predictions topic is read from the start twice, with
    isolation_level read_committed and read_uncommitted: prediction messages per file id of this phase
    (duplicates = messages - files), and whether every file got its prediction.

Prints a table; docs/experiments/exactly-once.md has the method, the numbers and the decision.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from bench_stream import cpu_seconds, make_inputs  # noqa: E402
from helpers import process_gone, wait_until  # noqa: E402
from stack import Stack, file_ids, wait_resolved  # noqa: E402

import schemas  # noqa: E402
from stream.runtime.local_kafka import LocalKafka  # noqa: E402
from stream.settings import TOPICS  # noqa: E402

# What the worker logs say about transactions (counted per run: a fenced producer, a send without one).
LOG_PATTERNS = {
    "fenced": re.compile(r"ProducerFenced|fenced", re.I),
    "no txn producer": re.compile(r"No transaction producer found"),
    "txn error": re.compile(r"Exception in (begin|commit|abort)_transaction|InvalidTxnState|TransactionalError"),
    "traceback": re.compile(r"^Traceback", re.M),
}


async def read_predictions(broker: str, partitions: int, isolation: str, until: set[str] | None = None,
                           idle: float = 4.0, timeout: float = 600.0,
                           ) -> tuple[Counter[str], dict[str, tuple[float, float]], dict[str, int]]:
    """Every prediction on the predictions topic from the start, read with ``isolation``: messages per file
    id, when each file id was first seen (and how long after the watcher detected the file), and per
    partition the high watermark minus the last stable offset (an open transaction holds read_committed
    readers there). Stops once ``until`` (if given) is all seen and nothing arrived for ``idle`` seconds,
    or after ``timeout``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False,
                                isolation_level=isolation)
    await consumer.start()
    counts: Counter[str] = Counter()
    first: dict[str, tuple[float, float]] = {}
    try:
        tps = [TopicPartition(TOPICS["predictions"], p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for msgs in batches.values():
                for m in msgs:
                    last = time.monotonic()
                    try:
                        name, rec = schemas.decode(m.value)
                    except schemas.SchemaError:
                        continue
                    if name == "Prediction":
                        counts[rec["file_id"]] += 1
                        first.setdefault(rec["file_id"], (now, now - rec["detected_at_ms"] / 1000))
            if (until is None or until <= counts.keys()) and time.monotonic() - last > idle:
                break
        unstable = {}
        for tp in tps:
            hw, lso = consumer.highwater(tp), consumer.last_stable_offset(tp)
            if hw is not None and lso is not None and hw != lso:
                unstable[f"p{tp.partition}"] = hw - lso
    finally:
        await consumer.stop()
    return counts, first, unstable


def log_counts(stack: Stack) -> dict[str, int]:
    """How often each LOG_PATTERNS pattern occurs in the workers' logs."""
    text = "".join(p.read_text(errors="replace") for p in stack.logs.glob("worker-*.log"))
    return {name: len(pattern.findall(text)) for name, pattern in LOG_PATTERNS.items()}


def run(args: argparse.Namespace, guarantee: str, tmp: Path, spectra: list[Path]) -> dict:
    """Both phases for one guarantee on a fresh Kafka; the figures."""
    warm, clean, killed = (spectra[:args.warm], spectra[args.warm:args.warm + args.clean],
                           spectra[args.warm + args.clean:args.warm + args.clean + args.killed])
    out: dict = {"guarantee": guarantee}
    with LocalKafka(tmp / "kafka", nodes=args.nodes) as kafka:
        extra = {"replication_factor": 3, "min_insync_replicas": 2} if args.nodes == 3 else {}
        (tmp / "stack").mkdir(parents=True)
        stack = Stack(tmp / "stack", kafka.bootstrap, broker_engine="kafka", processing_guarantee=guarantee,
                      watch_republish_seconds=0.0, watch_reset_recheck_seconds=0.0, **extra)
        try:
            parts = stack.settings.partitions
            stack.start_worker()
            stack.start_worker()
            stack.start_watcher()
            stack.add(warm)
            wait_resolved(stack, file_ids(warm), timeout=300)
            # Both workers in the group with their partitions: the warm-up's outcomes came through.
            time.sleep(3)

            # (a) clean run
            ids = file_ids(clean)
            pids = {f"worker {i}": w.pid for i, w in enumerate(stack.workers)}
            pids["watcher"] = stack.watcher.pid  # type: ignore[union-attr]
            for pid in kafka.pids():
                pids[f"broker {pid}"] = pid
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            t0 = time.time()
            stack.add(clean)
            _, first, _ = asyncio.run(read_predictions(kafka.bootstrap, parts, "read_committed", until=ids, idle=0.0))
            t_last = max(first[i][0] for i in ids)
            latency = np.array([first[i][1] for i in ids]) * 1000
            out["p50_ms"], out["p99_ms"] = np.percentile(latency, 50), np.percentile(latency, 99)
            cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
            out["rate"] = len(ids) / (t_last - t0)
            out["cpu_workers"] = sum(v for k, v in cpu.items() if k.startswith("worker")) / len(ids) * 1000
            out["cpu_watcher"] = cpu["watcher"] / len(ids) * 1000
            out["cpu_broker"] = sum(v for k, v in cpu.items() if k.startswith("broker")) / len(ids) * 1000
            out["load"] = os.getloadavg()[0]

            # (b) a worker SIGKILLed mid-stream
            ids = file_ids(killed)
            before = len(stack.resolved())
            feeder = stack.feed(killed, per_second=args.rate)
            wait_until(lambda: len(stack.resolved()) - before >= len(killed) // 4 or not feeder.is_alive(), 300,
                       "outcomes of the fed files", interval=0.05)
            out["killed_mid_stream"] = feeder.is_alive()
            victim = stack.workers[0]
            t_kill = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            stack.procs.remove(victim)  # its Faust child dies with it (PDEATHSIG)
            wait_until(lambda: process_gone(victim.pid), 10, "the killed worker to be gone")
            feeder.join()
            wait_resolved(stack, ids, timeout=args.recovery)
            out["recovery_s"] = time.monotonic() - t_kill
            for isolation in ("read_committed", "read_uncommitted"):
                counts, _, unstable = asyncio.run(read_predictions(kafka.bootstrap, parts, isolation, until=ids,
                                                                   timeout=args.recovery))
                mine = {i: n for i, n in counts.items() if i in ids}
                out[isolation] = {"messages": sum(mine.values()), "files": len(mine),
                                  "duplicates": sum(mine.values()) - len(mine),
                                  "files_twice": sum(1 for n in mine.values() if n > 1),
                                  "missing": len(ids - mine.keys()), "open_txn": unstable}
            out["logs"] = log_counts(stack)
            out["all_up"] = stack.all_up()
        finally:
            stack.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guarantee", choices=("both", "at_least_once", "exactly_once"), default="both")
    ap.add_argument("--nodes", type=int, choices=(1, 3), default=1)
    ap.add_argument("--warm", type=int, default=20, help="warm-up spectra (not counted)")
    ap.add_argument("--clean", type=int, default=600, help="spectra of the clean run")
    ap.add_argument("--killed", type=int, default=400, help="spectra of the run with a worker SIGKILLed")
    ap.add_argument("--rate", type=float, default=40.0, help="spectra/s fed during the killed run")
    ap.add_argument("--recovery", type=float, default=300.0, help="seconds allowed for the killed run to resolve")
    ap.add_argument("--keep", type=Path, help="work here and keep it (logs in <guarantee>/stack/logs)")
    args = ap.parse_args()
    guarantees = ("at_least_once", "exactly_once") if args.guarantee == "both" else (args.guarantee,)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        inputs = Path(tmp) / "inputs"
        inputs.mkdir(parents=True)
        make_inputs(inputs, args.warm + args.clean + args.killed)
        spectra = sorted(inputs.iterdir())
        for guarantee in guarantees:
            print(f"-- {guarantee}: {args.nodes} Kafka node(s), load {os.getloadavg()[0]:.2f}", flush=True)
            results.append(run(args, guarantee, Path(tmp) / guarantee, spectra))
            print(results[-1], flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\n{args.nodes} Kafka node(s), 2 workers, {os.cpu_count()} cores; clean {args.clean} spectra, killed run "
          f"{args.killed} at {args.rate:g}/s; uptime: {uptime}")
    columns = ("guarantee", "spectra/s", "load", "CPU ms/spectrum workers", "watcher", "broker", "p50 ms",
               "p99 ms", "| killed: dup committed", "dup uncommitted", "missing", "recovery s")
    print("  ".join(columns))
    for r in results:
        rc, ru = r["read_committed"], r["read_uncommitted"]
        row = (r["guarantee"], f"{r['rate']:.1f}", f"{r['load']:.2f}", f"{r['cpu_workers']:.2f}",
               f"{r['cpu_watcher']:.2f}", f"{r['cpu_broker']:.2f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
               f"| {rc['duplicates']}", str(ru["duplicates"]), str(rc["missing"]), f"{r['recovery_s']:.1f}")
        print("  ".join(v.rjust(len(c)) for v, c in zip(row, columns, strict=True)))
    for r in results:
        print(f"{r['guarantee']}: open transactions at the end {r['read_committed']['open_txn'] or 'none'}; "
              f"worker logs {r['logs']}; every process up: {r['all_up']}; killed mid-stream: "
              f"{r['killed_mid_stream']}")

if __name__ == "__main__":
    main()
