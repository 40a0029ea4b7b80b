"""Trust boundaries: a forged message cannot make a worker read outside its sources or serve a model
that is not the registry's (valid, signed) champion; an unavailable dependency pauses, not dead-letters.

These run the worker's own functions (stream/worker/events.py, stream/models/hot_swap.py) on real
files and a real registry, without a broker; tests/test_transient.py runs the same through workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from s3_fixtures import FlakyProxy, moto_endpoint, s3_env  # noqa: F401 - pytest fixtures

import schemas
from stream import kinds
from stream.errors import Rejected, Unavailable
from stream.ingest import allowlist, storage
from stream.models import hot_swap
from stream.models.registry import BUNDLED, LocalRegistry
from stream.scoring.publish import CollectingSink, score_and_publish
from stream.scoring.scorer import Scorer
from stream.settings import TOPICS, Settings
from stream.worker import events as worker

KEY = "model-signing-key-5e2a91"


def file_event(uri: str, data: bytes) -> bytes:
    return schemas.encode("FileEvent", {
        "file_id": hashlib.sha256(data).hexdigest(), "uri": uri, "kind": "spectrum", "size_bytes": len(data),
        "source": "/forged", "etag": None, "detected_at_ms": 1_700_000_000_000,
    })


def sent(sink: CollectingSink, topic_key: str) -> list[dict[str, Any]]:
    return [schemas.decode(value)[1] for topic, _, value in sink.sent if topic == TOPICS[topic_key]]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def no_pool(kind: str, jobs: list[worker.Job]) -> list[Any]:
    """The worker's extraction in this process (a worker runs it in a child): the tests patch storage here."""
    out: list[Any] = []
    for job in jobs:
        try:
            out.append(worker.extract_from_uri(kind, *job))
        except (Rejected, Unavailable) as exc:
            out.append(exc)
    return out


# -- sources ---------------------------------------------------------------------------------------
def test_file_events_outside_the_sources_are_dead_lettered_unread(tmp_path: Path, smass_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "private"
    inbox.mkdir()
    outside.mkdir()
    spectrum = sorted(smass_dir.iterdir())[0]
    good = Path(shutil.copy(spectrum, inbox / "good.txt"))
    secret = Path(shutil.copy(spectrum, outside / "secret.txt"))
    (inbox / "link.txt").symlink_to(secret)  # a link inside the inbox that leads out of it
    (tmp_path / "inbox-evil").mkdir()  # a sibling whose name starts like the root
    sibling = Path(shutil.copy(spectrum, tmp_path / "inbox-evil" / "x.txt"))
    monkeypatch.setenv("SKYSTREAM_SOURCES", f"{inbox}, s3://bucket/incoming")
    opened: list[str] = []
    real_read = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri, limit=None: opened.append(uri) or real_read(uri, limit))

    forged = [str(secret), f"{inbox}/../private/secret.txt", str(inbox / "link.txt"), f"file://{secret}",
              str(sibling), "s3://bucket/incoming/../private/x.txt", "s3://bucket/incoming-2/x.txt",
              "s3://other/incoming/x.txt", "relative/secret.txt"]
    sink = CollectingSink()
    for uri in forged:
        asyncio.run(worker.preprocess_event(file_event(uri, secret.read_bytes()), sink, no_pool))
    dead = sent(sink, "rejected")
    assert [(d["uri"], d["reason"], d["stage"]) for d in dead] == [(u, "outside-sources", "preprocess") for u in forged]
    assert opened == [] and sent(sink, "features.spectrum") == []

    asyncio.run(worker.preprocess_event(file_event(str(good), good.read_bytes()), sink, no_pool))
    assert opened == [str(good)] and len(sent(sink, "features.spectrum")) == 1  # inside: read as before

    roots = allowlist.Roots.parse(f"{inbox},s3://bucket/incoming")
    assert roots.allows("s3://bucket/incoming/a/b.txt") and roots.root_of(str(good)) == str(inbox.resolve())
    assert not allowlist.Roots.parse(None).allows(str(good))  # nothing configured: nothing readable


def test_alert_figure_reads_only_inside_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.alerts.policy import alerts_for
    from stream.errors import Rejected

    monkeypatch.setenv("SKYSTREAM_SOURCES", str(tmp_path / "inbox"))
    signal = {"period_days": 3.3, "epoch_btjd": 1470.0, "duration_hours": 3.0, "depth_ppm": 5000.0, "snr": 20.0,
              "n_transits": 6, "planet_radius_earth": 10.0, "triage_probability": 0.99, "planet_probability": 0.9,
              "known_toi": None}
    prediction = {"kind": "lightcurve", "prediction_id": "p", "file_id": "f", "object": "TIC 1", "model": "tess",
                  "model_version": 1, "source": "/etc/passwd", "signals": [signal]}
    monkeypatch.setattr("stream.scoring.transit_predictor.transit_alerts",
                        lambda p: [{"reason": "planet-candidate", "score": 0.9, "summary": "s", "signal_index": 0}])
    with pytest.raises(Rejected) as refused:
        alerts_for(prediction)
    assert refused.value.reason == "outside-sources"


# -- model announcements ---------------------------------------------------------------------------
def announcement(task: str, version: str, sha256: str) -> bytes:
    return schemas.encode("ModelUpdate", {"task": task, "version": version, "action": "publish",
                                          "registry": "/somewhere/else", "sha256": sha256,
                                          "at_ms": int(time.time() * 1000)})


def republish(registry: LocalRegistry, onnx: bytes | None = None, promote: bool = False) -> str:
    current = registry.load("smass")
    meta = {k: v for k, v in current.metadata.items() if k not in ("version", "sha256", "created")}
    return registry.publish("smass", onnx or current.onnx, meta, promote=promote)


@pytest.fixture()
def registry(tmp_path: Path) -> LocalRegistry:
    reg = LocalRegistry(tmp_path / "registry", seed_from=None)
    shutil.copytree(BUNDLED, reg.root)
    return reg


def test_announcements_only_make_workers_reread_the_champion(registry: LocalRegistry,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYSTREAM_MODEL_SIGNING_KEY", raising=False)
    settings = Settings(registry=str(registry.root))
    scorer = Scorer(registry, settings=settings)
    v1 = scorer.model("smass").version
    v2 = republish(registry)  # published, not promoted (e.g. the retraining gate refused it)
    sha2 = registry.metadata("smass", v2)["sha256"]

    assert not hot_swap.apply_update(settings, scorer, announcement("smass", v2, sha2))
    assert scorer.serving("smass").version == v1, "a version named in a message replaced the champion"

    before = {r: sample("skystream_model_refused_total", task=t, reason=r)
              for t, r in (("smass", "no-checksum"), ("unknown", "unknown-task"))}
    registry.promote("smass", v2)
    assert not hot_swap.apply_update(settings, scorer, announcement("smass", v2, ""))
    assert not hot_swap.apply_update(settings, scorer, announcement("ceres", v2, sha2))
    assert scorer.serving("smass").version == v1
    assert sample("skystream_model_refused_total", task="smass", reason="no-checksum") == before["no-checksum"] + 1
    assert sample("skystream_model_refused_total", task="unknown", reason="unknown-task") == before["unknown-task"] + 1

    # A valid announcement of anything for the task: the worker now serves the registry's champion.
    assert hot_swap.apply_update(settings, scorer, announcement("smass", v1, sha2))
    assert scorer.serving("smass").version == v2


def test_workers_poll_the_champion_when_an_announcement_is_missed(registry: LocalRegistry, embedded_broker,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import wait_until

    monkeypatch.delenv("SKYSTREAM_MODEL_SIGNING_KEY", raising=False)
    settings = Settings(broker=embedded_broker.bootstrap, registry=str(registry.root), model_poll_seconds=0.5)
    scorer = Scorer(registry, settings=settings)
    v1 = scorer.model("smass").version
    v2 = republish(registry, promote=True)  # and nobody announces it

    async def run() -> None:
        stop = asyncio.Event()
        follower = asyncio.create_task(hot_swap.follow(settings, scorer, stop))
        await asyncio.to_thread(wait_until, lambda: scorer.serving("smass").version == v2, 60, f"v{v2} by polling")
        stop.set()
        await follower

    assert v1 != v2
    asyncio.run(run())


def test_signing_refuses_unsigned_and_wrongly_signed_models(registry: LocalRegistry, caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SKYSTREAM_MODEL_SIGNING_KEY", KEY)
    settings = Settings(registry=str(registry.root))
    scorer = Scorer(registry, settings=settings)
    with pytest.raises(Unavailable):  # the bundled champion is unsigned: nothing serves, inputs wait
        scorer.model("smass")

    signed = republish(registry, promote=True)
    assert registry.metadata("smass", signed)["hmac_sha256"]
    assert scorer.model("smass").version == signed

    def refusals(reason: str) -> float:
        return sample("skystream_model_refused_total", task="smass", reason=reason)

    for key, reason in ((None, "unsigned"), ("some-other-key", "bad-signature")):
        if key is None:
            monkeypatch.delenv("SKYSTREAM_MODEL_SIGNING_KEY")
        else:
            monkeypatch.setenv("SKYSTREAM_MODEL_SIGNING_KEY", key)
        bad = republish(registry, promote=True)
        monkeypatch.setenv("SKYSTREAM_MODEL_SIGNING_KEY", KEY)
        before = refusals(reason)
        sha = registry.metadata("smass", bad)["sha256"]
        assert not hot_swap.apply_update(settings, scorer, announcement("smass", bad, sha))
        assert refusals(reason) == before + 1
        assert scorer.serving("smass").version == signed, f"a model that is {reason} replaced the signed one"

    good = republish(registry, promote=True)
    assert hot_swap.apply_update(settings, scorer, announcement("smass", good, "x"))
    assert scorer.serving("smass").version == good

    # The key is a secret: never in a repr, a log line or the registry.
    stored = "".join(p.read_text() for p in registry.root.rglob("*.json"))
    assert KEY not in repr(settings) and KEY not in str(settings) and KEY not in caplog.text and KEY not in stored


# -- transient failures ----------------------------------------------------------------------------
def test_storage_unavailable_pauses_and_retries_the_same_event(smass_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spectrum = Path(shutil.copy(sorted(smass_dir.iterdir())[0], tmp_path / "s.txt"))
    monkeypatch.setenv("SKYSTREAM_SOURCES", str(tmp_path))
    failures = {"left": 3}
    real_read = storage.read_bytes

    def flaky(uri: str, limit: int | None = None) -> bytes:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("storage is down")  # what s3.S3Unavailable is
        return real_read(uri, limit)

    monkeypatch.setattr(storage, "read_bytes", flaky)
    retries = sample("skystream_retries_total", stage="preprocess", reason="storage-unavailable")
    sink = CollectingSink()
    raw = file_event(str(spectrum), spectrum.read_bytes())
    asyncio.run(worker.until_available("preprocess", lambda: worker.preprocess_event(raw, sink, no_pool),
                                       first_delay=0.01, max_delay=0.02))
    assert sent(sink, "rejected") == [] and len(sent(sink, "features.spectrum")) == 1
    assert sample("skystream_retries_total", stage="preprocess", reason="storage-unavailable") == retries + 3
    assert sample("skystream_paused", stage="preprocess") == 0


def test_no_model_raises_before_anything_is_sent(smass_dir: Path, tmp_path: Path) -> None:
    spectrum = kinds.by_name("spectrum")
    path = sorted(smass_dir.iterdir())[0]
    record = spectrum.extract(path.read_bytes(), uri=str(path), file_id="f", detected_at_ms=1)
    bad = b"not avro"  # would be a decode dead letter if anything were sent before the model is known
    sink = CollectingSink()
    empty = LocalRegistry(tmp_path / "empty", seed_from=None)
    with pytest.raises(Unavailable) as paused:
        asyncio.run(score_and_publish(Scorer(empty, settings=Settings()), spectrum,
                                      [bad, schemas.encode(spectrum.features_schema, record)], sink))
    assert paused.value.reason == "no-model" and sink.sent == []


def test_redrive_plans_a_file_event_or_the_features_again(tmp_path: Path, smass_dir: Path) -> None:
    from stream.ingest import redrive
    from stream.runtime.deadletters import rejected_record

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    spectrum = Path(shutil.copy(sorted(smass_dir.iterdir())[0], inbox / "s.txt"))
    roots = allowlist.Roots.parse(str(inbox))
    failed = rejected_record("preprocess", Unavailable("storage-unavailable", "down"), uri=str(spectrum),
                             file_id="old", topic=TOPICS["files"])
    again = redrive.plan(failed, roots)
    _, event = schemas.decode(again.value, expect="FileEvent")
    assert again.topic == TOPICS["files"] and event["uri"] == str(spectrum) and event["kind"] == "spectrum"
    assert event["file_id"] == hashlib.sha256(spectrum.read_bytes()).hexdigest() == again.key.decode()
    assert event["size_bytes"] == spectrum.stat().st_size and event["source"] == str(inbox.resolve())

    scored = rejected_record("score", Unavailable("no-model", "none"), uri=str(spectrum), file_id="f1",
                             topic=TOPICS["features.spectrum"], payload=b"features-bytes")
    assert (redrive.plan(scored, roots).topic, redrive.plan(scored, roots).value) == (TOPICS["features.spectrum"],
                                                                                     b"features-bytes")
    outside = dict(failed, uri="/etc/passwd")
    assert redrive.plan(outside, roots).topic is None  # never re-driven into a worker's read path
    assert redrive.plan(rejected_record("decode", ValueError("x"), payload=b"?"), roots).topic is None


def test_an_unreachable_registry_is_unavailable_not_a_dead_letter(s3_env: str,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.ingest import s3
    from stream.models.registry import S3Registry

    down = FlakyProxy(s3_env, drop=10**9)
    monkeypatch.setenv("SKYSTREAM_S3_ENDPOINT", down.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3.reset_clients()
    scorer = Scorer(S3Registry("s3://models/registry"), settings=Settings())
    with pytest.raises(Unavailable) as paused:
        scorer.model("smass")
    assert paused.value.reason == "registry-unavailable"
