"""User-defined alert filters: the language (each operator, cone, watch lists), bad files refused with
a message that names the filter and key, reloading, and the agent publishing matches through a real
stream (WASP-126 b) with the filters file edited mid-run."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from data_paths import require_data
from helpers import wait_until

import schemas
from stream.alerts.filters import (
    FilterError,
    FilterFile,
    load_filters,
    matches,
    parse_filter,
    parse_filters,
    route_alerts,
)
from stream.devstack.localstack import LocalStack
from stream.models.registry import BUNDLED
from stream.runtime.kafka import bootstrap_servers
from stream.settings import TOPICS

ROOT = Path(__file__).resolve().parents[1]


def alert(**fields: Any) -> dict[str, Any]:
    """A complete Alert record: WASP-126 b as the TESS stream reports it, unless ``fields`` say otherwise."""
    record: dict[str, Any] = {f["name"]: None for f in schemas.schema_json("Alert")["fields"]}
    record.update(
        alert_id="a" * 64, prediction_id="p" * 64, file_id="f" * 64, kind="lightcurve", object="TIC 25155310",
        source="/data/tic25155310_s06_lc.fits", reason="known-planet-candidate", score=0.93,
        summary="TIC 25155310: P=3.289 d", model="tess-triage-cnn", model_version="1", tic_id=25155310, sector=6,
        ra_deg=63.37389, dec_deg=-69.226789, tmag=10.555, period_days=3.2888, depth_ppm=6400.0, snr=35.0,
        planet_radius_earth=10.3, planet_probability=0.93, triage_probability=0.98, known_toi="TOI-114.01",
        alerted_at="2026-12-02T04:00:00.000Z",
    )
    record.update(fields)
    return record


def asteroid(**fields: Any) -> dict[str, Any]:
    vesta = dict(kind="spectrum", object="4 Vesta", reason="rare-composition", score=0.91, tic_id=None, sector=None,
                 ra_deg=None, dec_deg=None, tmag=None, period_days=None, depth_ppm=None, snr=None,
                 planet_radius_earth=None, planet_probability=None, triage_probability=None, known_toi=None,
                 asteroid_number=4, main_group="Other", bus_class="V", probabilities={"Other": 0.91, "S": 0.09})
    return alert(**{**vesta, **fields})


def f(spec: dict[str, Any], name: str = "t") -> Any:
    return parse_filter(name, spec)


def test_equality_and_in_on_strings() -> None:
    assert matches(f({"kind": "lightcurve"}), alert())
    assert not matches(f({"kind": "spectrum"}), alert())
    assert matches(f({"reason": ["planet-candidate", "known-planet-candidate"]}), alert())
    assert not matches(f({"reason": "planet-candidate"}), alert())
    assert matches(f({"main_group": "Other", "bus_class": ["V", "A"]}), asteroid())
    assert not matches(f({"bus_class": ["A", "D"]}), asteroid())
    assert matches(f({"object": "tic 25155310"}), alert()), "object names compare without case"


def test_known_toi_null_or_not() -> None:
    assert matches(f({"known_toi": True}), alert())
    assert not matches(f({"known_toi": False}), alert())
    assert matches(f({"known_toi": False}), alert(known_toi=None, reason="planet-candidate"))
    assert matches(f({"known_toi": "TOI-114.01"}), alert())
    assert not matches(f({"known_toi": ["TOI-1.01"]}), alert())


def test_min_and_max_are_inclusive_and_a_missing_value_never_passes() -> None:
    short = f({"min": {"planet_probability": 0.8}, "max": {"period_days": 10}})
    assert matches(short, alert())
    assert not matches(short, alert(period_days=12.5))
    assert not matches(short, alert(planet_probability=0.79))
    assert matches(f({"min": {"score": 0.93}, "max": {"score": 0.93}}), alert(score=0.93))
    assert not matches(f({"max": {"tmag": 12}}), asteroid()), "null tmag passed a max"
    assert not matches(f({"min": {"snr": 7}}), asteroid())
    assert matches(f({"min": {"depth_ppm": 1000, "planet_radius_earth": 8}, "max": {"tmag": 11}}), alert())


def test_watch_lists_inline_and_from_files(tmp_path: Path) -> None:
    assert matches(f({"watch": {"tic_ids": [25155310, 1]}}), alert())
    assert matches(f({"watch": {"tic_ids": ["TIC 25155310"]}}), alert())
    assert not matches(f({"watch": {"tic_ids": [1]}}), alert())
    assert not matches(f({"watch": {"tic_ids": [25155310]}}), asteroid())
    assert matches(f({"watch": {"asteroids": [4]}}), asteroid())
    assert matches(f({"watch": {"asteroids": ["1999  ab1"]}}),
                   asteroid(asteroid_number=None, designation="1999 AB1", object="1999 AB1"))
    assert matches(f({"watch": {"tic_ids": [1], "asteroids": [4]}}), asteroid()), "either list may match"
    (tmp_path / "tics.txt").write_text("# my targets\nTIC 25155310\n  260161111  # a comment\n")
    (tmp_path / "filters.yaml").write_text("filters:\n  mine:\n    watch: {tic_ids: tics.txt}\n")
    mine = load_filters(tmp_path / "filters.yaml")["mine"]
    assert mine.tic_ids == {25155310, 260161111}, "watch-list paths are relative to the filters file"
    assert matches(mine, alert())


def test_cone_uses_the_angular_separation() -> None:
    # WASP-126 at (63.374, -69.227): 1 degree of RA there is only ~0.35 degree on the sky.
    assert matches(f({"cone": {"ra": 64.3, "dec": -69.2, "radius_deg": 0.5}}), alert())
    assert not matches(f({"cone": {"ra": 63.37, "dec": -68.2, "radius_deg": 0.5}}), alert())
    assert matches(f({"cone": {"ra": 359.9, "dec": 0, "radius_deg": 0.3}}), alert(ra_deg=0.1, dec_deg=0.0)), \
        "the cone does not wrap at RA 0"
    assert not matches(f({"cone": {"ra": 63.37, "dec": -69.2, "radius_deg": 5}}), asteroid()), "no position"


def test_all_conditions_must_hold() -> None:
    spec = {"kind": "lightcurve", "known_toi": True, "min": {"planet_probability": 0.8}, "max": {"period_days": 10},
            "watch": {"tic_ids": [25155310]}, "cone": {"ra": 63.4, "dec": -69.2, "radius_deg": 1}}
    assert matches(f(spec), alert())
    for broken in ({"known_toi": None}, {"period_days": 11.0}, {"tic_id": 7}, {"dec_deg": -60.0}):
        assert not matches(f(spec), alert(**broken)), broken


@pytest.mark.parametrize(("document", "message"), [
    ({"filters": {"x": {"kindd": "lightcurve"}}}, "filter 'x', key 'kindd': unknown key"),
    ({"filters": {"x": {"min": {"period": 3}}}}, "filter 'x', key 'min.period': not a numeric alert field"),
    ({"filters": {"x": {"min": {"score": "high"}}}}, "filter 'x', key 'min.score': expected a finite number"),
    ({"filters": {"x": {"max": {"score": 0.2}, "min": {"score": 0.5}}}}, "key 'min.score': 0.5 is above max.score"),
    ({"filters": {"x": {"cone": {"ra": 10, "dec": 95, "radius_deg": 1}}}}, "filter 'x', key 'cone': out of range"),
    ({"filters": {"x": {"cone": {"ra": 10, "dec": 5}}}}, "filter 'x', key 'cone': expected {ra, dec, radius_deg}"),
    ({"filters": {"x": {"watch": {"tic_ids": ["WASP-126"]}}}}, "key 'watch.tic_ids': not a TIC id: 'WASP-126'"),
    ({"filters": {"x": {"watch": {"tic_ids": "missing.txt"}}}}, "key 'watch.tic_ids': cannot read watch-list file"),
    ({"filters": {"x": {"kind": {"a": 1}}}}, "filter 'x', key 'kind': expected a string or a list"),
    ({"filters": {"bad name!": {"kind": "spectrum"}}}, "filter name 'bad name!': a topic name may only hold"),
    ({"filters": {"a.b": {"kind": "spectrum"}, "a_b": {"kind": "spectrum"}}}, "differ only in '.' vs '_'"),
    ({"filters": {"x": "lightcurve"}}, "filter 'x': expected a mapping of conditions"),
    ({"rules": {}}, "one top-level key, 'filters'"),
])
def test_bad_filters_are_refused_naming_the_filter_and_key(tmp_path: Path, document: Any, message: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filters(document, tmp_path)
    assert message in str(err.value)


def test_a_filter_name_must_make_a_legal_kafka_topic() -> None:
    with pytest.raises(FilterError, match="longer than 249"):
        parse_filter("x" * 240, {"kind": "spectrum"})
    assert parse_filter("short-period_v2.1", {"kind": "lightcurve"}).topic == "skystream.alerts.short-period_v2.1"


def test_the_documented_examples_load_and_mean_what_the_docs_say(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "filters.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "filters.yaml").write_text(block)
    (tmp_path / "my-tics.txt").write_text("TIC 25155310\n")
    (tmp_path / "my-asteroids.txt").write_text("4\n1999 AB1\n")
    filters = load_filters(tmp_path / "filters.yaml")
    assert {"planet-candidates", "short-period", "my-stars", "my-asteroids", "rare-asteroids",
            "wasp-126-field"} <= set(filters)
    ok = {n for n, flt in filters.items() if matches(flt, alert())}
    assert {"planet-candidates", "short-period", "my-stars", "wasp-126-field"} <= ok
    assert "short-period" not in {n for n, flt in filters.items() if matches(flt, alert(period_days=12.0))}
    assert {"my-asteroids", "rare-asteroids"} <= {n for n, flt in filters.items() if matches(flt, asteroid())}


def test_a_file_in_json_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "f.json").write_text(json.dumps({"filters": {"vesta": {"watch": {"asteroids": [4]}}}}))
    assert matches(load_filters(tmp_path / "f.json")["vesta"], asteroid())


def test_a_broken_file_keeps_the_previous_filters(tmp_path: Path) -> None:
    path = tmp_path / "filters.yaml"
    path.write_text("filters:\n  stars:\n    kind: lightcurve\n")
    ff = FilterFile(path)
    assert ff.reload_if_changed() is True and set(ff.filters) == {"stars"}
    assert ff.reload_if_changed() is None, "an unchanged file is not re-read"
    path.write_text("filters:\n  stars:\n    kind: lightcurve\n  more: {min: {scor: 1}}\n")
    assert ff.reload_if_changed() is False
    assert set(ff.filters) == {"stars"} and "filter 'more', key 'min.scor'" in (ff.error or "")
    path.write_text("filters: [unclosed\n")
    assert ff.reload_if_changed() is False and set(ff.filters) == {"stars"} and "not valid YAML" in (ff.error or "")
    path.write_text("filters:\n  stars: {kind: lightcurve}\n  asteroids: {kind: spectrum}\n")
    assert ff.reload_if_changed() is True and set(ff.filters) == {"stars", "asteroids"} and ff.error is None


def test_route_forwards_the_same_bytes_to_each_matching_filter_topic() -> None:
    filters = parse_filters({"filters": {"planets": {"min": {"planet_probability": 0.5}},
                                         "asteroids": {"kind": "spectrum"},
                                         "wasp": {"watch": {"tic_ids": [25155310]}}}})
    lc, sp = schemas.encode("Alert", alert()), schemas.encode("Alert", asteroid())
    sent = route_alerts(filters, [(b"k1", lc), (b"k2", sp), (b"k3", b"not avro")])
    assert sorted(sent) == sorted([("skystream.alerts.planets", b"k1", lc), ("skystream.alerts.wasp", b"k1", lc),
                                   ("skystream.alerts.asteroids", b"k2", sp)])


# --- the agent in a real stream -------------------------------------------------------------------------------


def _metric(port: int, name: str, label: str = "") -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rpartition(" ")[2])
    return 0.0


async def _read(broker: str, topic: str) -> list[dict[str, Any]]:
    """Every alert on ``topic`` now (empty when the topic does not exist)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers(broker), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=1500)
        return [schemas.decode(m.value, expect="Alert")[1] for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()


async def _publish(broker: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker))
    await producer.start()
    try:
        await producer.send_and_wait(TOPICS["alerts"], value, key=key)
    finally:
        await producer.stop()


@pytest.mark.slow
def test_the_agent_publishes_matches_and_follows_edits_of_the_filters_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lc = require_data("tess/lc/tic25155310_s06_lc.fits")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(lc, inputs / lc.name)
    filters = tmp_path / "filters.yaml"
    filters.write_text("filters:\n  wasp:\n    watch: {tic_ids: [25155310]}\n  asteroids:\n    kind: spectrum\n")
    monkeypatch.setenv("SKYSTREAM_FILTERS", str(filters))

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=1) as stack:
        worker = stack.start_worker()
        stack.wait_ready()
        port = stack.worker_metrics_ports[0]
        subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(inputs), "--once", "--settle", "0",
                        "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)
        wasp = wait_until(lambda: asyncio.run(_read(stack.broker, "skystream.alerts.wasp")), 420,
                          "the WASP-126 b alert on skystream.alerts.wasp")
        assert {a["object"] for a in wasp} == {"TIC 25155310"} and wasp[0]["reason"].endswith("planet-candidate")
        assert wasp[0]["figure_png"].startswith(b"\x89PNG")
        assert not asyncio.run(_read(stack.broker, "skystream.alerts.asteroids"))
        raw = schemas.encode("Alert", wasp[0])

        # A filter added while the worker runs: in force without a restart.
        loaded = _metric(port, "skystream_filter_reloads_total", 'outcome="loaded"')
        filters.write_text(filters.read_text() + "  planets:\n    min: {planet_probability: 0.5}\n")
        wait_until(lambda: _metric(port, "skystream_filter_reloads_total", 'outcome="loaded"') > loaded, 60,
                   "the worker reloading the filters file")
        asyncio.run(_publish(stack.broker, raw, wasp[0]["file_id"].encode()))
        wait_until(lambda: asyncio.run(_read(stack.broker, "skystream.alerts.planets")), 60,
                   "the replayed alert on the new filter's topic")

        # A broken version is refused; the filters in force keep running.
        filters.write_text(filters.read_text() + "  broken:\n    min: {period: 3}\n")
        wait_until(lambda: _metric(port, "skystream_filter_reloads_total", 'outcome="refused"') >= 1, 60,
                   "the worker refusing the broken filters file")
        asyncio.run(_publish(stack.broker, raw, wasp[0]["file_id"].encode()))
        wait_until(lambda: len(asyncio.run(_read(stack.broker, "skystream.alerts.planets"))) >= 2, 60,
                   "the old filters still routing after a broken edit")
        assert worker.poll() is None
        log = (stack.log_dir / "worker-0.log").read_text()
        assert "filter 'broken', key 'min.period': not a numeric alert field" in log
