"""Which URIs a worker may read: only those under the configured sources (``SKYSTREAM_SOURCES``).

A file event is a claim check, and anyone who can write to the files topic can forge one: without
this check a worker would read any path or S3 object it has access to. Local paths are compared after
``os.path.realpath`` (so ``..`` segments and symbolic links cannot lead out of an allowed directory);
S3 keys must start with an allowed ``bucket/prefix/`` and may not hold ``.``/``..`` segments (some
endpoints and proxies normalise them away).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from stream.errors import Rejected
from stream.settings import Settings

__all__ = ["Roots", "check_uri", "configured_roots"]


@dataclass(frozen=True)
class Roots:
    """Allowed roots: resolved local directories and (bucket, key prefix) pairs."""

    directories: tuple[str, ...] = ()
    buckets: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> Roots:
        """Roots from a comma-separated list of directories and ``s3://bucket/prefix`` URIs."""
        dirs: list[str] = []
        buckets: list[tuple[str, str]] = []
        for item in (spec or "").split(","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("s3://"):
                bucket, _, prefix = item.removeprefix("s3://").partition("/")
                prefix = prefix.strip("/")
                buckets.append((bucket, prefix + "/" if prefix else ""))
            else:
                dirs.append(os.path.realpath(os.path.expanduser(item.removeprefix("file://"))))
        return cls(tuple(dirs), tuple(buckets))

    def __bool__(self) -> bool:
        return bool(self.directories or self.buckets)

    def allows(self, uri: str) -> bool:
        """True when ``uri`` lies under one of the roots."""
        return self.root_of(uri) is not None

    def root_of(self, uri: str) -> str | None:
        """The root ``uri`` lies under (a directory, or ``s3://bucket/prefix``), None when outside all."""
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            if not key or any(part in (".", "..") for part in key.split("/")):
                return None
            for b, prefix in self.buckets:
                if bucket == b and key.startswith(prefix):
                    return f"s3://{b}/{prefix}".rstrip("/")
            return None
        if "://" in uri and not uri.startswith("file://"):
            return None
        path = uri.removeprefix("file://")
        if not os.path.isabs(path):
            return None
        target = os.path.realpath(path)
        for root in self.directories:
            if target == root or target.startswith(root.rstrip(os.sep) + os.sep):
                return root
        return None


def configured_roots(settings: Settings | None = None) -> Roots:
    """The roots of ``SKYSTREAM_SOURCES``, else of ``SKYSTREAM_WATCH_SOURCE``; none when neither is set."""
    settings = settings or Settings()
    return Roots.parse(settings.sources or settings.watch_source)


def check_uri(uri: str, roots: Roots | None = None) -> None:
    """Raise Rejected('outside-sources') unless ``uri`` lies under the allowed roots (default: the settings')."""
    roots = roots if roots is not None else configured_roots()
    if not roots.allows(uri):
        hint = "" if roots else " (no sources configured: set SKYSTREAM_SOURCES)"
        raise Rejected("outside-sources", f"{uri} is not under the configured sources{hint}")
