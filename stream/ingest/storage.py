"""Reading input files by URI. Claim check: messages carry URIs, workers read the bytes here.

A URI is a local path (or ``file://`` path) or ``s3://bucket/key``. S3 reads go through
stream/ingest/s3.py (imported only when an s3:// URI comes along: boto3 costs 0.3 s to import); besides
Rejected they may raise ``stream.s3.S3Unavailable`` when S3 cannot be reached after retries, which
is not the input's fault.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from stream.errors import Rejected

__all__ = ["local_path", "read_bytes", "read_head", "sha256_hex"]


def local_path(uri: str) -> Path:
    """The local path of a ``file://`` URI (a plain path as is)."""
    return Path(uri.removeprefix("file://"))


def read_bytes(uri: str, limit: int | None = None) -> bytes:
    """The file's content (its first ``limit`` bytes when given). A missing file is Rejected."""
    if uri.startswith("s3://"):
        from stream.ingest import s3

        return s3.read_bytes(uri) if limit is None else s3.read_head(uri, limit)
    with _open_local(uri) as fh:
        return fh.read() if limit is None else fh.read(limit)


def sha256_hex(uri: str) -> str:
    """The sha256 of a local file's content, read in chunks (memory stays small for any size)."""
    with _open_local(uri) as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextmanager
def _open_local(uri: str) -> Iterator[BinaryIO]:
    """The local file opened for reading; the usual failures become Rejected with a stable reason."""
    try:
        fh = open(local_path(uri), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise Rejected("missing-file", f"file not found: {uri}") from None
    except IsADirectoryError:
        raise Rejected("not-a-file", f"is a directory: {uri}") from None
    except PermissionError:
        raise Rejected("unreadable", f"permission denied: {uri}") from None
    with fh:
        yield fh


def read_head(uri: str, n: int) -> bytes:
    """The first ``n`` bytes (for sniffing a file's kind): a ranged GET on S3, a short read locally."""
    return read_bytes(uri, limit=max(n, 0))
