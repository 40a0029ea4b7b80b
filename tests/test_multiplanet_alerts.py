"""A multi-planet system raises one alert per planet, and everything downstream keeps all of them.

L 98-59 (TIC 307210830; TOI-175.03, .01 and .02 at 2.253, 3.691 and 7.451 d) is not among the real
light curves in ../shared/data/tess/lc, so its three planets (the TOI catalogue's periods, durations
and depths) are injected as trapezoids into the real light curve of a quiet star that is no TOI
host, written back as a SPOC FITS file, and scored by the stream's own extract and scorer. The
alerts then go through the alert client (`skystream alerts` on the embedded broker, with
at-least-once repeats), the filter agent's routing, the archive (`alerts --archive`, `history`),
the REST API and the web view: each must keep the three planets apart by ``alert_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from data_paths import require_data
from helpers import predict_file, produce_alerts, trapezoid
from test_api import fetch, get_json, page, serving

import schemas
from stream.alerts.client import archived_alerts
from stream.alerts.filters import parse_filter, route_alerts
from stream.alerts.policy import alert_id_for, alerts_for
from stream.archive import query
from stream.archive.writer import day_of, to_row, write_batch
from stream.cli.entry import main
from stream.models.registry import BUNDLED
from stream.runtime.kafka import ensure_topics
from stream.scoring.scorer import scorer_for
from stream.settings import Settings

HOST = "tic188172563_s09_lc.fits"  # not a TOI host; quiet enough that all three planets pass the policy
HOST_OBJECT = "TIC 188172563"
# L 98-59's planets as the TOI catalogue has them: period (d), duration (h), depth (ppm).
L98_59 = [(2.2531062, 0.99, 682.0), (3.6906759, 1.107, 1657.0), (7.4507305, 1.961, 1542.0)]


def period_match(found: float, known: float) -> bool:
    return abs(found / known - 1.0) < 0.005


@pytest.fixture(scope="module")
def lc_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host's real SPOC file with L 98-59's three planets multiplied into PDCSAP_FLUX."""
    out = tmp_path_factory.mktemp("lc") / "l98-59-injected_s09_lc.fits"
    with fits.open(require_data("tess/lc/" + HOST), memmap=False) as hdul:
        table = hdul[1].data
        t = np.asarray(table["TIME"], dtype=np.float64)
        start = np.nanmin(t)
        factor = np.ones_like(t)
        ok = np.isfinite(t)
        for k, (period, hours, ppm) in enumerate(L98_59):
            # Epochs off the data's start (and each other's) so no transit falls in a gap by design.
            factor[ok] *= trapezoid(t[ok], period, start + 0.37 * period + 0.1 * k, hours / 24.0, ppm * 1e-6)
        table["PDCSAP_FLUX"] = table["PDCSAP_FLUX"] * factor
        hdul.writeto(out)
    return out


def score(path: Path, settings: Settings) -> dict[str, Any]:
    """The file's Prediction through the stream's own extract and scorer."""
    return predict_file(path, scorer_for(settings))[1]


@pytest.fixture(scope="module")
def settings(lc_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # The alert policy reads the light curve again for its figure: only under the configured sources.
    return Settings(registry=str(BUNDLED), sources=str(lc_file.parent),
                    archive=str(tmp_path_factory.mktemp("archive")),
                    artifacts=str(tmp_path_factory.mktemp("artifacts")))


@pytest.fixture(scope="module")
def scored(lc_file: Path, settings: Settings) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    prediction = score(lc_file, settings)
    return prediction, alerts_for(prediction, settings)


def without_time(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k != "alerted_at"}


def test_the_search_finds_the_three_injected_planets(scored: tuple[dict, list[dict]]) -> None:
    prediction, _ = scored
    periods = [s["period_days"] for s in prediction["signals"]]
    assert len(periods) == 3, periods
    for known, _, _ in L98_59:
        assert sum(period_match(p, known) for p in periods) == 1, (known, periods)


def test_each_planet_is_its_own_alert_and_a_replay_gives_the_same_ids(
        scored: tuple[dict, list[dict]], lc_file: Path, settings: Settings) -> None:
    prediction, alerts = scored
    assert len(alerts) == 3
    assert len({a["alert_id"] for a in alerts}) == 3, "one alert_id per planet"
    for known, _, _ in L98_59:
        assert sum(period_match(a["period_days"], known) for a in alerts) == 1, known
    for a in alerts:
        i = next(i for i, s in enumerate(prediction["signals"]) if s["period_days"] == a["period_days"])
        assert a["alert_id"] == alert_id_for(prediction["prediction_id"], a["reason"], i)
        assert a["prediction_id"] == prediction["prediction_id"] and a["object"] == HOST_OBJECT
        schemas.validate("Alert", a)
    # The same file scored again (same model version): the same prediction, the same three alerts.
    again = alerts_for(score(lc_file, settings), settings)
    assert [without_time(a) for a in again] == [without_time(a) for a in alerts]


def test_spectrum_alert_ids_are_unchanged() -> None:
    """One alert per spectrum and reason: its id stays sha256('prediction_id:reason')."""
    prediction = {"prediction_id": "p" * 64, "file_id": "f" * 64, "kind": "spectrum", "object": "4",
                  "source": "/data/a000004.[2]", "model": "smass-cnn", "model_version": "2",
                  "main_group": "Other", "probabilities": {"C": 0.0, "S": 0.05, "X": 0.0, "Other": 0.95},
                  "bus_class": "V", "bus_probability": 0.9}
    (alert,) = alerts_for(prediction, Settings(alert_rare_threshold=0.8))
    assert alert["alert_id"] == hashlib.sha256(f"{'p' * 64}:rare-composition".encode()).hexdigest()


def test_the_filter_agent_routes_every_planet(scored: tuple[dict, list[dict]]) -> None:
    _, alerts = scored
    flt = parse_filter("short-period", {"kind": "lightcurve", "max": {"period_days": 10}})
    messages = [(a["file_id"].encode(), schemas.encode("Alert", a)) for a in alerts]
    assert route_alerts({flt.name: flt}, messages) == [(flt.topic, key, value) for key, value in messages]


def alerts_cli(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["alerts", "--format", "json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_skystream_alerts_drops_repeats_but_keeps_every_planet(
        scored: tuple[dict, list[dict]], embedded_broker: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, alerts = scored
    broker = embedded_broker.bootstrap
    monkeypatch.setenv("SKYSTREAM_BROKER", broker)
    asyncio.run(ensure_topics(broker, Settings(broker=broker, partitions=2)))
    # At-least-once delivery: each alert comes again, a later copy of the same content.
    replays = [dict(a, alerted_at="2099-01-01T00:00:00.000Z") for a in alerts]
    asyncio.run(produce_alerts(broker, alerts + replays))
    got = alerts_cli(capsys, "--from-beginning")
    assert sorted(a["alert_id"] for a in got) == sorted(a["alert_id"] for a in alerts)
    assert sorted(a["period_days"] for a in got) == sorted(a["period_days"] for a in alerts)


def test_the_archive_the_api_and_the_web_view_keep_every_planet(
        scored: tuple[dict, list[dict]], settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prediction, alerts = scored
    now = int(time.time() * 1000)
    # Written twice, as a second archiver group or a replay would: the queries keep one row per alert.
    for copy in range(2):
        write_batch(settings.archive, "predictions", "lightcurve", day_of(now),
                    [to_row("predictions", prediction, 0, 10 * copy, now + 10 * copy)], settings)
        write_batch(settings.archive, "alerts", "lightcurve", day_of(now),
                    [to_row("alerts", a, 0, 10 * copy + 1 + i, now + 10 * copy + 1 + i) for i, a in enumerate(alerts)],
                    settings)
    ids = sorted(a["alert_id"] for a in alerts)
    assert sorted(a["alert_id"] for a in query.alerts(settings=settings)) == ids
    assert query.read("alerts", settings=settings, dedupe=False).num_rows == 6
    assert sorted(a["alert_id"] for a in archived_alerts(settings, parse_filter("x", {"kind": "lightcurve"}))) == ids
    monkeypatch.setenv("SKYSTREAM_ARCHIVE", settings.archive)
    monkeypatch.setenv("SKYSTREAM_BROKER", "")
    assert sorted(a["alert_id"] for a in alerts_cli(capsys, "--archive", "--object", HOST_OBJECT)) == ids
    (history,) = query.history(HOST_OBJECT, settings=settings)
    assert len(history["signals"]) == 3

    with serving(settings) as url:
        status, listed = get_json(url + "/alerts?kind=lightcurve")
        assert status == 200 and sorted(a["alert_id"] for a in listed["alerts"]) == ids
        figures = {a["figure_url"] for a in listed["alerts"]}
        assert len(figures) == 3, "each planet's own diagnostic figure"
        for figure in figures:
            assert fetch(url + figure)[:2] == (200, "image/png")
        assert page(url + "/").articles == 3
        assert page(url + "/ui/objects/TIC%20188172563").articles == 3
