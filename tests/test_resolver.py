"""The watcher's results follower against a real (embedded) broker: it notices a broker that lost its
state, marks the unresolved files due, and rechecks them once more a while after the reset."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

from stream.ingest.resolver import ResultFollower
from stream.ingest.sources import Candidate
from stream.ingest.watcher import Ledger
from stream.runtime.kafka import ensure_topics
from stream.settings import Settings


def _pending(ledger: Ledger) -> dict[str, int]:
    return dict(ledger.db.execute("SELECT identity, due FROM pending"))


async def _until(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    """Poll in the event loop (the ledger's SQLite connection belongs to this thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_reset_marks_unresolved_files_due_and_they_are_rechecked_three_times(embedded_broker,
                                                                              tmp_path: Path) -> None:
    settings = dataclasses.replace(Settings(), watch_reset_recheck_seconds=2.0)
    asyncio.run(ensure_topics(embedded_broker.bootstrap, settings))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for name in ("a", "b"):
        ledger.record(name, Candidate(f"/in/{name}", 1, "v1"), "published", ("skystream.files", b"k", b"v"))
    ledger.set_meta("cluster_id", "a-cluster-that-is-gone")  # as if the broker restarted empty
    ledger.commit()
    follower = ResultFollower(ledger, embedded_broker.bootstrap, settings, "test", check_interval=0.2)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop))
        try:
            await _until(lambda: _pending(ledger) == {"a": 1, "b": 1}, 30,
                                    "the reset to mark both files due")
            for name in ("a", "b"):  # the watcher publishes them again...
                ledger.republished(name, by_fallback=False)
            ledger.resolve(["a"])  # ...and a's outcome is seen, b's never is
            ledger.commit()
            t0 = time.monotonic()
            await _until(lambda: _pending(ledger) == {"b": 1}, 30,
                                    "the recheck to mark the file still unresolved due")
            assert time.monotonic() - t0 > 0.5, "rechecked before its time"
            ledger.republished("b", by_fallback=False)
            ledger.commit()
            await _until(lambda: _pending(ledger) == {"b": 1}, 30, "the second recheck")
            ledger.republished("b", by_fallback=False)
            ledger.commit()
            await _until(lambda: _pending(ledger) == {"b": 1}, 30, "the third recheck")
            ledger.republished("b", by_fallback=False)
            ledger.commit()
            await asyncio.sleep(5)
            assert _pending(ledger) == {"b": 0}, "rechecked more than three times"
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
