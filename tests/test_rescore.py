"""Re-scoring after a promotion: retained features replay through the new champion, no file re-read."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream.devstack.localstack import LocalStack, collect
from stream.models.registry import BUNDLED, LocalRegistry

pytestmark = pytest.mark.slow


def test_rescore_publishes_new_version_predictions_for_every_retained_feature(tmp_path: Path, smass_dir: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry", seed_from=None)
    shutil.copytree(BUNDLED, registry.root)
    inputs = tmp_path / "in"
    inputs.mkdir()
    spectra = sorted(smass_dir.iterdir())[:120]
    for f in spectra:
        shutil.copy(f, inputs / f.name)

    with LocalStack(state_dir=tmp_path / "state", registry=str(registry.root), partitions=2) as stack:
        stack.start_worker()
        stack.wait_ready()
        subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(inputs), "--once", "--settle", "0",
                        "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)
        asyncio.run(collect(stack.broker, lambda c: len({p["file_id"] for p in c.predictions}) >= 120, 120))
        stack.stop_worker(stack.workers[0])

        current = registry.load("smass")
        v2 = registry.publish("smass", current.onnx, {k: v for k, v in current.metadata.items()
                                                      if k not in ("version", "sha256", "created")})
        # The inputs are gone: rescoring must not need them.
        shutil.rmtree(inputs)
        done = subprocess.run([sys.executable, "-m", "stream.cli", "rescore", "--kind", "spectrum"],
                              env=stack.env(), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "rescored 120 feature records" in done.stdout, done.stdout + done.stderr
        out = asyncio.run(collect(stack.broker, lambda c: sum(p["model_version"] == v2 for p in c.predictions)
                                  >= 120, 60))

    old = {p["file_id"]: p for p in out.predictions if p["model_version"] == current.version}
    new = {p["file_id"]: p for p in out.predictions if p["model_version"] == v2}
    assert set(old) == set(new) and len(new) == 120
    for fid, p in new.items():
        assert p["prediction_id"] != old[fid]["prediction_id"]  # a new answer, marked as such
        assert p["main_group"] == old[fid]["main_group"]  # same network, same answer
