"""The watcher: publish one file event for every complete new file in a source.

- Files already there at start are published too; files still being written are not (the source
  offers only settled files).
- Never twice for the same content, across restarts: a small SQLite ledger in the state directory
  records every identity (content sha256 for files, URI+ETag for S3 objects) once the broker has
  acknowledged its message. A crash between the ack and the ledger write republishes that file once;
  downstream results are keyed by file_id, so the replay gives the same answer (at-least-once with
  idempotent results).
- A file that is not a spectrum or a light curve goes to the dead-letter topic with the reason; so
  does a file larger than its kind's size limit (``too-large``: checked before any byte is read
  against the largest limit, and against its own kind's once the first bytes told the kind), and a
  file the source refuses unread (a link out of the root, too deep, an undecodable name).
- No file content from outside the root ever reaches a topic, and of a file inside it a dead letter
  carries at most a short hex prefix, never the bytes.
- Files are hashed in chunks in a thread, so a large file never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import schemas
from stream import kinds
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

HEX_PREFIX_BYTES = 16


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
    """Publishes a FileEvent (or a dead letter) for every new file of ``source``; see the module doc."""

    def __init__(self, source: Source, send: Send, ledger: Ledger, batch: int = 500,
                 max_bytes: Mapping[str, int] | None = None) -> None:
        self.source = source
        self.send = send
        self.ledger = ledger
        self.batch = batch
        # Size limits per kind (bytes): the kinds' defaults unless given (cmd_watch passes the Settings').
        self.max_bytes = dict({k.name: k.max_bytes for k in kinds.KINDS} if max_bytes is None else max_bytes)
        FILES_DISCOVERED.labels(source=source.name)  # at 0 from the start, for rate()

    def _identify(self, c: Candidate) -> tuple[str, bytes]:
        """(file_id, head bytes). Local files are hashed whole, in chunks; S3 objects are named by URI+ETag."""
        head = storage.read_head(c.uri, features.HEAD_BYTES)
        if c.etag is not None:
            return hashlib.sha256(f"{c.uri}\n{c.etag}".encode()).hexdigest(), head
        return storage.sha256_hex(c.uri), head

    def _too_large(self, size: int, kind: str | None) -> Rejected | None:
        limit = self.max_bytes.get(kind, 0) if kind else max(self.max_bytes.values(), default=0)
        if limit and size > limit:
            what = f"a {kind}" if kind else "any input"
            return Rejected("too-large", f"{size} bytes is more than the limit for {what} ({limit} bytes)")
        return None

    async def poll(self) -> PollResult:
        """One pass over the source: publish what is new, in batches acknowledged by the broker."""
        result = PollResult()
        pending: list[tuple[Awaitable[object], str, Candidate, str]] = []
        this_pass: set[str] = set()
        # Listing an S3 prefix takes network round trips: keep them off the event loop.
        candidates = await asyncio.to_thread(lambda: list(self.source.scan()))
        for c in candidates:
            if self.ledger.unchanged(c):
                continue
            FILES_DISCOVERED.labels(source=self.source.name).inc()
            refusal = Rejected(*c.refused) if c.refused else self._too_large(c.size, None)
            if refusal is not None:
                # Nothing of the file is read: the dead letter names it and says why.
                identity = hashlib.sha256(f"{c.uri}\n{c.version}".encode()).hexdigest()
                record = rejected_record("watch", refusal, uri=c.uri)
                ack = await self.send(TOPICS["rejected"], identity.encode(), schemas.encode("Rejected", record))
                pending.append((ack, identity, c, "rejected"))
                continue
            try:
                file_id, head = await asyncio.to_thread(self._identify, c)
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
            if file_id in this_pass or self.ledger.has(file_id):
                # Known content (also under another name in this same pass): nothing new to say.
                self.ledger.mark_seen(c)
                result.skipped += 1
                continue
            this_pass.add(file_id)
            try:
                kind = features.detect_kind(head)
                too_large = self._too_large(c.size, kind)
                if too_large is not None:
                    raise too_large
                event = {
                    "file_id": file_id, "uri": c.uri, "kind": kind, "size_bytes": c.size,
                    "source": self.source.name, "etag": c.etag, "detected_at_ms": int(time.time() * 1000),
                }
                ack = await self.send(TOPICS["files"], file_id.encode(), schemas.encode("FileEvent", event))
                pending.append((ack, file_id, c, kind))
            except Rejected as exc:
                prefix = head[:HEX_PREFIX_BYTES].hex()
                exc = Rejected(exc.reason, f"{exc} (first bytes: {prefix})")
                record = rejected_record("watch", exc, uri=c.uri, file_id=file_id)
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
