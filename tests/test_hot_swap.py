"""Republishing with hot swap, on the embedded broker with a real worker process.

A new champion announced mid-stream is verified and served without a restart; predictions name the
version that made them; nothing is lost or scored twice with different answers; an announced version
that is not the champion is not loaded; a corrupt champion is refused while the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import wait_until

from stream.devstack.localstack import LocalStack, collect
from stream.models.announce import announce_async
from stream.models.registry import BUNDLED, LocalRegistry
from stream.settings import Settings

pytestmark = pytest.mark.slow


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _sample(port: int, name: str, **labels: str) -> float:
    """Value of one sample of ``name`` whose labels include ``labels`` (0 when absent)."""
    for line in _metrics(port).splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rpartition(" ")[2])
    return 0.0


def _serving(port: int) -> str | None:
    for line in _metrics(port).splitlines():
        if line.startswith('skystream_model_info{') and 'task="smass"' in line:
            return line.split('version="')[1].split('"')[0]
    return None


def _announce(stack: LocalStack, registry: LocalRegistry, version: str, sha256: str | None = None) -> None:
    record = {"task": "smass", "version": version, "action": "publish", "registry": registry.uri,
              "sha256": sha256 or registry.metadata("smass", version)["sha256"], "at_ms": int(time.time() * 1000)}
    asyncio.run(announce_async(Settings(broker=stack.broker), record))


def _feed(stack: LocalStack, files: list[Path], directory: Path) -> None:
    directory.mkdir()
    for f in files:
        shutil.copy(f, directory / f.name)
    subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(directory), "--once", "--settle", "0",
                    "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)


def test_new_version_mid_stream_and_corrupt_version_refused(tmp_path: Path, smass_dir: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry", seed_from=None)
    shutil.copytree(BUNDLED, registry.root)
    v1 = registry.champion("smass")
    spectra = sorted(smass_dir.iterdir())[:300]

    with LocalStack(state_dir=tmp_path / "state", registry=str(registry.root), partitions=2) as stack:
        worker = stack.start_worker()
        port = stack.worker_metrics_ports[0]
        stack.wait_ready()
        _feed(stack, spectra[:150], tmp_path / "batch1")
        asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions}) >= 150, 120))
        assert _serving(port) == v1

        # A new version: same network, new registry version (what a retrain publishes).
        current = registry.load("smass")
        v2 = registry.publish("smass", current.onnx, {k: v for k, v in current.metadata.items()
                                                      if k not in ("version", "sha256", "created")})
        _announce(stack, registry, v2)
        wait_until(lambda: _serving(port) == v2, 60, f"the worker to serve v{v2}")

        # A forged announcement naming a valid version that is not the champion: announcements only make
        # workers re-read the registry's champion, so nothing changes.
        forged = registry.publish("smass", current.onnx, dict(current.metadata), promote=False)
        _announce(stack, registry, forged)
        # A corrupt champion (not an ONNX graph, but its checksum is right), then a tampered one, made
        # champion by hand (`models promote` would refuse both); each is announced after the one before.
        v3 = registry.publish("smass", b"\x08\x07garbage" * 100, dict(current.metadata), promote=False)
        registry.promote("smass", v3)
        _announce(stack, registry, v3)
        wait_until(lambda: _sample(port, "skystream_model_refused_total", task="smass", reason="invalid-onnx") >= 1,
                   60, "the corrupt champion to be refused")
        v4 = registry.publish("smass", current.onnx, dict(current.metadata), promote=False)
        (registry.root / "smass" / v4 / "model.onnx").write_bytes(current.onnx[:-10])
        registry.promote("smass", v4)
        _announce(stack, registry, v4)
        wait_until(lambda: _sample(port, "skystream_model_refused_total", task="smass", reason="checksum-mismatch")
                   >= 1, 60, "the tampered champion to be refused")
        assert _serving(port) == v2, "a refused or merely announced version replaced the serving model"
        registry.rollback("smass")
        assert registry.rollback("smass") == v2

        _feed(stack, spectra[150:], tmp_path / "batch2")
        out = asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions}) >= 300, 120))
        assert worker.poll() is None

    by_file: dict[str, set] = {}
    for p in out.predictions:
        by_file.setdefault(Path(p["source"]).name, set()).add((p["prediction_id"], p["model_version"]))
    assert sorted(by_file) == sorted(f.name for f in spectra), "a file was lost"
    assert all(len(v) == 1 for v in by_file.values()), "a file was scored twice with different answers"
    first = {f.name for f in spectra[:150]}
    assert {v for name, s in by_file.items() if name in first for _, v in s} == {v1}
    assert {v for name, s in by_file.items() if name not in first for _, v in s} == {v2}
