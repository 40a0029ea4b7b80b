"""Observability end to end: Debian's Prometheus scrapes a running stream, and what it reports is
what the stream did.

The stream runs as operators run it on one machine: the embedded broker, one worker process and the
long-running watcher (`skystream watch DIR --metrics-port P`), fed real SMASSII spectra and the bad
files of conftest in three batches. A subscriber reads every topic; Prometheus (deploy/prometheus/
local_prometheus.py, the project's rules, 1 s scrapes) must report exactly the same counts: files
found and published, predictions per class, dead letters per stage and reason, messages per agent
and outcome, alerts, the serving model. Then every Grafana panel's PromQL runs against that
Prometheus, and `skystream dashboard-png` renders the main panels from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from conftest import BAD_FILES
from helpers import load_module, wait_until
from prometheus_client.parser import text_string_to_metric_families

import schemas
from stream.devstack.localstack import LocalStack
from stream.models.registry import BUNDLED
from stream.runtime.embedded_broker import free_port
from stream.runtime.kafka import bootstrap_servers
from stream.settings import TOPICS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
N_SPECTRA = 400  # enough for the drift window's minimum (100) and several batches; a few seconds of work
BATCHES = 3
# A second bad file for two of the reasons, in a later batch: those dead-letter series then grow
# while Prometheus watches (a series' first sample is its baseline, invisible to rate/increase).
MORE_BAD_FILES = {
    "garbage-2.bin": np.random.default_rng(2).bytes(4096),
    "all_nan-2.txt": b"\n".join(f"{0.44 + i * 0.005:.3f}\tnan\t0.01".encode() for i in range(60)),
}


local_prometheus = load_module(ROOT / "deploy" / "prometheus" / "local_prometheus.py")
dashboards = load_module(ROOT / "deploy" / "grafana" / "build_dashboards.py")


def scrape(port: int, name: str) -> float:
    """Sum of one metric family's samples on a process's /metrics (0 when unreachable)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


def smass_registry(dest: Path) -> Path:
    """A private copy of the shipped registry (the bundled SMASS baseline with its drift reference)."""
    if not (BUNDLED / "smass").is_dir():
        pytest.skip(f"no bundled SMASS model at {BUNDLED / 'smass'} yet")
    shutil.copytree(BUNDLED, dest)
    return dest


@dataclass
class Seen:
    """What a subscriber read from the topics, decoded with the schemas."""

    files: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def outcomes(self) -> int:
        """Files with a final outcome: a prediction or a dead letter (uri; watch-stage ones too)."""
        return len({p["source"] for p in self.predictions} | {r["uri"] or r["file_id"] for r in self.rejected})


async def read_topics(broker: str, until: Callable[[Seen], bool], timeout: float) -> Seen:
    """Read the files, predictions, alerts and dead-letter topics from the start until ``until``."""
    consumer = AIOKafkaConsumer(
        TOPICS["files"], TOPICS["predictions"], TOPICS["alerts"], TOPICS["rejected"],
        bootstrap_servers=bootstrap_servers(broker), auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None,
    )
    buckets = {"FileEvent": "files", "Prediction": "predictions", "Alert": "alerts", "Rejected": "rejected"}
    seen = Seen()
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while not until(seen) and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                for m in msgs:
                    name, rec = schemas.decode(m.value)
                    getattr(seen, buckets[name]).append(rec)
    finally:
        await consumer.stop()
    return seen


@contextlib.contextmanager
def watcher_process(stack: LocalStack, directory: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`skystream watch DIR` as operators run it (polling, no --once), stopped with SIGTERM."""
    log = open(stack.log_dir / "watcher.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "watch", str(directory), "--interval", "0.5", "--settle", "0",
         "--metrics-port", str(port)],
        env=stack.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@dataclass
class ObservedRun:
    prom: Any  # local_prometheus.LocalPrometheus
    seen: Seen
    n_files: int
    started: float  # unix time the stream started (Prometheus was scraping already)
    finished: float  # unix time every file had its outcome and Prometheus had scraped it
    tmp: Path


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, smass_dir: Path) -> Iterator[ObservedRun]:
    """Run the stream under Prometheus once for this module's tests; everything stops afterwards."""
    if not shutil.which("prometheus"):
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("observed")
    registry = smass_registry(tmp / "registry")
    spectra = sorted(smass_dir.iterdir())[:N_SPECTRA]
    staged = tmp / "staged"
    staged.mkdir()
    for name, (content, _) in BAD_FILES.items():
        (staged / name).write_bytes(content)
    for name, content in MORE_BAD_FILES.items():
        (staged / name).write_bytes(content)
    # Batches: spectra only first (so the main counters exist before Prometheus has to see them grow),
    # the bad files with the second, two more bad files and the rest of the spectra last.
    per = len(spectra) // BATCHES
    batches: list[list[Path]] = [spectra[i * per:(i + 1) * per] for i in range(BATCHES - 1)]
    batches.append(spectra[(BATCHES - 1) * per:])
    batches[1] = batches[1] + [staged / name for name in BAD_FILES]
    batches[2] = batches[2] + [staged / name for name in MORE_BAD_FILES]
    inbox = tmp / "inbox"
    inbox.mkdir()

    with LocalStack(state_dir=tmp / "state", registry=str(registry), partitions=4) as stack:
        worker = stack.start_worker()
        worker_port = stack.worker_metrics_ports[0]
        wait_until(lambda: scrape(worker_port, "skystream_assigned_partitions") > 0, 120, "the worker to join")
        watcher_port = free_port()
        with (
            local_prometheus.LocalPrometheus([f"127.0.0.1:{watcher_port}"], [f"127.0.0.1:{worker_port}"],
                                             workdir=tmp / "prometheus", interval="1s") as prom,
            watcher_process(stack, inbox, watcher_port) as watcher,
        ):
            started = time.time()
            prom.wait_for(lambda: prom.query('up{job=~"skystream-.*"} == 1') and
                          len(prom.query('up{job=~"skystream-.*"} == 1')) == 2, 60, "both targets up")
            fed = 0
            for batch in batches:
                for f in batch:
                    # Real spectra are linked (never copied); the bad files are ours to move.
                    if f.parent == staged:
                        shutil.move(f, inbox / f.name)
                    else:  # whole, as a finished download arrives: the watcher runs with --settle 0
                        shutil.copy(f, inbox / f".{f.name}.part")
                        os.replace(inbox / f".{f.name}.part", inbox / f.name)
                fed += len(batch)
                seen = asyncio.run(read_topics(stack.broker, lambda s, n=fed: s.outcomes() >= n, 120))
                assert seen.outcomes() >= fed, f"{seen.outcomes()} of {fed} files have an outcome"
                # Let Prometheus take a few samples between batches, so rates have a shape to show.
                t = time.time()
                prom.wait_for(lambda t=t: prom.query(f"timestamp(up{{job='skystream-worker'}}) > {t + 2}"), 30,
                              "a scrape after the batch")
            assert worker.poll() is None and watcher.poll() is None, "a stream process died"
            yield ObservedRun(prom, seen, fed, started, time.time(), tmp)


# -- counts: what Prometheus says == what the stream did ----------------------------------------------
def by_labels(prom: Any, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Non-zero series only: processes create their known counters at 0 when they start."""
    return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in prom.query(expr)
            if float(r["value"][1]) != 0}


def expected_and_reported(run: ObservedRun) -> list[tuple[str, Any, Any]]:
    """(what, counted from the topics, reported by Prometheus) for every count the test checks."""
    prom, seen = run.prom, run.seen
    preprocess_dead = sum(1 for r in seen.rejected if r["stage"] == "preprocess")
    score_dead = sum(1 for r in seen.rejected if r["stage"] == "score")
    predictions = Counter(p["main_group"] for p in seen.predictions)
    return [
        ("files discovered", float(run.n_files), prom.value("sum(skystream_files_discovered_total)")),
        ("files published by kind", {(k,): float(v) for k, v in Counter(f["kind"] for f in seen.files).items()},
         by_labels(prom, "sum by (kind) (skystream_files_published_total)", "kind")),
        ("predictions by class", {("smass", k): float(v) for k, v in predictions.items()},
         by_labels(prom, "sum by (task, label) (skystream_predictions_total)", "task", "label")),
        ("dead letters by stage and reason",
         {k: float(v) for k, v in Counter((r["stage"], r["reason"]) for r in seen.rejected).items()},
         by_labels(prom, "sum by (stage, reason) (skystream_dead_letters_total)", "stage", "reason")),
        ("messages by agent and outcome",
         {k: v for k, v in {("preprocess", "ok"): float(len(seen.files) - preprocess_dead),
                            ("preprocess", "rejected"): float(preprocess_dead),
                            ("score", "ok"): float(len(seen.predictions)),
                            ("score", "rejected"): float(score_dead)}.items() if v},
         by_labels(prom, "sum by (agent, outcome) (skystream_messages_processed_total)", "agent", "outcome")),
        ("alerts by reason", {("smass", k): float(v) for k, v in Counter(a["reason"] for a in seen.alerts).items()},
         by_labels(prom, "sum by (task, reason) (skystream_alerts_total)", "task", "reason")),
        ("end-to-end latency observations", float(len(seen.predictions)),
         prom.value('sum(skystream_end_to_end_latency_seconds_count{kind="spectrum"})')),
        ("serving model", {(p["model"], p["model_version"]) for p in seen.predictions},
         {(r["metric"]["model"], r["metric"]["version"])
          for r in prom.query('skystream_model_info{task="smass"} == 1')}),
    ]


def test_prometheus_counts_equal_what_the_stream_did(observed: ObservedRun) -> None:
    seen = observed.seen
    # The subscriber's view first: one prediction per spectrum, one dead letter per bad file.
    assert len({p["file_id"] for p in seen.predictions}) == len(seen.predictions) == N_SPECTRA
    assert sorted(Path(r["uri"]).name for r in seen.rejected) == sorted([*BAD_FILES, *MORE_BAD_FILES])
    assert len(seen.files) + sum(r["stage"] == "watch" for r in seen.rejected) == observed.n_files

    # Prometheus gets the last increments with its next scrapes: wait until it agrees, or report.
    def agree() -> bool:
        return all(exp == got for _, exp, got in expected_and_reported(observed))

    with contextlib.suppress(TimeoutError):
        observed.prom.wait_for(agree, 30, "Prometheus to report the final counts")
    rows = expected_and_reported(observed)
    report = "\n".join(f"{what}: topics {exp} / Prometheus {got}" for what, exp, got in rows)
    print(report)
    assert all(exp == got for _, exp, got in rows), report
    assert sum(v for (_, _), v in rows[2][2].items()) == N_SPECTRA


# -- every dashboard panel against this Prometheus ----------------------------------------------------
# Panels that stay empty on a healthy run, and why (anything else without data fails the test).
EMPTY_ON_A_HEALTHY_RUN = {
    "Model versions refused": "no model version was refused (skystream_model_refused_total never created)",
    # Both count recoveries from a broker that lost its state (docs/fault-tolerance.md); a healthy run
    # has none, so the labelled counters are never created (their alert rules are unit-tested by promtool:
    # deploy/prometheus/tests/alerts_test.yml).
    "Files republished": "no file was republished (skystream_files_republished_total never created)",
    "annotation: Broker resets": "no broker reset was seen (skystream_broker_resets_total never created)",
}


def test_every_dashboard_query_runs_against_the_running_stream(observed: ObservedRun) -> None:
    prom = observed.prom
    legitimately_empty = dict(EMPTY_ON_A_HEALTHY_RUN)
    if not observed.seen.alerts:
        legitimately_empty["Alerts published"] = "no prediction met the alert policy in this sample"
    queries = dashboards.all_queries()
    assert queries

    def judge() -> tuple[list[dict], list[dict], list[dict]]:
        # Evaluated as a dashboard opened just after the run would (1m rates go NaN once it is idle).
        at = min(time.time(), observed.finished + 30)
        empty, nan, ok = [], [], []
        for q in queries:
            result = prom.query(q["expr"], at=at)  # raises ValueError, with Prometheus's reason, if unparsable
            values = [r["value"][1] for r in result if "value" in r]
            (empty if not result else nan if all(v == "NaN" for v in values) else ok).append(q)
        return empty, nan, ok

    # Recording rules and 5m rates settle within a few evaluations of the last scrape.
    def settled() -> tuple | None:
        empty, nan, ok = judge()
        unexpected = [q for q in empty + nan if q["panel"] not in legitimately_empty]
        return None if unexpected else (empty, nan, ok)

    try:
        empty, nan, ok = prom.wait_for(settled, 30, "every panel that should have data to have it")
    except TimeoutError:
        empty, nan, ok = judge()
    lines = [f"{'EMPTY' if q in empty else 'NaN'}  {q['dashboard']} / {q['panel']}: {q['expr']}" for q in empty + nan]
    print(f"{len(ok)} of {len(queries)} panel queries returned numbers; without data:\n" + "\n".join(lines))
    unexpected = [q for q in empty + nan if q["panel"] not in legitimately_empty]
    assert not unexpected, "panels without data:\n" + "\n".join(
        f"{q['dashboard']} / {q['panel']}: {q['expr']}" for q in unexpected)
    # The documented exceptions really are empty (if one gains data, this list is stale).
    assert {q["panel"] for q in empty + nan} == set(legitimately_empty)


# -- the dashboard PNG from this Prometheus --------------------------------------------------------------
def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and the CRC of every chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, size = 8, (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        pos += 12 + length
        if kind == b"IEND":
            break
    assert pos == len(data), "data after IEND"
    return size


def test_dashboard_png_renders_the_main_panels(observed: ObservedRun) -> None:
    from stream.ops import dashboard_png

    out = observed.tmp / "dashboard.png"
    window = time.time() - observed.started + 30
    summary = dashboard_png.render(observed.prom.url, out, range_seconds=window)
    width, height = png_size(out.read_bytes())
    assert width >= 1200 and height >= 900
    titles = [p.title for p in dashboard_png.PANELS]
    assert list(summary) == titles
    for needed in ("Throughput", "Latency", "Consumer lag", "Dead letters", "Drift", "Model versions"):
        assert any(needed.lower() in t.lower() for t in titles), f"no {needed} panel"
    # Every main panel drew data from Prometheus (series count per panel).
    assert all(n > 0 for n in summary.values()), summary
    # The PNG's queries are the Grafana dashboards' queries: both views show the same numbers.
    grafana = {q["expr"] for q in dashboards.all_queries(values={"task": ".*"})}
    exprs = [q.expr for p in dashboard_png.PANELS for q in (*p.queries, *([p.shade] if p.shade else []))]
    for expr in exprs + [expr for _, expr in dashboard_png.STATS]:
        assert dashboard_png.expand(expr, task=".*", range_="1h") in grafana, expr


def test_dashboard_png_command_filters_tasks(observed: ObservedRun, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command's own parser: a task with no data leaves its panels empty, the rest drawn."""
    import argparse

    from stream.cli import dashboard as dashboard_cli

    parser = argparse.ArgumentParser(prog="skystream")
    dashboard_cli.register(parser.add_subparsers(dest="command"))
    out = observed.tmp / "tess-only.png"
    args = parser.parse_args(["dashboard-png", "--prometheus", observed.prom.url, "--range", "10m",
                              "--task", "tess", "-o", str(out)])
    assert args.func(args) == 0
    assert png_size(out.read_bytes())[0] > 0
    printed = capsys.readouterr().out
    # Task-filtered panels (predictions, inference, drift) have no tess series; the stream-wide ones do.
    assert "no data: Predictions by label, Inference time" in printed and "Drift" in printed, printed
    assert "Throughput" not in printed.split("no data:")[1]


def test_dashboard_png_says_when_prometheus_is_unreachable(tmp_path: Path) -> None:
    import argparse

    from stream.cli import dashboard as dashboard_cli

    parser = argparse.ArgumentParser(prog="skystream")
    dashboard_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dashboard-png", "--prometheus", f"http://127.0.0.1:{free_port()}",
                              "-o", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="cannot reach Prometheus"):
        args.func(args)
    assert not (tmp_path / "x.png").exists()
