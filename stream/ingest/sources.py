"""Where the watcher finds files: a directory tree (here) or an S3 prefix (stream/ingest/s3.py).

The directory source never leads out of its root: a symbolic link whose target lies outside the
root is offered only to be refused (a dead letter with reason ``outside-root``; its target is never
opened), and so are files nested deeper than ``max_depth`` (``too-deep``) and names that are not
valid UTF-8 (``bad-name``: they could not travel in a message).
"""

from __future__ import annotations

import os
import stat
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
    # (reason, message) when the source offers the file only so that it is dead-lettered, unread.
    refused: tuple[str, str] | None = None


__all__ = ["Candidate", "DirectorySource", "Source"]

MAX_DEPTH = 32
_TEMPORARY = (".tmp", ".part", ".partial", ".crdownload")


class Source(Protocol):
    """Where a watcher finds files: a directory or an S3 prefix."""
    name: str

    def scan(self) -> Iterator[Candidate]:
        """Every complete file currently there (the watcher skips what its ledger already has)."""
        ...


class DirectorySource:
    """A directory tree. A file counts as complete once its size and mtime have not changed for
    ``settle_seconds`` (a writer still appending changes them); hidden and temporary files
    (``.name``, ``*.tmp``, ``*.part``) are never offered."""

    def __init__(self, root: str | os.PathLike[str], settle_seconds: float = 1.0, max_depth: int = MAX_DEPTH) -> None:
        self.root = Path(root).resolve()
        self.name = str(self.root)
        self.settle_seconds = settle_seconds
        self.max_depth = max_depth
        self._seen: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen stable)

    def scan(self) -> Iterator[Candidate]:
        """Every settled file under the root, in a stable order; refused ones flagged (see the module doc)."""
        now = time.monotonic()
        current: dict[str, tuple[int, int, float]] = {}
        for path, entry in self._walk():
            name_ok = _utf8(path)
            try:
                st = entry.stat(follow_symlinks=False)
                if entry.is_symlink():
                    if not self._inside(path):
                        yield _refused(path, st, "outside-root",
                                       "a symbolic link that leads out of the watched directory")
                        continue
                    st = os.stat(path)  # a link inside the root: the target's size and mtime
                    if stat.S_ISDIR(st.st_mode):
                        continue  # linked directories are not entered (their files are reached directly)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not name_ok:
                yield _refused(path, st, "bad-name", "the file name is not valid UTF-8")
                continue
            if stat.S_ISDIR(st.st_mode):  # only a directory below max_depth is offered: refused, not entered
                yield _refused(path, st, "too-deep", f"a directory nested deeper than {self.max_depth} levels")
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

    def _walk(self) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(path, entry) of every visible regular file or link, iteratively (no recursion limit on
        deep trees). Directories are entered only when they are real directories, never through links,
        and only to ``max_depth`` levels; a directory below that is offered itself, to be refused."""
        stack: list[tuple[str, int]] = [(str(self.root), 0)]
        while stack:
            directory, depth = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            subdirs = []
            for e in entries:
                if e.name.startswith(".") or e.name.endswith(_TEMPORARY):
                    continue
                if e.is_dir(follow_symlinks=False):
                    if depth + 1 <= self.max_depth:
                        subdirs.append((e.path, depth + 1))
                    else:
                        yield e.path, e
                elif e.is_file(follow_symlinks=False) or e.is_symlink():
                    yield e.path, e
            stack.extend(reversed(subdirs))

    def _inside(self, path: str) -> bool:
        target = Path(os.path.realpath(path))
        return target == self.root or self.root in target.parents


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _refused(path: str, st: os.stat_result, reason: str, message: str) -> Candidate:
    uri = os.fsencode(path).decode("utf-8", "backslashreplace")
    return Candidate(uri=uri, size=st.st_size, version=f"refused:{st.st_size}:{st.st_mtime_ns}",
                     refused=(reason, message))
