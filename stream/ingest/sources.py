"""Where the watcher finds files: a directory tree (here) or an S3 prefix (stream/ingest/s3.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    """A complete file a source offers. ``version`` changes whenever the content may have changed
    (size+mtime for a file, ETag for an object) so the watcher re-checks it."""

    uri: str
    size: int
    version: str
    etag: str | None = None


class Source(Protocol):
    name: str

    def scan(self) -> Iterator[Candidate]:
        """Every complete file currently there (the watcher skips what its ledger already has)."""
        ...


class DirectorySource:
    """A directory tree. A file counts as complete once its size and mtime have not changed for
    ``settle_seconds`` (a writer still appending changes them); hidden and temporary files
    (``.name``, ``*.tmp``, ``*.part``) are never offered."""

    def __init__(self, root: str | os.PathLike[str], settle_seconds: float = 1.0) -> None:
        self.root = Path(root).resolve()
        self.name = str(self.root)
        self.settle_seconds = settle_seconds
        self._seen: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen stable)

    def scan(self) -> Iterator[Candidate]:
        now = time.monotonic()
        current: dict[str, tuple[int, int, float]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith(".") or fname.endswith((".tmp", ".part", ".partial", ".crdownload")):
                    continue
                path = os.path.join(dirpath, fname)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                key = (st.st_size, st.st_mtime_ns)
                prev = self._seen.get(path)
                since = prev[2] if prev and prev[:2] == key else now
                current[path] = (*key, since)
                # Old files (mtime well in the past) are complete already: no need to wait a poll.
                settled = now - since >= self.settle_seconds or time.time() - st.st_mtime >= self.settle_seconds
                if settled:
                    yield Candidate(uri=path, size=st.st_size, version=f"{st.st_size}:{st.st_mtime_ns}")
        self._seen = current
