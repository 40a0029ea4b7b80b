"""The worker's per-event logic without a broker: preprocess one file event, score a batch, export lag.

The functions take a sink instead of Faust topics; a CollectingSink records what a worker would send.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from conftest import BAD_FILES
from helpers import process_gone, wait_until
from prometheus_client import REGISTRY

import schemas
from stream import kinds
from stream.features import spectra
from stream.models.registry import BUNDLED, LocalRegistry
from stream.scoring.publish import CollectingSink, score_and_publish
from stream.scoring.scorer import Scorer
from stream.settings import TOPICS, Settings
from stream.worker import events as worker
from stream.worker.stall import StallWatch

SPECTRUM = kinds.by_name("spectrum")


@pytest.fixture(autouse=True)
def sources(tmp_path: Path, smass_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers read only under SKYSTREAM_SOURCES: this module's inputs live in these two directories."""
    monkeypatch.setenv("SKYSTREAM_SOURCES", f"{tmp_path},{smass_dir}")


def file_event(path: Path, kind: str = "spectrum") -> bytes:
    data = path.read_bytes()
    return schemas.encode("FileEvent", {
        "file_id": hashlib.sha256(data).hexdigest(), "uri": str(path), "kind": kind, "size_bytes": len(data),
        "source": str(path.parent), "etag": None, "detected_at_ms": 1_700_000_000_000,
    })


def sent_to(sink: CollectingSink, topic_key: str) -> list[dict[str, Any]]:
    return [schemas.decode(value)[1] for topic, _, value in sink.sent if topic == TOPICS[topic_key]]


def processed(agent: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("skystream_messages_processed_total", {"agent": agent, "outcome": outcome}) or 0.0


def test_file_events_become_features_or_one_dead_letter(tmp_path: Path, smass_dir: Path) -> None:
    truncated = tmp_path / "truncated.txt"
    truncated.write_bytes(BAD_FILES["truncated.txt"][0])
    good = sorted(smass_dir.iterdir())[0]
    sink = CollectingSink()
    rejected_before = processed("preprocess", "rejected")

    pool = worker.PreprocessPool(Settings())
    try:
        asyncio.run(worker.preprocess_event(file_event(good), sink, pool.extract))
        asyncio.run(worker.preprocess_event(file_event(truncated), sink, pool.extract))
        asyncio.run(worker.preprocess_event(b"\x00not a file event", sink, pool.extract))
    finally:
        pool.stop()

    features = sent_to(sink, "features.spectrum")
    assert [f["uri"] for f in features] == [str(good)]
    dead = sent_to(sink, "rejected")
    assert [(d["stage"], d["reason"]) for d in dead] == [("preprocess", "insufficient-coverage"),
                                                         ("decode", "bad-message")]
    assert dead[0]["uri"] == str(truncated) and dead[0]["file_id"] == hashlib.sha256(truncated.read_bytes()).hexdigest()
    assert dead[1]["payload"] == b"\x00not a file event" and dead[1]["topic"] == TOPICS["files"]
    assert processed("preprocess", "rejected") - rejected_before == 2




def test_preprocess_pool_survives_a_killed_child(smass_dir: Path) -> None:
    """A child killed from outside (the kernel's OOM killer) is replaced for the next files."""
    files = [str(p) for p in sorted(smass_dir.iterdir())[:3]]
    pool = worker.PreprocessPool(Settings())

    async def kill_between_batches() -> list[Any]:
        first = await pool.extract("spectrum", [(files[0], "f" * 64, 0)])
        pid = pool.child_pid("spectrum")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: process_gone(pid), 30, "the child to die")
        return first + await pool.extract("spectrum", [(f, "f" * 64, 0) for f in files[1:]])

    try:
        results = asyncio.run(kill_between_batches())
    finally:
        pool.stop()
    assert [name for name, _ in results] == ["SpectrumFeatures"] * 3
    assert [record["uri"] for _, record in results] == files


def test_the_worker_reads_no_more_than_the_limit_whatever_the_event_says(tmp_path: Path, smass_dir: Path) -> None:
    good = sorted(smass_dir.iterdir())[0]
    grown = tmp_path / "grown.txt"
    grown.write_bytes(good.read_bytes() * 4)
    event = schemas.decode(file_event(good), expect="FileEvent")[1]  # claims the small size
    event["uri"] = str(grown)
    sink = CollectingSink()
    pool = worker.PreprocessPool(Settings(max_spectrum_bytes=2 * good.stat().st_size))
    try:
        asyncio.run(worker.preprocess_event(schemas.encode("FileEvent", event), sink, pool.extract))
    finally:
        pool.stop()
    assert [(d["stage"], d["reason"]) for d in sent_to(sink, "rejected")] == [("preprocess", "too-large")]


def _features_message(path: Path) -> bytes:
    data = path.read_bytes()
    record = spectra.spectrum_features(data, uri=str(path), file_id=hashlib.sha256(data).hexdigest(),
                                       detected_at_ms=0)
    return schemas.encode("SpectrumFeatures", record)


def test_a_batch_with_bad_messages_dead_letters_them_and_scores_the_rest(smass_dir: Path) -> None:
    if not (BUNDLED / "smass" / "champion.json").exists():
        pytest.skip("no bundled SMASS model")
    scorer = Scorer(LocalRegistry(BUNDLED, seed_from=None))
    files = sorted(smass_dir.iterdir())[:3]
    good = [_features_message(f) for f in files[:2]]
    # Decodes, but on a grid the model was not trained on: the model refuses this record only.
    _, off_grid = schemas.decode(_features_message(files[2]), expect="SpectrumFeatures")
    off_grid = dict(off_grid, wavelength_um=off_grid["wavelength_um"][::2], reflectance=off_grid["reflectance"][::2])
    batch = [good[0], b"\x00undecodable", good[1], schemas.encode("SpectrumFeatures", off_grid)]
    sink = CollectingSink()

    outcomes = asyncio.run(score_and_publish(scorer, SPECTRUM, batch, sink))

    assert [o.prediction is not None for o in outcomes] == [True, False, True, False]
    assert [o.rejected["stage"] for o in outcomes if o.rejected] == ["decode", "score"]
    predictions = sent_to(sink, "predictions")
    assert [p["source"] for p in predictions] == [str(files[0]), str(files[1])]
    assert predictions == [outcomes[0].prediction, outcomes[2].prediction]
    dead = sent_to(sink, "rejected")
    assert [(d["stage"], d["reason"]) for d in dead] == [("decode", "bad-message"), ("score", "grid-mismatch")]
    assert dead[0]["payload"] == b"\x00undecodable" and dead[0]["topic"] == SPECTRUM.features_topic
    assert dead[1]["uri"] == str(files[2]) and dead[1]["payload"] == batch[3]


class StubConsumer:
    """Stands in for Faust's consumer: export_lag uses only assignment(), position() and highwater(),
    and a real consumer's assignment comes from a group rebalance, which needs a broker and a worker."""

    def __init__(self, positions: dict[TopicPartition, int | None], highwaters: dict[TopicPartition, int]) -> None:
        self.positions, self.highwaters = positions, highwaters

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    async def position(self, tp: TopicPartition) -> int:
        if self.positions[tp] is None:
            raise RuntimeError("partition is being revoked")
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return self.highwaters[tp]


def test_lag_export_follows_the_assignment() -> None:
    topic = TOPICS["features.spectrum"]
    p0, p1, p2 = (TopicPartition(topic, i) for i in range(3))

    def lag(tp: TopicPartition) -> float | None:
        return REGISTRY.get_sample_value("skystream_consumer_lag_messages",
                                         {"topic": tp.topic, "partition": str(tp.partition)})

    def assigned(name: str) -> float | None:
        return REGISTRY.get_sample_value("skystream_assigned_partitions", {"topic": name})

    exported: set[tuple[str, str]] = set()
    asyncio.run(worker.export_lag(StubConsumer({p0: 10, p1: 7, p2: None}, {p0: 25, p1: 7, p2: 9}), exported))
    assert (lag(p0), lag(p1), lag(p2)) == (15, 0, None)  # p2's position is unknown: no series rather than a guess
    assert assigned(topic) == 3 and assigned(TOPICS["files"]) == 0

    asyncio.run(worker.export_lag(StubConsumer({p1: 8}, {p1: 12}), exported))
    assert lag(p0) is None, "a partition this worker lost keeps no frozen lag series"
    assert lag(p1) == 4 and assigned(topic) == 1 and exported == {(topic, "1")}


def test_lag_export_reports_a_stalled_partition_from_the_committed_offsets() -> None:
    """The worker's lag timer is where the stall watch runs (stream/worker/app.py exits on a stall)."""
    topic = TOPICS["files"]
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = StubConsumer({p0: 30, p1: 30}, {p0: 30, p1: 30})
    consumer._committed_offset = {p0: 12, p1: 30}  # Faust's in-memory record: p0 has 18 messages waiting
    watch = StallWatch(after=0.2)
    exported: set[tuple[str, str]] = set()
    assert asyncio.run(worker.export_lag(consumer, exported, watch=watch)) == []
    time.sleep(0.3)
    assert asyncio.run(worker.export_lag(consumer, exported, watch=watch)) == [p0]
