"""The watcher: publish one file event for every complete new file in a source.

- Files already there at start are published too; files still being written are not (the source
  offers only settled files).
- Never twice for the same content, across restarts: a small SQLite ledger in the state directory
  records every identity (content sha256 for files, URI+ETag for S3 objects) once the broker has
  acknowledged its message. A crash between the ack and the ledger write republishes that file once;
  downstream results are keyed by file_id, so the replay gives the same answer (at-least-once with
  idempotent results).
- A file that is not a spectrum or a light curve goes to the dead-letter topic with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import schemas
from stream.errors import Rejected
from stream.features import detect as features
from stream.ingest import storage
from stream.ingest.sources import Candidate, Source
from stream.runtime.deadletters import rejected_record
from stream.runtime.metrics import FILES_DISCOVERED, FILES_PUBLISHED, LAST_INPUT
from stream.settings import TOPICS

log = logging.getLogger(__name__)

# (topic, key, value) -> an awaitable that completes when the broker has the message
Send = Callable[[str, bytes, bytes], Awaitable[Awaitable[object]]]


class Ledger:
    """What a watcher has already published, so a restart publishes nothing twice."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (uri TEXT PRIMARY KEY, version TEXT NOT NULL)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS published (identity TEXT PRIMARY KEY, uri TEXT, outcome TEXT, at_ms INTEGER)"
        )
        self.db.commit()

    def unchanged(self, c: Candidate) -> bool:
        row = self.db.execute("SELECT version FROM seen WHERE uri = ?", (c.uri,)).fetchone()
        return row is not None and row[0] == c.version

    def has(self, identity: str) -> bool:
        return self.db.execute("SELECT 1 FROM published WHERE identity = ?", (identity,)).fetchone() is not None

    def mark_seen(self, c: Candidate) -> None:
        self.db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (c.uri, c.version))

    def record(self, identity: str, c: Candidate, outcome: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO published VALUES (?, ?, ?, ?)", (identity, c.uri, outcome, int(time.time() * 1000))
        )
        self.mark_seen(c)

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def ledger_path(state_dir: Path, source: Source) -> Path:
    return state_dir / f"watcher-{hashlib.sha256(source.name.encode()).hexdigest()[:16]}.sqlite"


@dataclass
class PollResult:
    published: int = 0
    rejected: int = 0
    skipped: int = 0


class Watcher:
    def __init__(self, source: Source, send: Send, ledger: Ledger, batch: int = 500) -> None:
        self.source = source
        self.send = send
        self.ledger = ledger
        self.batch = batch
        FILES_DISCOVERED.labels(source=source.name)  # at 0 from the start, for rate()

    def _identify(self, c: Candidate) -> tuple[str, bytes]:
        """(file_id, head bytes). Local files are hashed whole; S3 objects are named by URI+ETag."""
        if c.etag is not None:
            return hashlib.sha256(f"{c.uri}\n{c.etag}".encode()).hexdigest(), storage.read_bytes(
                c.uri, limit=features.HEAD_BYTES
            )
        data = storage.read_bytes(c.uri)
        return hashlib.sha256(data).hexdigest(), data[: features.HEAD_BYTES]

    async def poll(self) -> PollResult:
        """One pass over the source: publish what is new, in batches acknowledged by the broker."""
        result = PollResult()
        pending: list[tuple[Awaitable[object], str, Candidate, str]] = []
        # Listing an S3 prefix takes network round trips: keep them off the event loop.
        candidates = await asyncio.to_thread(lambda: list(self.source.scan()))
        for c in candidates:
            if self.ledger.unchanged(c):
                continue
            FILES_DISCOVERED.labels(source=self.source.name).inc()
            try:
                file_id, head = self._identify(c)
            except ConnectionError as exc:  # storage unreachable (after retries): try again next poll
                log.warning("cannot read %s now (%s); will retry", c.uri, exc)
                continue
            except Rejected as exc:
                # The file vanished or cannot be read: say so once, do not record it (it may come back).
                record = rejected_record("watch", exc, uri=c.uri)
                self.ledger.mark_seen(c)  # retried when the file changes, not on every poll
                await self.send(TOPICS["rejected"], c.uri.encode(), schemas.encode("Rejected", record))
                result.rejected += 1
                continue
            if self.ledger.has(file_id):
                self.ledger.mark_seen(c)
                result.skipped += 1
                continue
            try:
                kind = features.detect_kind(head)
                event = {
                    "file_id": file_id, "uri": c.uri, "kind": kind, "size_bytes": c.size,
                    "source": self.source.name, "etag": c.etag, "detected_at_ms": int(time.time() * 1000),
                }
                ack = await self.send(TOPICS["files"], file_id.encode(), schemas.encode("FileEvent", event))
                pending.append((ack, file_id, c, kind))
            except Rejected as exc:
                record = rejected_record("watch", exc, uri=c.uri, file_id=file_id, payload=head[:1024])
                ack = await self.send(TOPICS["rejected"], file_id.encode(), schemas.encode("Rejected", record))
                pending.append((ack, file_id, c, "rejected"))
            if len(pending) >= self.batch:
                await self._settle(pending, result)
        await self._settle(pending, result)
        return result

    async def _settle(self, pending: list, result: PollResult) -> None:
        """Wait for the broker's acks, then write the ledger: nothing is marked done before it is safe."""
        if not pending:
            return
        await asyncio.gather(*(ack for ack, *_ in pending))
        now = time.time()
        for _ack, file_id, c, outcome in pending:
            self.ledger.record(file_id, c, outcome)
            if outcome == "rejected":
                result.rejected += 1
            else:
                result.published += 1
                FILES_PUBLISHED.labels(source=self.source.name, kind=outcome).inc()
                LAST_INPUT.labels(source=self.source.name).set(now)
        self.ledger.commit()
        pending.clear()

    async def run(
        self, interval: float, stop: asyncio.Event, on_poll: Callable[[PollResult], None] | None = None
    ) -> None:
        while not stop.is_set():
            res = await self.poll()
            if on_poll:
                on_poll(res)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
