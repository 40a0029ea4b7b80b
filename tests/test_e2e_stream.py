"""End to end through the real embedded broker: watcher and two workers as separate processes.

Every real SMASSII file in gives exactly one distinct prediction out; every bad file gives one dead
letter with a reason; the workers survive bad input; two workers split the partitions; and a worker
killed mid-stream (SIGKILL, no goodbye) loses nothing: its partitions move to the other worker,
which replays what was not committed, with identical results.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

import schemas
from stream.devstack.localstack import Collected, LocalStack, collect
from stream.models.registry import BUNDLED

pytestmark = pytest.mark.slow


def _metric(port: int, name: str) -> dict[str, float]:
    """Samples of one metric family from a process's /metrics, keyed by their label text."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _watch_once(stack: LocalStack, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "watch", str(directory), "--once", "--settle", "0",
         "--metrics-port", "0"],
        env=stack.env(), capture_output=True, text=True, timeout=300, check=True,
    )


def test_stream_end_to_end(tmp_path: Path, smass_dir: Path, bad_files: dict[str, set[str]]) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(BUNDLED, registry)
    spectra = sorted(smass_dir.iterdir())
    first, second = tmp_path / "in1", tmp_path / "in2"
    first.mkdir()
    second.mkdir()
    half = len(spectra) // 2
    for f in spectra[:half]:
        os.symlink(f, first / f.name)
    for f in spectra[half:]:
        os.symlink(f, second / f.name)
    for name in bad_files:
        shutil.copy(tmp_path / "bad" / name, first / name)

    with LocalStack(state_dir=tmp_path / "state", registry=str(registry), partitions=4) as stack:
        a, b = stack.start_worker(), stack.start_worker()
        port_a, port_b = stack.worker_metrics_ports
        # Both workers joined the group and each owns part of the partitions.
        stack.wait_ready()
        assert 0 < stack.assigned(port_a) < 4 and 0 < stack.assigned(port_b) < 4

        _watch_once(stack, first)
        expected_first = half + len(bad_files)
        got = asyncio.run(collect(stack.broker, lambda c: len(c.outcomes()) >= expected_first, 120))
        assert len(got.outcomes()) >= expected_first

        done_a = sum(v for k, v in _metric(port_a, "skystream_messages_processed_total").items() if "score" in k)
        done_b = sum(v for k, v in _metric(port_b, "skystream_messages_processed_total").items() if "score" in k)
        assert done_a > 0 and done_b > 0, f"partitions not split: worker A scored {done_a}, B {done_b}"
        assert a.poll() is None and b.poll() is None, "a worker died on bad input"

        # Kill worker A without warning while the second half streams in.
        _watch_once(stack, second)
        time.sleep(0.3)
        a.send_signal(signal.SIGKILL)
        a.wait()
        total = len(spectra) + len(bad_files)
        out: Collected = asyncio.run(collect(stack.broker, lambda c: len(c.outcomes()) >= total, 240))
        assert b.poll() is None, "the surviving worker stopped"

    _check_messages(out, spectra, bad_files)


def _check_messages(out: Collected, spectra: list[Path], bad_files: dict[str, set[str]]) -> None:
    for name, records in (("Prediction", out.predictions), ("Rejected", out.rejected), ("Alert", out.alerts)):
        for rec in records:
            schemas.validate(name, rec)

    by_file: dict[str, list[dict]] = defaultdict(list)
    for p in out.predictions:
        by_file[Path(p["source"]).name].append(p)
    # Exactly one distinct prediction per real spectrum; a replay after the kill may repeat a
    # message, but never with a different answer.
    assert sorted(by_file) == sorted(f.name for f in spectra)
    for name, preds in by_file.items():
        distinct = {(p["prediction_id"], p["main_group"], p["bus_class"], tuple(sorted(p["probabilities"].items())))
                    for p in preds}
        assert len(distinct) == 1, f"{name}: {len(distinct)} different predictions"
    for preds in by_file.values():
        p = preds[0]
        assert p["main_group"] in {"C", "S", "X", "Other"}
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert p["model"] and p["model_version"]

    dead: dict[str, list[dict]] = defaultdict(list)
    for r in out.rejected:
        dead[Path(r["uri"]).name].append(r)
    assert set(dead) == set(bad_files), f"dead letters for {sorted(dead)}"
    for name, reasons in bad_files.items():
        assert {r["reason"] for r in dead[name]} <= reasons, f"{name}: {dead[name]}"
        assert all(r["error"] and r["stage"] in ("watch", "preprocess") for r in dead[name])


def test_graceful_restart_mid_stream_loses_nothing(tmp_path: Path, smass_dir: Path) -> None:
    """A worker stopped with SIGTERM (a deploy, Ctrl-C) while events are in flight: its successor
    finds every spectrum that has no prediction yet uncommitted, so every file gets its prediction.
    Guards the batched agents: a batch taken but not finished must not be committed on the way out."""
    registry = tmp_path / "registry"
    shutil.copytree(BUNDLED, registry)
    spectra = sorted(smass_dir.iterdir())
    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in spectra:
        os.symlink(f, inputs / f.name)

    with LocalStack(state_dir=tmp_path / "state", registry=str(registry), partitions=4) as stack:
        first = stack.start_worker()
        stack.wait_ready()
        _watch_once(stack, inputs)
        # Stop it once it has scored part of the stream, with the rest still coming.
        port = stack.worker_metrics_ports[0]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = sum(v for k, v in _metric(port, "skystream_messages_processed_total").items() if "score" in k)
            if done >= 100:
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) is not None
        partial = asyncio.run(collect(stack.broker, lambda c: False, 3))
        assert len({p["file_id"] for p in partial.predictions}) < len(spectra), "stopped too late to test"

        stack.start_worker()
        stack.wait_ready()
        out = asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions}) >= len(spectra),
                                  180))
    assert sorted({Path(p["source"]).name for p in out.predictions}) == sorted(f.name for f in spectra)
