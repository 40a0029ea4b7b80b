"""Transient is not final, through real workers on the embedded broker and a real S3 server (moto):
storage that is down, throttling or failing for a while, and a model registry that is unreachable,
delay predictions but dead-letter nothing; `skystream rejected replay` re-drives a dead letter whose
cause has been fixed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import wait_until
from s3_fixtures import (  # noqa: F401 - pytest fixtures
    FaultyS3,
    FlakyProxy,
    make_bucket,
    moto_endpoint,
    put_many,
    s3_env,
)

from stream.devstack.localstack import LocalStack, collect
from stream.models.registry import BUNDLED, S3Registry

pytestmark = pytest.mark.slow


def _sample(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rpartition(" ")[2])
    return 0.0


def _watch(stack: LocalStack, source: str) -> None:
    subprocess.run([sys.executable, "-m", "stream.cli", "watch", source, "--once", "--settle", "0",
                    "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)


def _worker_reading_through(stack: LocalStack, bucket: str, endpoint: str,
                            monkeypatch: pytest.MonkeyPatch) -> tuple[subprocess.Popen, int]:
    """The watcher lists the bucket while S3 is well; then a worker starts that reads S3 through
    ``endpoint`` (a faulty proxy). Returns the worker and its metrics port, once it owns the partition."""
    _watch(stack, f"s3://{bucket}/incoming")
    monkeypatch.setenv("SKYSTREAM_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    worker = stack.start_worker()
    stack.wait_ready()
    return worker, stack.worker_metrics_ports[0]


def _paused_on_storage(port: int) -> bool:
    return (_sample(port, "skystream_retries_total", stage="preprocess", reason="storage-unavailable") >= 2
            and _sample(port, "skystream_paused", stage="preprocess") == 1)


def test_storage_down_for_a_while_delays_predictions_without_dead_letters(
        tmp_path: Path, smass_dir: Path, s3_env: str, make_bucket,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = make_bucket()
    spectra = sorted(smass_dir.iterdir())[:5]
    put_many(s3_env, bucket, {f"incoming/{f.name}": f.read_bytes() for f in spectra})
    outage = FlakyProxy(s3_env, drop=10**9)  # every connection to S3 through it is cut: storage is down

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=1,
                    sources=f"s3://{bucket}/incoming") as stack:
        worker, port = _worker_reading_through(stack, bucket, outage.endpoint, monkeypatch)
        wait_until(lambda: _paused_on_storage(port), 120, "the worker to pause")
        outage.drop = 0  # storage is back
        out = asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions}) >= 5, 180))
        assert worker.poll() is None
        assert _sample(port, "skystream_paused", stage="preprocess") == 0
    assert out.rejected == [], out.rejected
    assert sorted({Path(p["source"]).name for p in out.predictions}) == sorted(f.name for f in spectra)


def test_s3_throttling_and_an_unreachable_registry_pause_the_worker_then_it_goes_on(
        tmp_path: Path, smass_dir: Path, s3_env: str, make_bucket,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs and models both on S3, read by the worker through a proxy that injects S3's own errors:
    first every request is throttled (503 SlowDown), then reads of inputs work but the registry answers
    500 InternalError, then all is well. The worker pauses at the right stage each time (metrics),
    nothing is dead-lettered, and every file gets its prediction."""
    bucket = make_bucket()
    spectra = sorted(smass_dir.iterdir())[:5]
    put_many(s3_env, bucket, {f"incoming/{f.name}": f.read_bytes() for f in spectra})
    registry = f"s3://{bucket}/registry"
    assert S3Registry(registry).champion("smass")  # seeded from the bundled models, over HTTP
    s3_faults = FaultyS3(s3_env)
    s3_faults.fault = lambda _method, _path: (503, "SlowDown")

    with LocalStack(state_dir=tmp_path / "state", registry=registry, partitions=1,
                    sources=f"s3://{bucket}/incoming") as stack:
        worker, port = _worker_reading_through(stack, bucket, s3_faults.endpoint, monkeypatch)
        wait_until(lambda: _paused_on_storage(port), 120, "the worker to pause on a throttled S3")
        # Inputs readable again; the registry's objects fail.
        s3_faults.fault = lambda _method, path: (500, "InternalError") if "/registry" in path else None
        wait_until(lambda: _sample(port, "skystream_retries_total", stage="score",
                                   reason="registry-unavailable") >= 1
                   and _sample(port, "skystream_paused", stage="score") == 1
                   and _sample(port, "skystream_paused", stage="preprocess") == 0, 120,
                   "the worker to read its inputs, then pause on the unreachable registry")
        s3_faults.fault = lambda _method, _path: None
        out = asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions}) >= 5, 180))
        assert worker.poll() is None
        assert _sample(port, "skystream_paused", stage="score") == 0
    s3_faults.close()
    assert s3_faults.faults_sent >= 3
    assert out.rejected == [], out.rejected
    assert sorted({Path(p["source"]).name for p in out.predictions}) == sorted(f.name for f in spectra)


def test_rejected_replay_redrives_a_fixed_dead_letter(tmp_path: Path, smass_dir: Path) -> None:
    inbox, aside = tmp_path / "inbox", tmp_path / "aside"
    inbox.mkdir()
    aside.mkdir()
    spectra = [Path(shutil.copy(f, inbox / f.name)) for f in sorted(smass_dir.iterdir())[:3]]
    moved = spectra[0]

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=1,
                    sources=str(inbox)) as stack:
        _watch(stack, str(inbox))
        shutil.move(moved, aside / moved.name)  # gone before a worker reads it: a dead letter
        stack.start_worker()
        stack.wait_ready()
        out = asyncio.run(collect(stack.broker, lambda c: len(c.predictions) >= 2 and c.rejected, 120))
        assert [(r["stage"], r["reason"], r["uri"]) for r in out.rejected] == [
            ("preprocess", "missing-file", str(moved))]

        listed = subprocess.run([sys.executable, "-m", "stream.cli", "rejected", "list", "--format", "json"],
                                env=stack.env(), capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert [json.loads(line)["uri"] for line in listed.stdout.splitlines()] == [str(moved)]

        shutil.move(aside / moved.name, moved)  # the cause is fixed
        done = subprocess.run([sys.executable, "-m", "stream.cli", "rejected", "replay", "--reason", "missing-file"],
                              env=stack.env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "re-drove 1 of 1" in done.stdout
        out = asyncio.run(collect(stack.broker, lambda c: moved.name in {Path(p["source"]).name
                                                                         for p in c.predictions}, 120))
    assert moved.name in {Path(p["source"]).name for p in out.predictions}, "the re-driven file has no prediction"
    assert len(out.rejected) == 1  # the old dead letter, nothing new
