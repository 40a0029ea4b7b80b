"""The archive: results outlive the stream as Parquet, and `skystream history` reads them back.

Real SMASSII spectra and the real TESS light curves of WASP-126 (TIC 25155310, sectors 1 and 6)
go through the real stream with an archiver beside the worker; the archive is then read after
everything has stopped. The S3 test runs the writer and the queries against a real S3 server (moto).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from data_paths import require_data
from helpers import wait_until
from s3_fixtures import make_bucket, moto_endpoint, s3_env  # noqa: F401 - fixtures

import schemas
from stream.archive.query import history, object_names, read
from stream.archive.store import archive_uri
from stream.archive.writer import Archiver
from stream.devstack.localstack import LocalStack, collect
from stream.features import detect
from stream.models.registry import BUNDLED, open_registry
from stream.runtime.kafka import ensure_topics
from stream.scoring.scorer import Scorer
from stream.settings import TOPICS, Settings
from stream.stars import sector_label

WASP126 = ["hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits", "tic25155310_s06_lc.fits"]
SPECTRA = ["a000004.[2]", "a000010.[2]", "au1996UK.[2]"]
WASP126_PERIOD = 3.2888


def _best_period(prediction: dict) -> float:
    return max(prediction["signals"], key=lambda s: s["snr"])["period_days"]


@pytest.mark.slow
def test_stream_results_are_archived_and_history_survives_the_stream(tmp_path: Path, smass_dir: Path) -> None:
    lc_dir = require_data("tess/lc")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in WASP126:
        shutil.copy(lc_dir / name, inputs / name)
    for name in SPECTRA:
        shutil.copy(smass_dir / name, inputs / name)
    (inputs / "empty.txt").write_bytes(b"")  # a dead letter

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=2) as stack:
        stack.start_worker()
        stack.start_archiver(batch_seconds=1.0)
        stack.wait_ready()
        settings = stack.settings()
        subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(inputs), "--once", "--settle", "0",
                        "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)
        # Both WASP-126 sectors, then the star's search over both (stream/stars) and its alert's update.
        out = asyncio.run(collect(stack.broker, lambda c: len(c.outcomes()) >= 6 and any(
            a.get("sectors") for a in c.alerts), 300))
        assert len(out.predictions) >= 6 and out.rejected
        wait_until(lambda: len(history("TIC 25155310", settings=settings)) == 3, 120, "WASP-126 in the archive")
        wait_until(lambda: read("rejected", settings=settings).num_rows >= 1, 60, "the dead letter in the archive")

        # A second archiver (another group) reads the same topics again: every record arrives twice.
        again = dataclasses.replace(settings, app_id=f"{settings.app_id}-again")
        stats = asyncio.run(Archiver(again, archive_uri(settings), max_seconds=1.0).run(once=True))
        assert stats.rows >= len(out.predictions) + len(out.alerts) + len(out.rejected)

    # Everything has stopped (the broker's topics are gone with it): the archive alone answers.
    raw = read("predictions", settings=settings, dedupe=False)
    assert raw.num_rows >= 2 * 6, "the second archiver wrote its copies"
    ids = read("predictions", settings=settings)["prediction_id"].to_pylist()
    assert sorted(ids) == sorted({p["prediction_id"] for p in out.predictions}) and len(ids) == 6
    alerts = read("alerts", settings=settings)["alert_id"].to_pylist()
    assert len(alerts) == len(set(alerts)) and {a["alert_id"] for a in out.alerts} <= set(alerts)
    assert read("alerts", settings=settings, dedupe=False).num_rows > len(alerts)
    dead = read("rejected", settings=settings).to_pylist()
    assert [(Path(d["uri"]).name, d["stage"]) for d in dead] == [("empty.txt", "watch")]

    rows = history("TIC 25155310", settings=settings)
    assert [sector_label(r) for r in rows] == ["1", "6", "1+6"]
    assert {Path(r["source"]).name for r in rows} == set(WASP126)
    assert [Path(s).name for s in rows[2]["sources"]] == WASP126
    for r in rows:
        assert abs(_best_period(r) - WASP126_PERIOD) / WASP126_PERIOD < 0.005, r["signals"]
        assert r["tic_id"] == 25155310 and r["model"] == "tess-triage-cnn"
    assert history("25155310", settings=settings) == rows
    (asteroid,) = history("1996uk", settings=settings)
    assert asteroid["object"] == "1996 UK" and asteroid["main_group"] in ("C", "S", "X", "Other")
    assert [r["object"] for r in history("4", settings=settings)] == ["4"]

    env = {**stack.env(), "SKYSTREAM_BROKER": ""}
    run = [sys.executable, "-m", "stream.cli", "history", "TIC 25155310"]
    table = subprocess.run(run, env=env, check=True, capture_output=True, text=True, timeout=120).stdout
    lines = [line for line in table.splitlines() if line.startswith("TIC 25155310")]
    assert len(lines) == 3 and all("P=3.28" in line for line in lines), table
    listed = json.loads(subprocess.run(run + ["--format", "json"], env=env, check=True, capture_output=True,
                                       text=True, timeout=120).stdout)
    assert sorted((sector_label(r), r["prediction_id"]) for r in listed) == sorted(
        (sector_label(r), r["prediction_id"]) for r in rows)

    # Subscribers' filters over the archive, after the stream stopped: the planet with its numbers as fields.
    alerts_cmd = [sys.executable, "-m", "stream.cli", "alerts", "--archive", "--kind", "lightcurve",
                  "--min-score", "0.5", "--format", "json"]
    out = subprocess.run(alerts_cmd, env=env, check=True, capture_output=True, text=True, timeout=120).stdout
    found = [json.loads(line) for line in out.splitlines() if line.strip()] if not out.lstrip().startswith("[") \
        else json.loads(out)
    # Sector 1's alert in its latest version (updated by the search over sectors 1 and 6), and sector 6's.
    assert sorted(sector_label(a) for a in found if a["tic_id"] == 25155310) == ["1+6", "6"], out[:500]
    for a in found:
        assert abs(a["period_days"] - WASP126_PERIOD) / WASP126_PERIOD < 0.005
        for key in ("epoch_btjd", "depth_ppm", "planet_radius_earth", "ra_deg", "dec_deg", "observation_start"):
            assert a[key] is not None, key


def _spectrum_predictions(smass_dir: Path) -> list[dict]:
    """Real predictions for real SMASSII spectra, scored by the bundled models (no worker needed)."""
    scorer = Scorer(open_registry(str(BUNDLED)))
    preds = []
    for name in SPECTRA:
        data = (smass_dir / name).read_bytes()
        _, features = detect.extract("spectrum", data, uri=str(smass_dir / name),
                                     file_id=hashlib.sha256(data).hexdigest(), detected_at_ms=1_700_000_000_000)
        (result,) = scorer.score("spectrum", [features])
        preds.append(result)
    return preds


async def _publish(bootstrap: str, settings: Settings, predictions: list[dict]) -> None:
    await ensure_topics(bootstrap, settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for p in predictions:
            await producer.send(TOPICS["predictions"], schemas.encode("Prediction", p), key=p["file_id"].encode())
        await producer.send(TOPICS["predictions"], b"not a message")  # skipped, and does not block
        await producer.flush()
    finally:
        await producer.stop()


def test_archive_on_s3_round_trip_without_duplicates(embedded_broker, smass_dir: Path, make_bucket) -> None:  # noqa: F811
    predictions = _spectrum_predictions(smass_dir)
    settings = Settings(broker=embedded_broker.bootstrap, partitions=1, app_id="archive-s3-test")
    uri = f"s3://{make_bucket()}/archive"
    asyncio.run(_publish(embedded_broker.bootstrap, settings, predictions))

    first = asyncio.run(Archiver(settings, uri, max_rows=2).run(once=True))
    assert first.rows == 3 and first.undecodable == 1
    assert len(first.files) == 2 and all(f.startswith(uri) for f in first.files)  # batches of 2 rows
    # The same group resumes after its committed offsets: nothing new, nothing written twice.
    assert asyncio.run(Archiver(settings, uri).run(once=True)).rows == 0
    # Another group replays everything: duplicates in storage, not in answers.
    replay = dataclasses.replace(settings, app_id="archive-s3-replay")
    assert asyncio.run(Archiver(replay, uri).run(once=True)).rows == 3

    assert read("predictions", uri=uri, settings=settings, dedupe=False).num_rows == 6
    ids = read("predictions", uri=uri, settings=settings)["prediction_id"].to_pylist()
    assert sorted(ids) == sorted(p["prediction_id"] for p in predictions)
    for p in predictions:
        (row,) = history(p["object"], uri=uri, settings=settings)
        assert row["prediction_id"] == p["prediction_id"] and row["main_group"] == p["main_group"]
        assert row["probabilities"] == pytest.approx(p["probabilities"])


def test_object_names_follow_the_stream_naming() -> None:
    assert object_names("TIC 25155310") == object_names("tic25155310") == ["TIC 25155310"]
    assert object_names("0004") == ["4", "TIC 4"]
    assert object_names("a000004.[2]") == ["4"]
    assert object_names("1996 uk") == object_names("au1996UK") == ["1996 UK"]
