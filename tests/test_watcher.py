"""The watcher against the real embedded broker: what it publishes, and what it never publishes twice."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import schemas
from stream.ingest.sources import DirectorySource
from stream.ingest.watcher import Ledger, Watcher, ledger_path
from stream.runtime.kafka import ensure_topics
from stream.settings import TOPICS, Settings


async def _poll(broker: str, directory: Path, state: Path, settle: float = 0.0) -> tuple[int, int]:
    await ensure_topics(broker, Settings(partitions=2))
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    source = DirectorySource(directory, settle_seconds=settle)
    ledger = Ledger(ledger_path(state, source))
    try:
        res = await Watcher(source, lambda t, k, v: producer.send(t, v, key=k), ledger).poll()
    finally:
        await producer.stop()
        ledger.close()
    return res.published, res.rejected


async def _read_all(broker: str) -> tuple[list[dict], list[dict]]:
    consumer = AIOKafkaConsumer(TOPICS["files"], TOPICS["rejected"], bootstrap_servers=broker,
                                auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await consumer.start()
    events, dead = [], []
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=300)
            idle = 0 if batch else idle + 1
            for msgs in batch.values():
                for m in msgs:
                    name, rec = schemas.decode(m.value)
                    (events if name == "FileEvent" else dead).append(rec)
    finally:
        await consumer.stop()
    return events, dead


@pytest.fixture()
def inbox(tmp_path: Path, smass_dir: Path) -> Path:
    d = tmp_path / "inbox"
    d.mkdir()
    for f in sorted(smass_dir.iterdir())[:20]:
        shutil.copy(f, d / f.name)
    return d


def test_publishes_files_already_there_once_across_restarts(embedded_broker, inbox: Path, tmp_path: Path) -> None:
    b, state = embedded_broker.bootstrap, tmp_path / "state"
    assert asyncio.run(_poll(b, inbox, state)) == (20, 0)
    # A restart (new process, same ledger) publishes nothing again, nor does the same content renamed.
    shutil.copy(inbox / sorted(os.listdir(inbox))[0], inbox / "renamed-copy.txt")
    assert asyncio.run(_poll(b, inbox, state)) == (0, 0)
    # Changed content is new content.
    with open(inbox / "renamed-copy.txt", "a") as fh:
        fh.write("0.9300\t1.1000\t0.0100\n")
    assert asyncio.run(_poll(b, inbox, state)) == (1, 0)

    events, dead = asyncio.run(_read_all(b))
    assert len(events) == 21 and not dead
    assert len({e["file_id"] for e in events}) == 21
    assert {e["kind"] for e in events} == {"spectrum"}
    for e in events:
        schemas.validate("FileEvent", e)
        assert Path(e["uri"]).is_absolute() and e["size_bytes"] == Path(e["uri"]).stat().st_size


def test_never_publishes_a_file_still_being_written(embedded_broker, tmp_path: Path, smass_dir: Path) -> None:
    b, state, inbox = embedded_broker.bootstrap, tmp_path / "state", tmp_path / "inbox"
    inbox.mkdir()
    content = sorted(smass_dir.iterdir())[0].read_bytes()
    growing = inbox / "a000001.[2]"
    growing.write_bytes(content[:100])
    (inbox / ".hidden.part").write_bytes(content)  # temporary names are never offered
    assert asyncio.run(_poll(b, inbox, state, settle=2.0)) == (0, 0)
    growing.write_bytes(content)  # the writer finishes
    old = time.time() - 10
    os.utime(growing, (old, old))  # ... and the file has been quiet for longer than the settle time
    assert asyncio.run(_poll(b, inbox, state, settle=2.0)) == (1, 0)
    events, _ = asyncio.run(_read_all(b))
    assert len(events) == 1 and events[0]["size_bytes"] == len(content)


def test_unknown_files_go_to_the_dead_letter_topic_once(embedded_broker, tmp_path: Path, bad_files) -> None:
    b, state = embedded_broker.bootstrap, tmp_path / "state"
    inbox = tmp_path / "bad"
    (inbox / "notes.md").write_text("# observing log\nclouds all night, nothing taken\n")
    published, rejected = asyncio.run(_poll(b, inbox, state))
    assert rejected >= 3  # empty, binary garbage, prose: refused by the watcher itself
    assert asyncio.run(_poll(b, inbox, state)) == (0, 0)
    events, dead = asyncio.run(_read_all(b))
    by_name = {Path(d["uri"]).name: d for d in dead}
    assert by_name["empty.txt"]["reason"] == "empty-file"
    assert by_name["garbage.bin"]["reason"] == "binary-content"
    assert by_name["notes.md"]["reason"] == "unknown-kind"
    assert all(d["stage"] == "watch" and d["error"] for d in dead)
    assert len(dead) == rejected and len(events) == published


def _poll_with(broker: str, source: DirectorySource, state: Path, **watcher_kw) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        await ensure_topics(broker, Settings(partitions=2))
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        ledger = Ledger(ledger_path(state, source))
        try:
            res = await Watcher(source, lambda t, k, v: producer.send(t, v, key=k), ledger, **watcher_kw).poll()
        finally:
            await producer.stop()
            ledger.close()
        return res.published, res.rejected

    return asyncio.run(run())


def test_hostile_entries_are_refused_unread_and_nothing_outside_the_root_reaches_a_topic(
        embedded_broker, tmp_path: Path, smass_dir: Path) -> None:
    b, state, inbox = embedded_broker.bootstrap, tmp_path / "state", tmp_path / "inbox"
    inbox.mkdir()
    spectrum = sorted(smass_dir.iterdir())[0]
    outside = tmp_path / "secret.txt"
    outside.write_bytes(spectrum.read_bytes().replace(b"0.", b"0."))  # a valid spectrum, but not ours to read
    (inbox / "passwd").symlink_to("/etc/passwd")
    (inbox / "looks-like-a-spectrum").symlink_to(outside)
    (inbox / "linked-dir").symlink_to(tmp_path, target_is_directory=True)  # out of the root: refused
    (inbox / "sub").mkdir()
    (inbox / "linked-sub").symlink_to(inbox / "sub", target_is_directory=True)  # inside: skipped, not entered
    deep = inbox.joinpath(*[f"d{i}" for i in range(6)])
    deep.mkdir(parents=True)
    shutil.copy(spectrum, deep / "deep.txt")
    shutil.copy(spectrum, inbox / "ok.txt")
    shutil.copy(spectrum, inbox / "inside-target.txt")
    (inbox / "link-inside").symlink_to(inbox / "inside-target.txt")  # same content: published once
    odd = os.fsencode(str(inbox)) + b"/bad-\xff-name.txt"
    with open(odd, "wb") as fh:
        fh.write(spectrum.read_bytes())
    big = inbox / "huge.txt"
    big.write_bytes(spectrum.read_bytes() + b"\n" * 5000)

    source = DirectorySource(inbox, settle_seconds=0, max_depth=4)
    limits = {"spectrum": spectrum.stat().st_size + 100, "lightcurve": 10**6}
    published, rejected = _poll_with(b, source, state, max_bytes=limits)
    events, dead = asyncio.run(_read_all(b))
    reasons = {Path(d["uri"]).name: d["reason"] for d in dead}
    assert reasons == {"passwd": "outside-root", "looks-like-a-spectrum": "outside-root", "d4": "too-deep",
                       "linked-dir": "outside-root", "bad-\\xff-name.txt": "bad-name", "huge.txt": "too-large"}, reasons
    # ok.txt, inside-target.txt and link-inside hold the same bytes: one file_id, published once.
    assert len(events) == 1 and Path(events[0]["uri"]).name in ("ok.txt", "inside-target.txt", "link-inside")
    assert (published, rejected) == (len(events), len(dead))
    # Nothing of a file outside the root is in any message; dead letters carry no file bytes.
    assert all(d["payload"] is None for d in dead)
    for d in dead:
        assert "root:" not in d["error"] and "secret" not in d["uri"]
    # A second pass publishes nothing again.
    assert _poll_with(b, source, state, max_bytes=limits) == (0, 0)


def test_unknown_file_dead_letters_carry_only_a_short_hex_prefix(embedded_broker, tmp_path: Path) -> None:
    b, state, inbox = embedded_broker.bootstrap, tmp_path / "state", tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "notes.md").write_text("# observing log: a private note with a password hunter2\n" * 20)
    assert _poll_with(b, DirectorySource(inbox, settle_seconds=0), state) == (0, 1)
    _, dead = asyncio.run(_read_all(b))
    assert len(dead) == 1 and dead[0]["payload"] is None
    assert "hunter2" not in dead[0]["error"]
    assert b"# observing log:"[:16].hex() in dead[0]["error"]


def test_a_file_without_outcome_is_published_once_more_after_the_fallback_delay(
        embedded_broker, inbox: Path, tmp_path: Path) -> None:
    """No worker runs, so no file gets an outcome: after ``republish_after`` each is published exactly
    once more, byte for byte; a file whose outcome was seen is not."""
    async def run() -> None:
        await ensure_topics(embedded_broker.bootstrap, Settings(partitions=2))
        producer = AIOKafkaProducer(bootstrap_servers=embedded_broker.bootstrap, acks="all")
        await producer.start()
        source = DirectorySource(inbox, settle_seconds=0)
        ledger = Ledger(ledger_path(tmp_path / "state", source))
        watcher = Watcher(source, lambda t, k, v: producer.send(t, v, key=k), ledger, republish_after=600)
        try:
            assert (await watcher.poll()).published == 20
            resolved = sorted(ledger.db.execute("SELECT identity FROM pending").fetchall())[0][0]
            ledger.resolve([resolved])  # as the results follower does when its prediction arrives
            assert await watcher.republish_due() == 0  # not yet due
            # Ten minutes pass (the publication times move back) with no outcome.
            ledger.db.execute("UPDATE pending SET sent_at_ms = sent_at_ms - 601000")
            await watcher.poll()
            ledger.db.execute("UPDATE pending SET sent_at_ms = sent_at_ms - 601000")
            await watcher.poll()  # once more at most
            assert ledger.unresolved() == 19
        finally:
            await producer.stop()
            ledger.close()

    asyncio.run(run())
    events, _ = asyncio.run(_read_all(embedded_broker.bootstrap))
    copies: dict[str, list[dict]] = {}
    for e in events:
        copies.setdefault(e["file_id"], []).append(e)
    assert sorted(len(c) for c in copies.values()) == [1] + [2] * 19
    assert all(c[0] == c[-1] for c in copies.values())
