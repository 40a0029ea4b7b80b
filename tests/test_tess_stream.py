"""TESS light curves through the real stream: watcher -> preprocess (period search) -> score -> alerts.

Real SPOC and TESS-alerts light curves from ../shared/data/tess/lc, plus broken FITS files, through
the embedded broker and a worker process.
"""

from __future__ import annotations

import asyncio
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

NON_TOI = {260161111, 382575718, 188172563, 1629601}


def _bad_fits(directory: Path, real: Path) -> dict[str, str]:
    """Broken FITS inputs -> the stage they must be stopped at."""
    data = real.read_bytes()
    (directory / "truncated_lc.fits").write_bytes(data[: len(data) // 3])
    header = b"SIMPLE  =                    T" + b" " * 50
    header += b"BITPIX  =                    8" + b" " * 50 + b"NAXIS   =                    0" + b" " * 50
    header += b"END" + b" " * 77
    (directory / "image.fits").write_bytes(header.ljust(2880, b" "))
    return {"truncated_lc.fits": "preprocess", "image.fits": "watch"}


def test_light_curves_flow_to_predictions_and_alerts(tmp_path: Path) -> None:
    lc_dir = require_data("tess/lc")
    inputs = tmp_path / "in"
    inputs.mkdir()
    curves = sorted(lc_dir.glob("*.fits"))
    for f in curves:
        shutil.copy(f, inputs / f.name)
    bad = _bad_fits(inputs, curves[0])

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=2) as stack:
        worker = stack.start_worker()
        stack.wait_ready()
        subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(inputs), "--once", "--settle", "0",
                        "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)
        out = asyncio.run(collect(stack.broker, lambda c: len(c.outcomes()) >= len(curves) + len(bad), 420))
        assert worker.poll() is None

    for name, records in (("Prediction", out.predictions), ("Alert", out.alerts), ("Rejected", out.rejected)):
        for r in records:
            schemas.validate(name, r)
    preds = {Path(p["source"]).name: p for p in out.predictions}
    assert sorted(preds) == sorted(f.name for f in curves)
    dead = {Path(r["uri"]).name: r for r in out.rejected}
    assert {n: r["stage"] for n, r in dead.items()} == bad
    assert all(r["reason"] and r["error"] for r in dead.values())

    wasp126 = preds["tic25155310_s06_lc.fits"]
    assert wasp126["object"] == "TIC 25155310" and wasp126["sector"] == 6
    best = max(wasp126["signals"], key=lambda s: s["snr"])
    assert abs(best["period_days"] - 3.2888) / 3.2888 < 0.005
    assert best["planet_probability"] > 0.5 and best["known_toi"]

    alerted = {a["object"] for a in out.alerts}
    assert "TIC 25155310" in alerted
    assert not alerted & {f"TIC {t}" for t in NON_TOI}, "a star with no known transit raised an alert"
    for a in out.alerts:
        png = a["figure_png"] or Path(a["figure_uri"]).read_bytes()
        assert png.startswith(b"\x89PNG") and a["model"] == "tess-triage-cnn"
