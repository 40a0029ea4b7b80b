"""Latency under paced load, and a soak (a benchmark, not a test).

    .venv/bin/python tests/benchmarks/bench_load.py --rate 250 --seconds 60          # one paced run
    .venv/bin/python tests/benchmarks/bench_load.py --capacity 500 --fractions 0.5,0.8
    .venv/bin/python tests/benchmarks/bench_load.py --rate 250 --seconds 1800 --report-every 60   # soak
    .venv/bin/python tests/benchmarks/bench_load.py --broker kafka --rate 125 --seconds 1800 --report-every 120
    SKYSTREAM_RETENTION_MS=120000 .venv/bin/python tests/benchmarks/bench_load.py --broker kafka ...  # disk bound

--broker tansu (default), kafka, or both (one after the other, same inputs). On Kafka each window also
prints the bytes of the broker's log on disk, which topic retention bounds (SKYSTREAM_RETENTION_MS /
SKYSTREAM_RETENTION_BYTES shorten it to show that within a run).

Files arrive at a steady rate (not a burst): a pacer writes real SMASSII spectra (each copy with its
own content) into the watched directory, renamed into place as a real uploader would, and removes
each file once its prediction arrived, so the directory stays small however long the run. The
watcher runs continuously (poll interval --interval), the workers and broker as in production.

Latency is measured from the moment a file is in the directory to the moment its prediction is
read by a subscriber (so it includes the watcher's poll interval). Printed per window: arrivals,
predictions, p50/p99 latency, CPU per file of the workers, the broker, the watcher and their total,
memory (RSS of each worker with its children, and of the broker) and, on Kafka, the disk its log
takes (allocated blocks). A flat memory and latency line over a long run is the
goal; the embedded broker keeps every message in memory, so its line cannot be flat.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_stream import cpu_seconds  # noqa: E402

import schemas  # noqa: E402
from stream.devstack.localstack import LocalStack  # noqa: E402
from stream.models.registry import BUNDLED  # noqa: E402
from stream.settings import TOPICS, shared_data  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the preprocessing children), in MB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def spectra() -> list[bytes]:
    with tarfile.open(shared_data() / "smass2" / "smass2data.tar.gz") as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers()
                if m.isfile() and ".spfit" not in m.name and Path(m.name).name.startswith("a")]


class Run:
    """Arrival and prediction times by file_id, and the windows reported so far."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.paths: dict[str, Path] = {}
        self.latency: dict[str, float] = {}
        self.rejected = 0


async def pace(run: Run, inbox: Path, rate: float, seconds: float, bodies: list[bytes]) -> int:
    """Write ``rate`` files per second for ``seconds``; returns how many were written."""
    n, t0 = 0, time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate) + 1
        while n < due:
            body = bodies[n % len(bodies)] + f"# load {n} {time.time_ns()}\n".encode()
            tmp, path = inbox / f".a{n:08d}.part", inbox / f"a{n:08d}.[2]"
            tmp.write_bytes(body)
            os.rename(tmp, path)
            file_id = hashlib.sha256(body).hexdigest()
            run.arrived[file_id], run.paths[file_id] = time.time(), path
            n += 1
        await asyncio.sleep(max(0.0, (n / rate) - (time.monotonic() - t0)))
    return n


async def follow(run: Run, broker: str, stop: asyncio.Event) -> None:
    """Read predictions and dead letters as they come; remove each answered file from the inbox."""
    consumer = AIOKafkaConsumer(TOPICS["predictions"], TOPICS["rejected"], bootstrap_servers=broker,
                                auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    name, rec = schemas.decode(m.value)
                    fid = rec.get("file_id")
                    if fid not in run.arrived or fid in run.latency:
                        continue
                    run.latency[fid] = now - run.arrived[fid]
                    run.rejected += name == "Rejected"
                    run.paths.pop(fid).unlink(missing_ok=True)
    finally:
        await consumer.stop()


def window_line(run: Run, t_from: float, t_to: float, stack: LocalStack,
                cpu: tuple[tuple[float, float, float], tuple[float, float, float]]) -> str:
    """One printed window; ``cpu`` is (workers, broker, watcher) CPU seconds at its start and at its end."""
    lat = np.array([run.latency[f] for f, t in run.arrived.items() if t_from <= t < t_to and f in run.latency])
    arrived = sum(t_from <= t < t_to for t in run.arrived.values())
    mem = " ".join(f"{rss_mb(w.pid):.0f}" for w in stack.workers)
    p = (f"{np.percentile(lat, 50) * 1000:6.0f} {np.percentile(lat, 99) * 1000:6.0f}" if lat.size
         else "     -      -")
    (w0, b0, s0), (w1, b1, s1) = cpu
    per_file = lambda a, b: (b - a) / max(arrived, 1) * 1000  # noqa: E731
    total = per_file(w0 + b0 + s0, w1 + b1 + s1)
    broker = stack.broker_pid
    broker_mem = f"{rss_mb(broker):6.0f}" if broker else "     -"
    disk = stack.broker_log_bytes()
    disk_mb = f"{disk / 1e6:8.1f}" if disk is not None else "       -"
    return (f"{t_from - run.t0:7.0f} {arrived:7d} {lat.size:7d} {p}   {per_file(w0, w1):6.2f}  {per_file(b0, b1):6.2f}"
            f"  {per_file(s0, s1):6.2f} {total:6.2f}   {mem}  {broker_mem}  {disk_mb}")


async def measure(stack: LocalStack, inbox: Path, rate: float, seconds: float, every: float,
                  bodies: list[bytes], watcher_pid: int) -> Run:
    run = Run()
    stop = asyncio.Event()
    reader = asyncio.create_task(follow(run, stack.broker, stop))
    run.t0 = time.time()
    pacer = asyncio.create_task(pace(run, inbox, rate, seconds, bodies))
    print(f"rate {rate:.0f} files/s for {seconds:.0f} s (workers {len(stack.workers)})")
    print(f"broker {stack.engine}")
    print("      t arrived  answered  p50ms  p99ms  CPU ms/file: workers broker watcher  total"
          "   RSS MB: workers broker  log MB")

    def cpu_of() -> tuple[float, float, float]:
        broker = stack.broker_pid
        return (sum(cpu_seconds(w.pid) for w in stack.workers), cpu_seconds(broker) if broker else 0.0,
                cpu_seconds(watcher_pid))

    last_t, last_cpu = run.t0, cpu_of()
    while not pacer.done():
        await asyncio.sleep(min(every, max(0.1, run.t0 + seconds - time.time() + 0.05)))
        now, cpu = time.time(), cpu_of()
        if now - last_t >= every or pacer.done():
            print(window_line(run, last_t, now, stack, (last_cpu, cpu)), flush=True)
            last_t, last_cpu = now, cpu
    # Let the tail drain: every file answered, or 60 s.
    deadline = time.time() + 60
    while len(run.latency) < len(run.arrived) and time.time() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await reader
    lat = np.array(list(run.latency.values()))
    print(f"total: {len(run.arrived)} arrived, {len(run.latency)} answered ({run.rejected} dead letters), "
          f"p50 {np.percentile(lat, 50) * 1000:.0f} ms, p99 {np.percentile(lat, 99) * 1000:.0f} ms, "
          f"max {lat.max() * 1000:.0f} ms")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, help="files per second (or give --capacity and --fractions)")
    ap.add_argument("--capacity", type=float, help="measured capacity in files/s (bench_stream.py)")
    ap.add_argument("--fractions", default="0.5,0.8", help="fractions of --capacity to run at")
    ap.add_argument("--seconds", type=float, default=60, help="length of each paced run")
    ap.add_argument("--report-every", type=float, default=10, help="seconds per printed window")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--interval", type=float, default=0.2, help="the watcher's poll interval (s)")
    ap.add_argument("--broker", choices=("tansu", "kafka", "both"), default="tansu",
                    help="which local broker (both: tansu, then Kafka, same rates)")
    args = ap.parse_args()
    rates = [args.rate] if args.rate else [args.capacity * float(f) for f in args.fractions.split(",")]
    if not all(rates):
        ap.error("give --rate, or --capacity with --fractions")
    bodies = spectra()
    engines = ("tansu", "kafka") if args.broker == "both" else (args.broker,)
    for engine, rate in [(e, r) for e in engines for r in rates]:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            inbox = tmp / "inbox"
            inbox.mkdir()
            with LocalStack(state_dir=tmp / "state", registry=str(BUNDLED), partitions=args.partitions,
                            engine=engine) as stack:
                for _ in range(args.workers):
                    stack.start_worker()
                stack.wait_ready()
                watcher = subprocess.Popen([sys.executable, "-m", "stream.cli", "watch", str(inbox), "--settle", "0",
                                            "--interval", str(args.interval), "--metrics-port", "0"],
                                           env=stack.env(), stderr=subprocess.DEVNULL)
                try:
                    asyncio.run(measure(stack, inbox, rate, args.seconds, args.report_every, bodies, watcher.pid))
                finally:
                    watcher.send_signal(signal.SIGTERM)
                    watcher.wait(30)


if __name__ == "__main__":
    main()
