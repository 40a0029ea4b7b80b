"""End-to-end throughput and latency of spectra through the embedded broker (a benchmark, not a test).

    .venv/bin/python tests/benchmarks/bench_stream.py --files 5000 --workers 2

Inputs are the real SMASSII spectra, copied with a distinct trailing comment line so that every
copy has its own content hash (the watcher publishes each content once). Workers are started and
have joined their group before the watcher runs, so start-up is not counted. Prints spectra per
second (watcher start to last prediction received), latency from the watcher seeing a file to the
prediction arriving at a subscriber (p50/p99), and where the time goes (from the workers' metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stream.localstack import LocalStack, collect  # noqa: E402
from stream.registry import BUNDLED  # noqa: E402

SMASS = ROOT.parent / "shared" / "data" / "smass2" / "smass2data.tar.gz"


def metric_sum(port: int, prefix: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, _, value = line.rpartition(" ")
            out[key] = out.get(key, 0.0) + float(value)
    return out


def make_inputs(dest: Path, n: int) -> None:
    with tarfile.open(SMASS) as tar:
        originals = [tar.extractfile(m).read() for m in tar.getmembers()
                     if m.isfile() and ".spfit" not in m.name and Path(m.name).name.startswith("a")]
    for i in range(n):
        body = originals[i % len(originals)]
        (dest / f"a{i:07d}.[2]").write_bytes(body + f"# copy {i}\n".encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = tmp / "inputs"
        inputs.mkdir()
        make_inputs(inputs, args.files)
        registry = os.environ.get("SKYSTREAM_REGISTRY") or str(BUNDLED)
        with LocalStack(state_dir=tmp / "state", registry=registry, partitions=args.partitions) as stack:
            for _ in range(args.workers):
                stack.start_worker()
            stack.wait_ready()
            t0 = time.time()
            watch = subprocess.Popen([sys.executable, "-m", "stream.cli", "watch", str(inputs), "--once",
                                      "--settle", "0", "--metrics-port", "0"], env=stack.env(),
                                     stderr=subprocess.DEVNULL)
            out = asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions})
                                      >= args.files, 600))
            watch.wait()
            watcher_s = time.time() - t0
            stages = {}
            for p in stack.worker_metrics_ports:
                for k, v in metric_sum(p, "skystream_stage_latency_seconds_").items():
                    stages[k] = stages.get(k, 0) + v
                for k, v in metric_sum(p, "skystream_inference_seconds_").items():
                    stages[k] = stages.get(k, 0) + v

    preds = {p["file_id"]: p for p in out.predictions}
    t_last = max(out.received_at.values())
    lat = np.array([out.received_at[p["prediction_id"]] - p["detected_at_ms"] / 1000 for p in preds.values()])
    print(f"files {args.files}, workers {args.workers}, partitions {args.partitions}")
    print(f"predictions {len(preds)} (messages {len(out.predictions)}), dead letters {len(out.rejected)}")
    print(f"throughput: {len(preds) / (t_last - t0):.0f} spectra/s (watcher start to last prediction, "
          f"{t_last - t0:.2f} s; the watcher's own pass took {watcher_s:.2f} s incl. interpreter start)")
    print(f"latency file seen -> prediction at subscriber: p50 {np.percentile(lat, 50) * 1000:.0f} ms, "
          f"p99 {np.percentile(lat, 99) * 1000:.0f} ms")
    print("worker time per message (summed over workers):")
    for stage in ("preprocess", "score"):
        s = stages.get(f'skystream_stage_latency_seconds_sum{{stage="{stage}"}}', 0)
        n = stages.get(f'skystream_stage_latency_seconds_count{{stage="{stage}"}}', 1)
        print(f"  {stage}: {s / max(n, 1) * 1000:.3f} ms over {n:.0f} observations")
    s = stages.get('skystream_inference_seconds_sum{task="smass"}', 0)
    n = stages.get('skystream_inference_seconds_count{task="smass"}', 1)
    print(f"  onnx inference: {s / max(n, 1) * 1000:.3f} ms per batch, {n:.0f} batches")


if __name__ == "__main__":
    main()
