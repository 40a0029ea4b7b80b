"""`skystream alerts` and the example consumer against the embedded broker: start positions, durable
groups, de-duplication, output formats, figures and ad-hoc filters."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaProducer
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from test_filters import alert, asteroid

import schemas
from stream.alerts.client import subscribe
from stream.cli.entry import main
from stream.runtime.kafka import bootstrap_servers, ensure_topics
from stream.settings import TOPICS, Settings

ROOT = Path(__file__).resolve().parents[1]


def png() -> bytes:
    fig = Figure(figsize=(2, 1), dpi=30)
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def wasp(n: int, **fields: Any) -> dict[str, Any]:
    """A distinct WASP-126 b alert (alert_id from ``n``)."""
    return alert(alert_id=f"{n:064x}", prediction_id=f"{n:064x}", **fields)


async def _produce(broker: str, records: list[dict[str, Any]], topic: str = TOPICS["alerts"],
                   timestamp_ms: int | None = None, raw: list[bytes] = ()) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker))
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(topic, schemas.encode("Alert", r), key=r["file_id"].encode(),
                                         timestamp_ms=timestamp_ms)
        for value in raw:
            await producer.send_and_wait(topic, value, key=b"x")
    finally:
        await producer.stop()


@pytest.fixture()
def broker(embedded_broker: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SKYSTREAM_BROKER", embedded_broker.bootstrap)
    settings = Settings(broker=embedded_broker.bootstrap, partitions=2)
    asyncio.run(ensure_topics(embedded_broker.bootstrap, settings, extra=["skystream.alerts.short-period"]))
    return embedded_broker.bootstrap


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["alerts", *args]) == 0
    return capsys.readouterr().out


def jsons(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_from_beginning_prints_each_alert_once_as_json(broker: str, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = wasp(1), wasp(2, period_days=12.0)
    replay = dict(first, alerted_at="2026-12-02T05:00:00.000Z")  # at-least-once: the same alert again
    asyncio.run(_produce(broker, [first, second, replay, asteroid()], raw=[b"not an alert"]))
    got = jsons(run(capsys, "--from-beginning", "--format", "json"))
    assert sorted(a["alert_id"] for a in got) == sorted([first["alert_id"], second["alert_id"], "a" * 64])
    one = next(a for a in got if a["alert_id"] == first["alert_id"])
    assert one["tic_id"] == 25155310 and one["period_days"] == pytest.approx(3.2888) and "figure_png" not in one
    assert run(capsys, "--format", "json") == "", "without --from-beginning it starts at the end"


def test_a_group_resumes_where_it_stopped(broker: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_produce(broker, [wasp(1), wasp(2)]))
    assert len(jsons(run(capsys, "--group", "night-shift", "--from-beginning", "--format", "json"))) == 2
    asyncio.run(_produce(broker, [wasp(3), wasp(4), wasp(5)]))
    got = jsons(run(capsys, "--group", "night-shift", "--format", "json", "--limit", "2"))
    assert len(got) == 2 and {a["alert_id"] for a in got} < {wasp(n)["alert_id"] for n in (3, 4, 5)}
    rest = jsons(run(capsys, "--group", "night-shift", "--format", "json"))
    assert {a["alert_id"] for a in got + rest} == {wasp(n)["alert_id"] for n in (3, 4, 5)} and len(got + rest) == 3
    assert run(capsys, "--group", "night-shift", "--format", "json") == ""
    assert len(jsons(run(capsys, "--group", "day-shift", "--from-beginning", "--format", "json"))) == 5


def test_csv_and_table_output(broker: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_produce(broker, [wasp(1), asteroid()]))
    rows = list(csv.DictReader(io.StringIO(run(capsys, "--from-beginning", "--format", "csv"))))
    assert {r["object"] for r in rows} == {"TIC 25155310", "4 Vesta"}
    vesta = next(r for r in rows if r["object"] == "4 Vesta")
    assert vesta["bus_class"] == "V" and json.loads(vesta["probabilities"])["Other"] == pytest.approx(0.91)
    assert "figure_png" not in rows[0] and float(vesta["score"]) == pytest.approx(0.91)
    table = run(capsys, "--from-beginning").splitlines()
    assert table[0].split() == ["alerted_at", "kind", "object", "reason", "score", "summary"]
    assert any("TIC 25155310" in line and "known-planet-candidate" in line and "0.930" in line for line in table)


def test_save_figures_writes_inline_pngs_and_copies_referenced_ones(
        broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = png()
    stored = tmp_path / "artifacts" / "big.png"
    stored.parent.mkdir()
    stored.write_bytes(image)
    asyncio.run(_produce(broker, [wasp(1, figure_png=image), wasp(2, figure_uri=str(stored)),
                                  wasp(3, figure_uri=str(tmp_path / "moved-away.png"))]))
    out = jsons(run(capsys, "--from-beginning", "--format", "json", "--save-figures", str(tmp_path / "figs")))
    figures = {a["alert_id"]: a["figure"] for a in out}
    for n in (1, 2):
        written = Path(figures[wasp(n)["alert_id"]])
        assert written.parent == tmp_path / "figs" and written.read_bytes() == image
    assert figures[wasp(3)["alert_id"]] == str(tmp_path / "moved-away.png"), "an unreadable figure is given by URI"
    assert len(list((tmp_path / "figs").glob("TIC_25155310-known-planet-candidate-*.png"))) == 2


def test_adhoc_filters_and_filter_topics(broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_produce(broker, [wasp(1), wasp(2, period_days=12.0, tic_id=1, ra_deg=10.0, dec_deg=5.0,
                                                 object="TIC 1", score=0.6), asteroid()]))
    asyncio.run(_produce(broker, [wasp(1)], topic="skystream.alerts.short-period"))

    def ids(*args: str) -> set[str]:
        return {a["alert_id"] for a in jsons(run(capsys, "--from-beginning", "--format", "json", *args))}

    assert ids("--kind", "spectrum") == {"a" * 64}
    assert ids("--min-score", "0.9") == {wasp(1)["alert_id"], "a" * 64}
    assert ids("--object", "tic 1") == {wasp(2)["alert_id"]}
    assert ids("--cone", "63.374", "-69.227", "1") == {wasp(1)["alert_id"]}
    (tmp_path / "watch.txt").write_text("TIC 1\na:4  # Vesta\n")
    assert ids("--watchlist", str(tmp_path / "watch.txt")) == {wasp(2)["alert_id"], "a" * 64}
    assert ids("--filter", "short-period") == {wasp(1)["alert_id"]}
    with pytest.raises(SystemExit, match="skystream.alerts.nope does not exist.*SKYSTREAM_FILTERS"):
        main(["alerts", "--filter", "nope"])
    with pytest.raises(SystemExit, match="not a duration"):
        main(["alerts", "--since", "yesterday"])


def test_follow_waits_for_new_alerts_past_the_end(broker: str) -> None:
    async def scenario() -> list[str]:
        await _produce(broker, [wasp(1)])
        alerts = subscribe(Settings(broker=broker), from_beginning=True, follow=True)
        try:
            first = await asyncio.wait_for(anext(alerts), 60)
            await _produce(broker, [wasp(2)])  # after the subscriber has read to the end
            second = await asyncio.wait_for(anext(alerts), 60)
        finally:
            await alerts.aclose()
        return [first["alert_id"], second["alert_id"]]

    assert asyncio.run(scenario()) == [wasp(1)["alert_id"], wasp(2)["alert_id"]]


def test_since_skips_older_alerts(broker: str, capsys: pytest.CaptureFixture[str]) -> None:
    now_ms = int(time.time() * 1000)
    asyncio.run(_produce(broker, [wasp(1)], timestamp_ms=now_ms - 3 * 86400_000))
    asyncio.run(_produce(broker, [wasp(2)], timestamp_ms=now_ms - 3600_000))
    assert [a["alert_id"] for a in jsons(run(capsys, "--since", "2h", "--format", "json"))] == [wasp(2)["alert_id"]]
    assert len(jsons(run(capsys, "--since", "4d", "--format", "json"))) == 2


def test_the_example_consumer_reads_current_and_released_versions(broker: str) -> None:
    current = wasp(1, figure_png=png())
    asyncio.run(_produce(broker, [current, current]))
    # A message written by the released v1 writer: the example must resolve it too.
    v1 = {k: current[k] for k in (f["name"] for f in schemas.schema_json("Alert", 1)["fields"])}
    v1["alert_id"] = "b" * 64
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schemas.schema("Alert", 1), v1)
    old = b"\xc3\x01" + bytes.fromhex(schemas.fingerprint_of("Alert", 1)) + body.getvalue()
    assert struct.unpack("<Q", old[2:10])[0]  # a real fingerprint, not zeros
    asyncio.run(_produce(broker, [], raw=[old]))
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "consume_alerts.py"), "--broker", broker,
                          "--timeout", "3"], capture_output=True, text=True, timeout=120, check=True).stdout
    got = {a["alert_id"]: a for a in jsons(out)}
    assert set(got) == {current["alert_id"], "b" * 64}, "each alert once, both schema versions"
    assert got[current["alert_id"]]["period_days"] == pytest.approx(3.2888)
    assert got[current["alert_id"]]["figure_png"] == len(current["figure_png"])
    assert got["b" * 64]["tic_id"] is None and got["b" * 64]["object"] == "TIC 25155310", "v1 resolved to v2"
