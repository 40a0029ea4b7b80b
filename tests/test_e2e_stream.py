"""End to end through the real embedded broker: watcher and two workers as separate processes.

Every real SMASSII file in gives exactly one distinct prediction out; every bad file gives one dead
letter with a reason; the workers survive bad input; two workers split the partitions; and a worker
killed mid-stream (SIGKILL, no goodbye) loses nothing: the other worker and its restarted successor
replay what was not committed, with identical results.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import wait_until

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


def _scored(*ports: int) -> float:
    """Predictions the workers behind ``ports`` have made so far (their score-stage "ok" counters)."""
    return sum(v for port in ports for k, v in _metric(port, "skystream_messages_processed_total").items()
               if 'agent="score"' in k and 'outcome="ok"' in k)


def _snapshot(stack: LocalStack, at_least: int) -> Collected:
    """What is on the output topics now: read from the start until ``at_least`` predictions (a count
    known to be there already) have arrived; each read takes everything available, up to 2000."""
    return asyncio.run(collect(stack.broker, lambda c: len(c.predictions) >= at_least, 60))


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
        shutil.copy(f, first / f.name)
    for f in spectra[half:]:
        shutil.copy(f, second / f.name)
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

        done_a, done_b = _scored(port_a), _scored(port_b)
        assert done_a > 0 and done_b > 0, f"partitions not split: worker A scored {done_a}, B {done_b}"
        assert a.poll() is None and b.poll() is None, "a worker died on bad input"

        # Kill worker A without warning while the second half streams in: once the workers have
        # scored some of it, and (checked right after) before all of it had predictions.
        watch_log = tmp_path / "watch-second.log"
        with watch_log.open("wb") as log:
            watcher = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "watch", str(second), "--once", "--settle", "0",
                 "--metrics-port", "0"], env=stack.env(), stdout=log, stderr=subprocess.STDOUT)
        first_half = int(done_a + done_b)
        wait_until(lambda: _scored(port_a, port_b) > first_half, 240, "the workers to score part of the second half",
                   interval=0.05)
        a.send_signal(signal.SIGKILL)
        a.wait()
        # Read at once: the killed worker's partitions wait for the group to notice (its session timeout).
        at_kill = {p["file_id"] for p in _snapshot(stack, first_half + 1).predictions}
        assert half < len(at_kill) < len(spectra), f"killed with {len(at_kill)} of {len(spectra)} predicted"
        assert watcher.wait(300) == 0, watch_log.read_text()

        # A supervisor restarts the killed worker; between them the two replay what A left uncommitted.
        restarted = stack.start_worker()
        out: Collected = asyncio.run(collect(stack.broker, lambda c: _resolved(c) >= len(spectra) + len(bad_files),
                                             240))
        assert b.poll() is None and restarted.poll() is None, "a worker stopped after the kill"

    _check_messages(out, spectra, bad_files)


def _resolved(out: Collected) -> int:
    """Input files with an outcome so far: a prediction or a dead letter."""
    return len({p["file_id"] for p in out.predictions} | {Path(r["uri"]).name for r in out.rejected})


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
    # Keyed by content: one file_id per spectrum, and every copy of its prediction is the same message.
    by_id: dict[str, list[dict]] = defaultdict(list)
    for p in out.predictions:
        by_id[p["file_id"]].append(p)
    assert set(by_id) == {hashlib.sha256(f.read_bytes()).hexdigest() for f in spectra}
    for file_id, preds in by_id.items():
        assert all(p == preds[0] for p in preds), f"{file_id}: replayed predictions differ"
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
        shutil.copy(f, inputs / f.name)

    with LocalStack(state_dir=tmp_path / "state", registry=str(registry), partitions=4) as stack:
        first = stack.start_worker()
        stack.wait_ready()
        _watch_once(stack, inputs)
        # Stop it once it has scored part of the stream, with the rest still coming.
        port = stack.worker_metrics_ports[0]
        scored = wait_until(lambda: (n := _scored(port)) >= 100 and n, 120, "100 scored spectra", interval=0.05)
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) is not None
        partial = _snapshot(stack, int(scored))
        assert len({p["file_id"] for p in partial.predictions}) < len(spectra), "stopped too late to test"

        stack.start_worker()
        stack.wait_ready()
        out = asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions}) >= len(spectra),
                                  180))
    assert sorted({Path(p["source"]).name for p in out.predictions}) == sorted(f.name for f in spectra)
