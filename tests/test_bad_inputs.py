"""A corpus of bad inputs (tests/bad_inputs.py) through the real stream: watcher -> worker -> dead letters.

Every case gets exactly one dead letter with its reason, whether the watcher refuses it or the worker
does (including a file whose preprocessing overruns its time budget and one that overruns its memory
bound: their child process is killed or replaced); the worker stays up, and a good file sent after
the corpus still gets its prediction.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import bad_inputs
import pytest
from data_paths import require_data

from stream.devstack.localstack import LocalStack, collect
from stream.models.registry import BUNDLED

pytestmark = pytest.mark.slow


def _watch_once(stack: LocalStack, directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(directory), "--once", "--settle", "0",
                    "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=300)


def test_each_bad_input_gets_one_dead_letter_and_the_worker_stays_up(
    tmp_path: Path, smass_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in bad_inputs.LIMITS.items():
        monkeypatch.setenv(name, value)
    spectrum = sorted(smass_dir.iterdir())[0]
    lightcurve = sorted(require_data("tess/lc").glob("tic*.fits"))[0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    expected = bad_inputs.build(inputs, spectrum, lightcurve)
    assert len(expected) >= 30

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=2) as stack:
        worker = stack.start_worker()
        stack.wait_ready()
        _watch_once(stack, inputs)
        out = asyncio.run(collect(stack.broker, lambda c: len(c.rejected) >= len(expected), 420))
        assert worker.poll() is None, "the worker died on bad input"

        # After the corpus, the same worker still scores a good file (copied in: links are refused).
        good = tmp_path / "later"
        good.mkdir()
        shutil.copy(smass_dir / sorted(p.name for p in smass_dir.iterdir())[1], good / "good.txt")
        _watch_once(stack, good)
        after = asyncio.run(collect(stack.broker, lambda c: bool(c.predictions), 180))
        assert worker.poll() is None

    got = {r["uri"]: (r["stage"], r["reason"]) for r in out.rejected}
    assert Counter(r["uri"] for r in out.rejected) == Counter(list(expected)), "not exactly one dead letter per case"
    assert got == expected
    assert all(r["error"] for r in out.rejected)
    assert [Path(p["source"]).name for p in after.predictions] == ["good.txt"]
