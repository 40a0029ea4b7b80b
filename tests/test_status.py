"""`skystream status` summarises a running stream from its workers' and watcher's /metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream.devstack.localstack import LocalStack, collect
from stream.models.registry import BUNDLED

pytestmark = pytest.mark.slow


def test_status_reports_what_the_stream_did(tmp_path: Path, smass_dir: Path, bad_files) -> None:
    inputs = tmp_path / "bad"  # the bad files are already there; add 60 real spectra
    for f in sorted(smass_dir.iterdir())[:60]:
        shutil.copy(f, inputs / f.name)
    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=2) as stack:
        stack.start_worker()
        stack.wait_ready()
        subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(inputs), "--once", "--settle", "0",
                        "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)
        out = asyncio.run(collect(stack.broker, lambda c: len(c.outcomes()) >= 60 + len(bad_files), 120))
        target = f"127.0.0.1:{stack.worker_metrics_ports[0]}"
        res = subprocess.run([sys.executable, "-m", "stream.cli", "status", "--targets", target, "--interval", "0.5",
                              "--json"], capture_output=True, text=True, timeout=60, check=True)
        human = subprocess.run([sys.executable, "-m", "stream.cli", "status", "--targets", target, "--interval",
                                "0.2"], capture_output=True, text=True, timeout=60, check=True).stdout
    summary = json.loads(res.stdout)
    assert sum(summary["totals"]["predictions"].values()) == len({p["file_id"] for p in out.predictions}) == 60
    worker_dead = [r for r in out.rejected if r["stage"] != "watch"]  # the watcher's are in its own metrics
    assert sum(summary["totals"]["dead_letters"].values()) == len(worker_dead)
    assert "smass: smass-cnn v3" in summary["models"]  # workers load every champion at start (v3 since issue 17)
    assert summary["latency_p50_s"] is not None and summary["latency_p99_s"] >= summary["latency_p50_s"]
    assert "predictions" in human and "smass-cnn v3" in human
