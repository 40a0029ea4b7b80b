"""End-to-end throughput and latency through a local broker (a benchmark, not a test).

    .venv/bin/python tests/benchmarks/bench_stream.py --files 5000 --workers 2                 # tansu and Kafka
    .venv/bin/python tests/benchmarks/bench_stream.py --files 5000 --workers 2 --broker kafka
    .venv/bin/python tests/benchmarks/bench_stream.py --kind lightcurve --files 60 --workers 2

--broker both (the default) runs the same inputs through the embedded tansu broker and then through
a single-node Apache Kafka (stream/runtime/local_kafka.py), one after the other in one run, so the two
are compared on the same machine in the same state.

Inputs are real files, copied so that every copy has its own content hash (the watcher publishes
each content once): SMASSII spectra with a distinct trailing comment line, or the TESS light curves
of ../shared/data/tess/lc with a distinct header card. Workers are started and have joined their
group, and a warm-up set (--warmup files from a directory of their own: the broker JVM's JIT, the
first fetches and model runs) has gone through before the measured pass, so start-up is not counted.
Prints files per second (watcher start to last prediction received), latency from the watcher seeing
a file to the prediction arriving at a subscriber (p50/p99), and where the time goes: CPU seconds
per file of each process (workers with their process pools, watcher, broker; from /proc, so the
figure holds on a busy machine, where the rate does not) and the workers' stage timings. The CPU sum
bounds the rate on one machine: cores / (CPU per file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from stack import file_ids  # noqa: E402

from stream import kinds  # noqa: E402
from stream.devstack.localstack import LocalStack, collect  # noqa: E402
from stream.models.registry import BUNDLED  # noqa: E402

SMASS = ROOT.parent / "shared" / "data" / "smass2" / "smass2data.tar.gz"
LIGHT_CURVES = ROOT.parent / "shared" / "data" / "tess" / "lc"


def metric_sum(port: int, prefix: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, _, value = line.rpartition(" ")
            out[key] = out.get(key, 0.0) + float(value)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process and its live descendants (a worker's light-curve
    process pool), from Linux /proc."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, seconds)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited meanwhile
            continue
        stats[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (pp, _) in stats.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(stats[p][1] for p in tree if p in stats)


def make_light_curves(dest: Path, n: int, first: int = 0) -> None:
    from astropy.io import fits

    originals = sorted(LIGHT_CURVES.glob("*.fits"))
    for i in range(first, first + n):
        with fits.open(originals[i % len(originals)]) as hdul:
            hdul[0].header["BENCHCPY"] = (i, "copy number (benchmark input)")
            hdul.writeto(dest / f"copy{i:05d}_{originals[i % len(originals)].name}")


def make_inputs(dest: Path, n: int, first: int = 0) -> None:
    with tarfile.open(SMASS) as tar:
        originals = [tar.extractfile(m).read() for m in tar.getmembers()
                     if m.isfile() and ".spfit" not in m.name and Path(m.name).name.startswith("a")]
    for i in range(first, first + n):
        body = originals[i % len(originals)]
        (dest / f"a{i:07d}.[2]").write_bytes(body + f"# copy {i}\n".encode())


def watch_once(stack: LocalStack, folder: Path) -> subprocess.Popen:
    """`skystream watch --once` on ``folder`` (its own source and ledger), started."""
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "watch", str(folder), "--once", "--settle", "0",
                             "--metrics-port", "0"], env=stack.env(), stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--kind", choices=kinds.names(), default="spectrum")
    ap.add_argument("--warmup", type=int, default=None,
                    help="files streamed first and not counted (default: 1000 spectra or 12 light curves)")
    ap.add_argument("--broker", choices=("both", "tansu", "kafka"), default="both",
                    help="which local broker (both: tansu, then Kafka, in one run)")
    args = ap.parse_args()
    for engine in (("tansu", "kafka") if args.broker == "both" else (args.broker,)):
        run(args, engine)


def run(args: argparse.Namespace, engine: str) -> dict[str, Any]:
    """One pass of the benchmark on the ``engine`` broker; prints its figures and returns them.

    ``args``: files, workers, partitions, kind, warmup (None: the kind's default)."""
    unit = "spectra" if args.kind == "spectrum" else "light curves"
    task = kinds.by_name(args.kind).task

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = tmp / "inputs"
        inputs.mkdir()
        make = make_inputs if args.kind == "spectrum" else make_light_curves
        make(inputs, args.files)
        warmup = args.warmup if args.warmup is not None else (1000 if args.kind == "spectrum" else 12)
        warm = tmp / "warm-up"
        warm.mkdir()
        make(warm, warmup, first=args.files)
        warm_ids = file_ids(list(warm.iterdir()))
        registry = os.environ.get("SKYSTREAM_REGISTRY") or str(BUNDLED)
        with LocalStack(state_dir=tmp / "state", registry=registry, partitions=args.partitions,
                        engine=engine) as stack:
            for _ in range(args.workers):
                stack.start_worker()
            stack.wait_ready()
            # Steady state, not start-up: the first files pay for the JVM's JIT, the first fetches and
            # model runs. They go through first, from their own directory, and are not counted.
            if warmup:
                watch_once(stack, warm).wait()
                asyncio.run(collect(stack.broker, lambda c: warm_ids <= {p["file_id"] for p in c.predictions}
                                    | {r.get("file_id") for r in c.rejected}, 600))
            pids = {f"worker {i}": w.pid for i, w in enumerate(stack.workers)}
            if stack.broker_pid:
                pids[f"broker ({engine})"] = stack.broker_pid
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.time()
            watch = watch_once(stack, inputs)
            out = asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions} - warm_ids)
                                      >= args.files, 600))
            watch.wait()
            watcher_s = time.time() - t0
            cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
            children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the watcher, now reaped
            cpu["watcher (incl. interpreter start)"] = (children.ru_utime - children0.ru_utime
                                                        + children.ru_stime - children0.ru_stime)
            # What a watcher costs before its first file (interpreter, imports, ledger, producer): a
            # long-running watcher pays it once, so the backlog benchmark sets it apart.
            empty = tmp / "empty"
            empty.mkdir()
            watch_once(stack, empty).wait()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            watcher_start_s = after.ru_utime - children.ru_utime + after.ru_stime - children.ru_stime
            stages = {}
            for p in stack.worker_metrics_ports:
                for k, v in metric_sum(p, "skystream_stage_latency_seconds_").items():
                    stages[k] = stages.get(k, 0) + v
                for k, v in metric_sum(p, "skystream_inference_seconds_").items():
                    stages[k] = stages.get(k, 0) + v

    preds = {p["file_id"]: p for p in out.predictions if p["file_id"] not in warm_ids}
    rejected = [r for r in out.rejected if r.get("file_id") not in warm_ids]
    t_last = max(out.received_at[p["prediction_id"]] for p in preds.values())
    lat = np.array([out.received_at[p["prediction_id"]] - p["detected_at_ms"] / 1000 for p in preds.values()])
    messages = sum(p["file_id"] not in warm_ids for p in out.predictions)
    print(f"== broker {engine}: files {args.files} (after {warmup} not counted), workers {args.workers}, "
          f"partitions {args.partitions}")
    print(f"predictions {len(preds)} (messages {messages}), dead letters {len(rejected)}")
    print(f"throughput: {len(preds) / (t_last - t0):.1f} {unit}/s (watcher start to last prediction, "
          f"{t_last - t0:.2f} s; the watcher's own pass took {watcher_s:.2f} s incl. interpreter start)")
    print(f"latency file seen -> prediction at subscriber: p50 {np.percentile(lat, 50) * 1000:.0f} ms, "
          f"p99 {np.percentile(lat, 99) * 1000:.0f} ms")
    print(f"CPU per file ({unit}), by process:")
    for name, seconds in cpu.items():
        print(f"  {name}: {seconds / args.files * 1000:.2f} ms")
    total = sum(cpu.values()) / args.files
    print(f"  total: {total * 1000:.2f} ms -> at most {os.cpu_count() / total:.1f} {unit}/s on this machine's "
          f"{os.cpu_count()} cores with nothing else running")
    print("worker time per message (summed over workers):")
    for stage in ("preprocess", "score"):
        s = stages.get(f'skystream_stage_latency_seconds_sum{{stage="{stage}"}}', 0)
        n = stages.get(f'skystream_stage_latency_seconds_count{{stage="{stage}"}}', 1)
        print(f"  {stage}: {s / max(n, 1) * 1000:.3f} ms over {n:.0f} observations")
    s = stages.get(f'skystream_inference_seconds_sum{{task="{task}"}}', 0)
    n = stages.get(f'skystream_inference_seconds_count{{task="{task}"}}', 1)
    print(f"  onnx inference: {s / max(n, 1) * 1000:.3f} ms per batch, {n:.0f} batches")
    measured = {p["prediction_id"] for p in preds.values()}
    alerts = {a["alert_id"] for a in out.alerts if a["prediction_id"] in measured}
    return {"engine": engine, "files": args.files, "predictions": len(preds), "dead_letters": len(rejected),
            "alerts": len(alerts), "seconds": t_last - t0, "rate": len(preds) / (t_last - t0),
            "latency_p50_s": float(np.percentile(lat, 50)), "latency_p99_s": float(np.percentile(lat, 99)),
            "cpu_s": cpu, "watcher_start_s": watcher_start_s}


if __name__ == "__main__":
    main()
