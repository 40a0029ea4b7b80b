"""Stars followed across sectors (stream/stars): a new sector re-opens the star's search with all its sectors.

Real light curves from ../shared/data/tess/lc: WASP-126 (TIC 25155310, TOI-114.01 at 3.289 d) in
sectors 1 and 6, and HD 21749 (TIC 279741379) in sectors 1-4. The sectors go through the stream's own
extract, scorer and alert policy (as the light-curve score agent runs them), then through the stars
stage's state and search; the last test runs the whole stream with a worker killed between sectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from data_paths import require_data
from helpers import produce_alerts

import schemas
from stream import kinds
from stream.features import detect
from stream.models.registry import BUNDLED
from stream.scoring.publish import CollectingSink, score_and_publish
from stream.scoring.scorer import scorer_for
from stream.settings import TOPICS, Settings
from stream.stars import agent
from stream.stars.search import MULTI_SECTOR_REASON, same_signal, search_star, star_file_id
from stream.stars.state import MAX_SECTORS, add_sector, empty_state, sectors_of

WASP126 = ["hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits", "tic25155310_s06_lc.fits"]
HD21749 = [f"tic279741379_s0{i}_lc.fits" for i in range(1, 5)]
WASP126_B = 3.2888


def _scored_sector(path: Path, scorer: Any) -> tuple[bytes, Any]:
    """(features message, Outcome) of one file, as the worker's preprocess and score agents make them."""
    data = path.read_bytes()
    _, features = detect.extract("lightcurve", data, uri=str(path), file_id=hashlib.sha256(data).hexdigest(),
                                 detected_at_ms=1)
    raw = schemas.encode("LightCurveFeatures", features)
    (outcome,) = asyncio.run(score_and_publish(scorer, kinds.by_name("lightcurve"), [raw], CollectingSink()))
    return raw, outcome


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # The alert figures read the files again: they must be under the configured sources.
    return Settings(registry=str(BUNDLED), sources=str(require_data("tess/lc")),
                    archive=str(tmp_path_factory.mktemp("archive")),
                    artifacts=str(tmp_path_factory.mktemp("artifacts")))


@pytest.fixture(scope="module")
def scorer(settings: Settings) -> Any:
    return scorer_for(settings)


@pytest.fixture(scope="module")
def sectors(scorer: Any) -> dict[str, tuple[bytes, Any, bytes]]:
    """File name -> (features message, Outcome, StarSector message) for WASP-126's and HD 21749's sectors."""
    out = {}
    for name in WASP126 + HD21749:
        raw, outcome = _scored_sector(require_data("tess/lc/" + name), scorer)
        sink = CollectingSink()
        assert asyncio.run(agent.send_sectors([raw], [outcome], sink)) == 1
        ((topic, key, message),) = sink.sent
        assert topic == TOPICS["stars"] and key == str(outcome.prediction["tic_id"]).encode()
        out[name] = (raw, outcome, message)
    return out


class Table(dict):
    """The stars table as the agent sees it: a mapping (the Faust table adds the changelog)."""


def _run(messages: list[bytes], scorer: Any, table: dict | None = None) -> tuple[dict, CollectingSink]:
    """The stars agent's logic on ``messages`` in order; (table, what it sent)."""
    table = Table() if table is None else table
    sink = CollectingSink()
    for message in messages:
        _, record = schemas.decode(message, expect="StarSector")
        key = str(record["tic_id"]).encode()
        state = asyncio.run(agent.on_sector(key, message, table, scorer, sink))
        if state is not None:  # the agent writes it once the outputs are delivered
            table[key] = state
    return table, sink


def _decoded(sink: CollectingSink, topic: str, name: str) -> list[dict[str, Any]]:
    return [schemas.decode(v, expect=name)[1] for t, _, v in sink.sent if t == TOPICS[topic]]


def test_every_sector_keeps_its_binned_light_curve(sectors: dict) -> None:
    raw, outcome, message = sectors[WASP126[1]]
    features = schemas.decode(raw, expect="LightCurveFeatures")[1]
    bins = features["bins"]
    assert bins["bin_minutes"] == 10.0 and len(bins["time_btjd"]) == len(bins["flux"])
    # Sector 6: ~24 days of data in 10-minute bins, a tenth of the two-minute cadences or fewer.
    assert 2500 < len(bins["time_btjd"]) <= features["quality"]["n_valid"] / 4
    assert len(message) < 60_000, "a sector's state must stay small"


def test_wasp126_confirmed_across_sectors_updates_the_sector_alert(sectors: dict, scorer: Any) -> None:
    one, six = (sectors[n] for n in WASP126)
    own = {n: sectors[n][1].alerts for n in WASP126}
    assert all(len(a) == 1 and a[0]["reason"] == "known-planet-candidate" for a in own.values()), own

    table, sink = _run([one[2]], scorer)
    assert sink.sent == [], "one sector alone is not searched again"
    table, sink = _run([six[2]], scorer, table)
    (prediction,) = _decoded(sink, "predictions", "Prediction")
    assert prediction["sectors"] == [1, 6] and prediction["sector"] is None
    assert [Path(s).name for s in prediction["sources"]] == WASP126
    best = prediction["signals"][0]
    assert abs(best["period_days"] / WASP126_B - 1) < 0.001 and best["known_toi"] == "TOI-114.01"
    assert best["n_transits"] >= 12, "both sectors' transits are in the fold"
    (alert,) = _decoded(sink, "alerts", "Alert")
    # Found by sector 1 alone already: the multi-sector search updates sector 1's alert, not a new one.
    assert alert["alert_id"] == own[WASP126[0]][0]["alert_id"] and alert["reason"] == "known-planet-candidate"
    assert alert["sectors"] == [1, 6] and "sectors 1+6" in alert["summary"]
    assert alert["figure_png"].startswith(b"\x89PNG")


def test_order_of_arrival_and_replays_do_not_change_the_answer(sectors: dict, scorer: Any) -> None:
    messages = [sectors[n][2] for n in HD21749]
    forward, sent_forward = _run(messages, scorer)
    backward, sent_backward = _run(messages[::-1], scorer)
    last = {name: _decoded(s, "predictions", "Prediction")[-1] for name, s in (("f", sent_forward),
                                                                                 ("b", sent_backward))}
    assert last["f"]["sectors"] == last["b"]["sectors"] == [1, 2, 3, 4]
    assert last["f"]["prediction_id"] == last["b"]["prediction_id"]
    assert last["f"]["signals"] == last["b"]["signals"]
    assert last["f"]["file_id"] == star_file_id(sectors_of(schemas.decode(forward[b"279741379"])[1]))
    assert forward[b"279741379"] == backward[b"279741379"] or (
        schemas.decode(forward[b"279741379"])[1]["sectors"] == schemas.decode(backward[b"279741379"])[1]["sectors"])
    # Every sector again (a replay after a crash, or the same files under other names): nothing new.
    again, sent_again = _run(messages, scorer, forward)
    assert sent_again.sent == [] and again[b"279741379"] == forward[b"279741379"]


def test_a_signal_no_sector_alerted_on_is_a_multi_sector_candidate_and_keeps_its_id(sectors: dict,
                                                                                        scorer: Any) -> None:
    # Sectors 3 and 4 of HD 21749 stitched show an 18.5-d signal neither shows convincingly alone (a
    # candidate the policy passes; the star's known planets are at 35.6 and 7.8 d: it is what the data
    # give, kept here as the case of a signal found only in combination).
    table, sink = _run([sectors[HD21749[3]][2], sectors[HD21749[2]][2]], scorer)
    (alert,) = _decoded(sink, "alerts", "Alert")
    assert alert["reason"] == MULTI_SECTOR_REASON and alert["sectors"] == [3, 4]
    state = schemas.decode(table[b"279741379"], expect="StarState")[1]
    assert [s["alert_id"] for s in state["signals"]] == [alert["alert_id"]]
    again = search_star(state, scorer.model("tess"), scorer.toi, figures=False)
    assert again is not None and [a["alert_id"] for a in again.alerts] == [alert["alert_id"]]


def test_state_is_bounded_and_signals_match_by_period_and_phase(sectors: dict) -> None:
    _, _, message = sectors[WASP126[1]]
    record = schemas.decode(message, expect="StarSector")[1]
    state = empty_state(record["tic_id"])
    for sector in range(1, MAX_SECTORS + 5):
        state, changed = add_sector(state, schemas.encode("StarSector", {**record, "sector": sector}))
        assert changed
    assert [s.sector for s in sectors_of(state)] == list(range(5, MAX_SECTORS + 5))
    a = {"period_days": 3.2888, "epoch_btjd": 1326.93, "duration_hours": 3.6}
    assert same_signal(a, {**a, "period_days": 3.2890, "epoch_btjd": 1326.93 + 40 * 3.2890})
    assert not same_signal(a, {**a, "epoch_btjd": 1326.93 + 1.0}), "same period, other phase: another signal"
    assert not same_signal(a, {**a, "period_days": 2 * 3.2888})


def test_skystream_score_searches_a_star_given_in_several_sectors_as_the_stream_does(sectors: dict,
                                                                                      scorer: Any) -> None:
    from stream.scoring.offline import score_files

    paths = [require_data("tess/lc/" + name) for name in WASP126[::-1]]
    *files, star = list(score_files(scorer, paths))
    assert [f["sector"] for f in files] == [6, 1] and star["sectors"] == [1, 6]
    _, sink = _run([sectors[n][2] for n in WASP126], scorer)
    (streamed,) = _decoded(sink, "predictions", "Prediction")
    # The same prediction (its floats as the Prediction message carries them).
    as_sent = schemas.decode(schemas.encode("Prediction", {**star, "detected_at_ms": 0}))[1]
    assert as_sent["prediction_id"] == streamed["prediction_id"] and as_sent["signals"] == streamed["signals"]
    assert len(list(score_files(scorer, paths, stars=False))) == 2
    assert len(list(score_files(scorer, paths[:1] * 2))) == 2, "one sector twice is no star to stitch"


def test_a_broken_sector_message_is_a_dead_letter(scorer: Any) -> None:
    sink = CollectingSink()
    assert asyncio.run(agent.on_sector(b"1", b"not avro", Table(), scorer, sink)) is None
    ((topic, _, value),) = sink.sent
    assert topic == TOPICS["rejected"]
    assert schemas.decode(value, expect="Rejected")[1]["stage"] == "score"


def test_subscribers_see_each_update_once_and_the_star_page_shows_the_sectors_together(
        sectors: dict, scorer: Any, settings: Settings, embedded_broker: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from test_api import fetch, page, serving

    from stream.archive import query
    from stream.archive.writer import day_of, to_row, write_batch
    from stream.cli.entry import main
    from stream.runtime.kafka import ensure_topics

    one, six = (sectors[n][1] for n in WASP126)
    _, sink = _run([sectors[n][2] for n in WASP126], scorer)
    (star,) = _decoded(sink, "predictions", "Prediction")
    (update,) = _decoded(sink, "alerts", "Alert")
    original = one.alerts[0]
    assert update["alert_id"] == original["alert_id"]
    alerts = [original, six.alerts[0], update]

    # The alert client: copies of each (at-least-once) are dropped, the update is delivered.
    broker = embedded_broker.bootstrap
    monkeypatch.setenv("SKYSTREAM_BROKER", broker)
    asyncio.run(ensure_topics(broker, Settings(broker=broker, partitions=2)))
    asyncio.run(produce_alerts(broker, alerts + [dict(a, alerted_at="2099-01-01T00:00:00.000Z") for a in alerts]))
    capsys.readouterr()
    assert main(["alerts", "--format", "json", "--from-beginning"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [(a["alert_id"], a["sectors"]) for a in got] == [(a["alert_id"], a["sectors"]) for a in alerts]

    # The archive, as an archiver writes it, twice (a replay): each alert once, in its latest version.
    now = int(time.time() * 1000)
    for copy in range(2):
        write_batch(settings.archive, "predictions", "lightcurve", day_of(now),
                    [to_row("predictions", p, 0, 10 * copy + i, now + 10 * copy + i)
                     for i, p in enumerate([one.prediction, six.prediction, star])], settings)
        write_batch(settings.archive, "alerts", "lightcurve", day_of(now),
                    [to_row("alerts", a, 1, 10 * copy + i, now + 10 * copy + i) for i, a in enumerate(alerts)],
                    settings)
    kept = query.alerts(settings=settings)
    assert sorted((a["alert_id"], tuple(a["sectors"] or ())) for a in kept) == sorted(
        [(original["alert_id"], (1, 6)), (six.alerts[0]["alert_id"], ())])
    assert [r.get("sectors") for r in query.history("TIC 25155310", settings=settings)] == [None, None, [1, 6]]

    monkeypatch.setenv("SKYSTREAM_ARCHIVE", settings.archive)
    capsys.readouterr()
    assert main(["history", "TIC 25155310", "--signals"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[2] == "1+6" and "TOI-114.01" in line for line in lines[2:]), lines

    with serving(settings) as url:
        viewed = page(url + "/ui/objects/TIC%2025155310")
        status, _, body = fetch(url + "/ui/objects/TIC%2025155310")
        assert "<td>1+6</td>" in body.decode()
        # The star's folded signal over both sectors, drawn from both files stitched.
        stitched = [src for src in viewed.images if star["prediction_id"] in src]
        assert stitched and fetch(url + stitched[0])[:2] == (200, "image/png")
        assert fetch(url + "/ui/objects/TIC%2025155310/periods.png")[:2] == (200, "image/png")
        status, _, body = fetch(url + f"/alerts/{original['alert_id']}/figure.png")
        assert status == 200 and body == update["figure_png"], "the figure of the alert's latest version"


@pytest.mark.kafka
@pytest.mark.slow
def test_a_star_state_survives_a_killed_worker_on_kafka(tmp_path: Path) -> None:
    """The whole stream on Apache Kafka: HD 21749's sectors 4 and 3, then the worker killed (-9) and a new
    one started, then sectors 2 and 1 and WASP-126's two. The new worker recovers the stars' states from
    the changelog: its last HD 21749 prediction is of all four sectors, WASP-126's of both."""
    import shutil
    import signal
    import subprocess
    import sys

    from stream.devstack.localstack import LocalStack, collect
    from stream.models.registry import BUNDLED

    lc_dir = require_data("tess/lc")
    inbox = tmp_path / "in"
    inbox.mkdir()

    def watch(names: list[str]) -> None:
        for name in names:
            shutil.copy(lc_dir / name, inbox / name)
        subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(inbox), "--once", "--settle", "0",
                        "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)

    def multi_sector(out: Any, tic: int) -> list[dict[str, Any]]:
        return [p for p in out.predictions if p["tic_id"] == tic and p.get("sectors")]

    with LocalStack(state_dir=tmp_path / "state", registry=str(BUNDLED), partitions=2, engine="kafka",
                    sources=str(tmp_path)) as stack:
        worker = stack.start_worker()
        stack.wait_ready()
        watch([HD21749[3], HD21749[2]])
        out = asyncio.run(collect(stack.broker, lambda c: len(multi_sector(c, 279741379)) >= 1, 300))
        assert multi_sector(out, 279741379)[-1]["sectors"] == [3, 4]

        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        worker = stack.start_worker()
        stack.wait_ready()
        watch([HD21749[1], HD21749[0], *WASP126])

        def done(c: Any) -> bool:
            return (any(p["sectors"] == [1, 2, 3, 4] for p in multi_sector(c, 279741379))
                    and any(a.get("sectors") == [1, 6] for a in c.alerts))

        out = asyncio.run(collect(stack.broker, done, 400))
        assert worker.poll() is None
    # The state grew one sector at a time (sectors 1 and 2 arrive in either order), every search after
    # the kill still with sectors 3 and 4: none restarted from nothing. A kill before the state reached
    # the changelog replays the last event: the same prediction again (at least once), nothing new.
    searches = multi_sector(out, 279741379)
    assert all(p == next(q for q in searches if q["prediction_id"] == p["prediction_id"]) for p in searches)
    grown = list(dict.fromkeys(tuple(p["sectors"]) for p in searches))
    assert grown[0] == (3, 4) and grown[-1] == (1, 2, 3, 4) and len(grown) == 3
    assert all({3, 4} < set(s) for s in grown[1:])
    (wasp126,) = [a for a in out.alerts if a.get("sectors") == [1, 6]]
    assert abs(wasp126["period_days"] / WASP126_B - 1) < 0.001
    # It updates sector 1's own alert on the planet: the same alert_id.
    own = [a for a in out.alerts if a["tic_id"] == 25155310 and a["sector"] == 1 and not a.get("sectors")]
    assert [a["alert_id"] for a in own] == [wasp126["alert_id"]]
