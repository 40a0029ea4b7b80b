"""`skystream score`, the worker and `skystream rescore` give the same prediction for the same file.

Subscribers rely on it: a file scored offline, in the stream or in a replay with the same model
version must carry the same prediction_id and the same content, TOI match included. A real light
curve of a known planet (WASP-126 b, TIC 25155310) and a real SMASSII spectrum go through all three;
the Avro bytes of their predictions must be equal.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from data_paths import require_data

import schemas
from stream.devstack.localstack import LocalStack, collect
from stream.models.registry import BUNDLED

pytestmark = pytest.mark.slow


def test_score_worker_and_rescore_publish_identical_predictions(tmp_path: Path, smass_dir: Path) -> None:
    inputs = (tmp_path / "in").resolve()
    inputs.mkdir()
    wasp126 = shutil.copy(require_data("tess/lc/tic25155310_s06_lc.fits"), inputs)
    spectrum = shutil.copy(sorted(smass_dir.iterdir())[0], inputs)

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=1) as stack:
        worker = stack.start_worker()
        stack.wait_ready()
        subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(inputs), "--once", "--settle", "0",
                        "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)
        asyncio.run(collect(stack.broker, lambda c: len(c.predictions) >= 2, 420))
        stack.stop_worker(worker)
        done = subprocess.run([sys.executable, "-m", "stream.cli", "rescore"], env=stack.env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        out = asyncio.run(collect(stack.broker, lambda c: len(c.predictions) >= 4, 120))
        scored = subprocess.run([sys.executable, "-m", "stream.cli", "score", str(wasp126), str(spectrum)],
                                env=stack.env(), capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert not out.rejected, out.rejected

    # One partition: per file, the worker's prediction comes first, the replay's second.
    by_file: dict[str, list[dict]] = {}
    for p in out.predictions:
        by_file.setdefault(p["source"], []).append(p)
    offline = {p["source"]: p for p in map(json.loads, scored.stdout.splitlines())}
    assert sorted(by_file) == sorted(offline) == sorted([str(wasp126), str(spectrum)])
    for source, (streamed, replayed) in by_file.items():
        # Offline scoring has no watcher: its prediction carries no detection time, the rest must match.
        from_cli = dict(offline[source], detected_at_ms=streamed["detected_at_ms"])
        assert schemas.encode("Prediction", replayed) == schemas.encode("Prediction", streamed), source
        assert schemas.encode("Prediction", from_cli) == schemas.encode("Prediction", streamed), source

    best = max(by_file[str(wasp126)][0]["signals"], key=lambda s: s["snr"])
    assert best["known_toi"] == "TOI-114.01" and best["planet_probability"] > 0.5
