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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka.errors import KafkaError

import schemas
from stream import kinds
from stream.errors import Rejected
from stream.features import detect as features
from stream.ingest import storage
from stream.ingest.sources import Candidate, Source
from stream.runtime.deadletters import rejected_record
from stream.runtime.metrics import FILES_DISCOVERED, FILES_PUBLISHED, FILES_REPUBLISHED, LAST_INPUT
from stream.runtime.retry import Backoff, sleep_unless_stopped
from stream.settings import TOPICS

__all__ = ["Ledger", "PollResult", "Watcher", "ledger_path"]

log = logging.getLogger(__name__)

# (topic, key, value) -> an awaitable that completes when the broker has the message
Send = Callable[[str, bytes, bytes], Awaitable[Awaitable[object]]]

HEX_PREFIX_BYTES = 16
INLINE_HASH_BYTES = 256 * 1024


class Ledger:
    """What a watcher has published, and which of it has an outcome yet.

    ``published``: every identity ever acknowledged by the broker (a restart publishes nothing twice).
    ``pending``: the message of each published file without an outcome yet, kept to publish it again
    when the broker lost it. ``resolved``: files whose prediction or dead letter has been seen.
    ``follow``: how far the results follower read; ``meta``: the cluster id those offsets belong to.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        # No fsync per commit (the watcher commits after every ack batch and every outcome batch: with
        # FULL that was a third of its CPU at 500 files/s). In WAL mode a killed process still loses
        # nothing committed; only a power cut can roll back the last commits, and then files are
        # published again (results are idempotent), never lost.
        self.db.execute("PRAGMA synchronous=NORMAL")
        # The ledger grows by a few rows per file, looked up and inserted by random keys (content hashes):
        # with SQLite's default 2 MB page cache every lookup of a large ledger went to the file, and the
        # watcher's CPU per file rose with the ledger (+25 % over a 30-minute soak). Pages are read
        # through a memory map, and up to 64 MB of them are kept decoded.
        self.db.execute("PRAGMA cache_size=-65536")
        self.db.execute("PRAGMA mmap_size=1073741824")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS seen (uri TEXT PRIMARY KEY, version TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS published (identity TEXT PRIMARY KEY, uri TEXT, outcome TEXT, at_ms INTEGER);
            CREATE TABLE IF NOT EXISTS pending (identity TEXT PRIMARY KEY, topic TEXT NOT NULL, key BLOB NOT NULL,
                value BLOB NOT NULL, sent_at_ms INTEGER NOT NULL, due INTEGER NOT NULL DEFAULT 0,
                fallback_used INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS resolved (identity TEXT PRIMARY KEY, at_ms INTEGER);
            CREATE TABLE IF NOT EXISTS follow (topic TEXT, partition INTEGER, next_offset INTEGER,
                PRIMARY KEY (topic, partition));
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
        """)
        self.db.commit()

    def unchanged(self, c: Candidate) -> bool:
        """Whether the ledger has seen this URI at this version."""
        row = self.db.execute("SELECT version FROM seen WHERE uri = ?", (c.uri,)).fetchone()
        return row is not None and row[0] == c.version

    def has(self, identity: str) -> bool:
        """Whether a file with this identity was published."""
        return self.db.execute("SELECT 1 FROM published WHERE identity = ?", (identity,)).fetchone() is not None

    def mark_seen(self, c: Candidate) -> None:
        """Record this URI's version as seen."""
        self.db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (c.uri, c.version))

    def record(self, identity: str, c: Candidate, outcome: str,
               message: tuple[str, bytes, bytes] | None = None) -> None:
        """``identity`` is acknowledged by the broker; ``message`` (topic, key, value) is kept until its
        outcome is seen, unless that outcome has been seen already (a replay of a resolved file)."""
        now = int(time.time() * 1000)
        self.db.execute("INSERT OR IGNORE INTO published VALUES (?, ?, ?, ?)", (identity, c.uri, outcome, now))
        if message is not None and not self.is_resolved(identity):
            self.db.execute("INSERT OR REPLACE INTO pending (identity, topic, key, value, sent_at_ms) "
                            "VALUES (?, ?, ?, ?, ?)", (identity, *message, now))
        self.mark_seen(c)

    def is_resolved(self, identity: str) -> bool:
        """Whether this identity's outcome (prediction or dead letter) has been seen."""
        return self.db.execute("SELECT 1 FROM resolved WHERE identity = ?", (identity,)).fetchone() is not None

    def resolve(self, identities: Iterable[str]) -> int:
        """Mark the files with these identities (message keys) resolved; how many were pending. An outcome
        may arrive before the watcher has written its ack down, so every key seen is kept."""
        now = int(time.time() * 1000)
        done = 0
        for identity in set(identities):
            done += self.db.execute("DELETE FROM pending WHERE identity = ?", (identity,)).rowcount
            self.db.execute("INSERT OR IGNORE INTO resolved VALUES (?, ?)", (identity, now))
        return done

    def unresolved(self) -> int:
        """Number of published files still waiting for an outcome."""
        return self.db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]

    def mark_all_due(self) -> int:
        """The broker lost its state: every unresolved file must be published again."""
        return self.db.execute("UPDATE pending SET due = 1").rowcount

    def mark_due_sent_before(self, before_ms: int) -> int:
        """Mark due every unresolved file last published before ``before_ms`` (ms since the epoch)."""
        return self.db.execute("UPDATE pending SET due = 1 WHERE sent_at_ms < ?", (before_ms,)).rowcount

    def due(self, fallback_before_ms: int | None = None) -> list[tuple[str, str, bytes, bytes, bool]]:
        """(identity, topic, key, value, by_fallback) of the messages to publish again: those marked due,
        and, with ``fallback_before_ms``, those unresolved since before it and not yet retried that way."""
        rows = self.db.execute("SELECT identity, topic, key, value, 0 FROM pending WHERE due = 1").fetchall()
        if fallback_before_ms is not None:
            rows += self.db.execute(
                "SELECT identity, topic, key, value, 1 FROM pending WHERE due = 0 AND fallback_used = 0 "
                "AND sent_at_ms < ?", (fallback_before_ms,)).fetchall()
        return [(i, t, k, v, bool(f)) for i, t, k, v, f in rows]

    def republished(self, identity: str, by_fallback: bool) -> None:
        """Record that a pending file was published again (by the fallback path or not)."""
        self.db.execute("UPDATE pending SET due = 0, sent_at_ms = ?, fallback_used = fallback_used + ? "
                        "WHERE identity = ?", (int(time.time() * 1000), int(by_fallback), identity))

    def follow_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read per (topic, partition) of the outcome topics."""
        return {(t, p): o for t, p, o in self.db.execute("SELECT topic, partition, next_offset FROM follow")}

    def save_follow_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Store the next offset to read per (topic, partition)."""
        self.db.executemany("INSERT OR REPLACE INTO follow VALUES (?, ?, ?)",
                            [(t, p, o) for (t, p), o in offsets.items()])

    def forget_follow_offsets(self) -> None:
        """Drop every stored outcome offset."""
        self.db.execute("DELETE FROM follow")

    def get_meta(self, key: str) -> str | None:
        """The stored value of ``key``, or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def commit(self) -> None:
        """Commit the ledger's pending changes."""
        self.db.commit()

    def close(self) -> None:
        """Close the ledger's database."""
        self.db.close()


def ledger_path(state_dir: Path, source: Source) -> Path:
    """The ledger file of ``source`` under ``state_dir`` (named by a hash of the source's name)."""
    return state_dir / f"watcher-{hashlib.sha256(source.name.encode()).hexdigest()[:16]}.sqlite"


@dataclass
class PollResult:
    """Counts of one poll: files published, rejected and skipped."""
    published: int = 0
    rejected: int = 0
    skipped: int = 0


class Watcher:
    """Publishes a FileEvent (or a dead letter) for every new file of ``source``; see the module doc."""

    def __init__(self, source: Source, send: Send, ledger: Ledger, batch: int = 500,
                 max_bytes: Mapping[str, int] | None = None, republish_after: float = 0.0) -> None:
        self.source = source
        self.republish_after = republish_after
        self.send = send
        self.ledger = ledger
        self.batch = batch
        # Size limits per kind (bytes): the kinds' defaults unless given (cmd_watch passes the Settings').
        self.max_bytes = dict({k.name: k.max_bytes for k in kinds.KINDS} if max_bytes is None else max_bytes)
        FILES_DISCOVERED.labels(source=source.name)  # at 0 from the start, for rate()

    def _identify(self, c: Candidate) -> tuple[str, bytes]:
        """(file_id, head bytes). Local files are hashed whole (in chunks when large); S3 objects are
        named by URI+ETag."""
        if c.etag is not None:
            identity = hashlib.sha256(f"{c.uri}\n{c.etag}".encode()).hexdigest()
            return identity, storage.read_head(c.uri, features.HEAD_BYTES)
        if c.size <= INLINE_HASH_BYTES:
            data = storage.read_bytes(c.uri)
            return hashlib.sha256(data).hexdigest(), data[: features.HEAD_BYTES]
        return storage.sha256_hex(c.uri), storage.read_head(c.uri, features.HEAD_BYTES)

    def _too_large(self, size: int, kind: str | None) -> Rejected | None:
        limit = self.max_bytes.get(kind, 0) if kind else max(self.max_bytes.values(), default=0)
        if limit and size > limit:
            what = f"a {kind}" if kind else "any input"
            return Rejected("too-large", f"{size} bytes is more than the limit for {what} ({limit} bytes)")
        return None

    async def poll(self) -> PollResult:
        """One pass: publish again what the broker lost, then what is new, in batches acknowledged by the
        broker. A broker error (down, restarting) ends the pass after writing down what was acknowledged."""
        result = PollResult()
        pending: list[tuple[Awaitable[object], str, Candidate, str, tuple[str, bytes, bytes]]] = []
        try:
            await self.republish_due()
            await self._publish_new(pending, result)
        finally:
            await self._settle(pending, result)
        return result

    async def _publish_new(self, pending: list, result: PollResult) -> None:
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
                await self._send(pending, identity, c, "rejected",
                                 (TOPICS["rejected"], identity.encode(), schemas.encode("Rejected", record)))
                continue
            try:
                # A small local file is read and hashed at once (microseconds); anything larger is
                # hashed in chunks in a thread, so the event loop never waits on it.
                small = c.etag is None and c.size <= INLINE_HASH_BYTES
                file_id, head = self._identify(c) if small else await asyncio.to_thread(self._identify, c)
            except ConnectionError as exc:  # storage unreachable (after retries): try again next poll
                log.warning("cannot read %s now (%s); will retry", c.uri, exc)
                continue
            except Rejected as exc:
                # The file vanished or cannot be read: say so once, do not record it (it may come back).
                record = rejected_record("watch", exc, uri=c.uri)
                await self.send(TOPICS["rejected"], c.uri.encode(), schemas.encode("Rejected", record))
                self.ledger.mark_seen(c)  # retried when the file changes, not on every poll
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
                message = (TOPICS["files"], file_id.encode(), schemas.encode("FileEvent", event))
                await self._send(pending, file_id, c, kind, message)
            except Rejected as exc:
                prefix = head[:HEX_PREFIX_BYTES].hex()
                exc = Rejected(exc.reason, f"{exc} (first bytes: {prefix})")
                record = rejected_record("watch", exc, uri=c.uri, file_id=file_id)
                await self._send(pending, file_id, c, "rejected",
                                 (TOPICS["rejected"], file_id.encode(), schemas.encode("Rejected", record)))
            if len(pending) >= self.batch:
                await self._settle(pending, result)

    async def _send(self, pending: list, identity: str, c: Candidate, outcome: str,
                    message: tuple[str, bytes, bytes]) -> None:
        ack = await self.send(*message)
        pending.append((ack, identity, c, outcome, message))

    async def republish_due(self) -> int:
        """Publish again the unresolved files the broker lost (marked due by the results follower) and,
        after ``republish_after`` seconds without an outcome, once more any other; how many."""
        before = None
        if self.republish_after > 0:
            before = int((time.time() - self.republish_after) * 1000)
        rows = self.ledger.due(before)
        if not rows:
            return 0
        log.warning("publishing %d unresolved files again", len(rows))
        for start in range(0, len(rows), self.batch):
            chunk = rows[start:start + self.batch]
            acks = [await self.send(topic, key, value) for _identity, topic, key, value, _fb in chunk]
            await asyncio.gather(*acks)
            for identity, _topic, _key, _value, by_fallback in chunk:
                self.ledger.republished(identity, by_fallback)
            self.ledger.commit()
        FILES_REPUBLISHED.labels(source=self.source.name).inc(len(rows))
        return len(rows)

    async def _settle(self, pending: list, result: PollResult) -> None:
        """Wait for the broker's acks, then write the ledger: nothing is marked done before it is safe.
        Messages the broker did not acknowledge are left out, so the next pass sends them again."""
        if not pending:
            return
        acks = await asyncio.gather(*(ack for ack, *_ in pending), return_exceptions=True)
        now = time.time()
        failed: BaseException | None = None
        for ack, (_ack, file_id, c, outcome, message) in zip(acks, pending, strict=True):
            if isinstance(ack, BaseException):
                failed = ack
                continue
            self.ledger.record(file_id, c, outcome, message)
            if outcome == "rejected":
                result.rejected += 1
            else:
                result.published += 1
                FILES_PUBLISHED.labels(source=self.source.name, kind=outcome).inc()
                LAST_INPUT.labels(source=self.source.name).set(now)
        self.ledger.commit()
        pending.clear()
        if failed is not None:
            raise failed

    async def run(
        self, interval: float, stop: asyncio.Event, on_poll: Callable[[PollResult], None] | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        """Poll every ``interval`` seconds until ``stop``; a broker outage of any length only delays it
        (backing off up to ``max_backoff`` seconds), it never ends it."""
        backoff = Backoff(max(interval, 0.1), max(interval, 0.1, max_backoff))
        while not stop.is_set():
            try:
                res = await self.poll()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("broker unavailable (%s: %s); retrying in %.0f s", type(exc).__name__, exc, backoff.delay)
                await backoff.wait(stop)
                continue
            backoff.reset()
            if on_poll:
                on_poll(res)
            await sleep_unless_stopped(interval, stop)
