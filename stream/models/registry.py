"""Model registry: immutable ONNX model versions per task, with metadata and a champion alias.

Layout (the same under a local directory or an ``s3://bucket/prefix``)::

    <root>/<task>/<version>/model.onnx
    <root>/<task>/<version>/metadata.json    # includes "sha256" of model.onnx (and "hmac_sha256" when signed)
    <root>/<task>/champion.json              # {"version": "2", "history": ["1", "2"]}

Versions are positive integers as strings ("1", "2", ...), never rewritten once published.
The repository ships a baseline registry under ``stream/bundled/registry``; a local registry that
does not yet hold a task is seeded from it, so the stream runs on a fresh clone without training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stream.errors import Rejected
from stream.models import signing
from stream.settings import Settings

__all__ = [
    "BUNDLED",
    "LocalRegistry",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "S3Registry",
    "open_registry",
    "sha256_hex",
]

BUNDLED = Path(__file__).parents[1] / "bundled" / "registry"
log = logging.getLogger(__name__)


class RegistryError(Exception):
    """The registry does not hold what was asked, or refuses a change."""


@dataclass(frozen=True)
class ModelVersion:
    """One model version: its ONNX bytes and metadata."""
    task: str
    version: str
    onnx: bytes
    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        """The model's name from its metadata (the task when unnamed)."""
        return str(self.metadata.get("name", self.task))


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _next_history(history: list[str], version: str) -> list[str]:
    return [v for v in history if v != version] + [version]


def _created_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _RegistryBase:
    """What both registries read and decide the same way, over four storage primitives:
    ``_read_json`` (a JSON document under the task, or None), ``_read_model``, ``versions``
    and ``_update_champion`` (apply a change to the champion history, atomically)."""

    uri: str

    def _seed(self, task: str) -> None:
        raise NotImplementedError

    def _read_json(self, task: str, *parts: str) -> Any | None:
        raise NotImplementedError

    def _read_model(self, task: str, version: str) -> bytes:
        raise NotImplementedError

    def versions(self, task: str) -> list[str]:
        """Versions of ``task``, oldest first."""
        raise NotImplementedError

    def _update_champion(self, task: str, change: Callable[[list[str]], list[str]]) -> str:
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------
    def history(self, task: str) -> list[str]:
        """Champions in the order they were promoted (the last is the champion)."""
        self._seed(task)
        found = self._read_json(task, "champion.json")
        return list(found["history"]) if found else []

    def champion(self, task: str) -> str:
        """The champion version of ``task`` (the newest version when none was promoted)."""
        self._seed(task)
        found = self._read_json(task, "champion.json")
        if found:
            return str(found["version"])
        versions = self.versions(task)
        if not versions:
            raise RegistryError(f"no model for task {task!r} in registry {self.uri}")
        return versions[-1]

    def metadata(self, task: str, version: str | None = None) -> dict[str, Any]:
        """Metadata of a version of ``task`` (default the champion)."""
        self._seed(task)  # a named version of a fresh registry is one of the bundled ones
        version = version or self.champion(task)
        found = self._read_json(task, version, "metadata.json")
        if found is None:
            raise RegistryError(f"{task} version {version} is not in registry {self.uri}")
        return found

    def load(self, task: str, version: str | None = None) -> ModelVersion:
        """Load a version (default: the champion) and verify its checksum."""
        version = version or self.champion(task)
        meta = self.metadata(task, version)
        onnx = self._read_model(task, version)
        if sha256_hex(onnx) != meta.get("sha256"):
            raise Rejected("checksum-mismatch", f"{task} v{version}: model.onnx does not match its sha256")
        return ModelVersion(task, version, onnx, meta)

    # -- champion --------------------------------------------------------------------------
    def promote(self, task: str, version: str) -> None:
        """Make ``version`` the champion of ``task``."""
        if version not in self.versions(task):
            raise RegistryError(f"{task} has no version {version}; versions: {self.versions(task)}")
        self._update_champion(task, lambda history: _next_history(history, version))

    def rollback(self, task: str) -> str:
        """Make the previous champion the champion again; return it."""

        def back(history: list[str]) -> list[str]:
            """The history without its last champion."""
            if len(history) < 2:
                raise RegistryError(f"{task}: no earlier champion to roll back to")
            return history[:-1]

        return self._update_champion(task, back)

    @staticmethod
    def _new_metadata(task: str, version: str, onnx: bytes, metadata: dict[str, Any]) -> bytes:
        meta = dict(metadata, task=task, version=version, sha256=sha256_hex(onnx))
        # A signature copied from another version's metadata never carries over: sign anew, or not at all.
        meta.pop(signing.METADATA_FIELD, None)
        key = Settings().model_signing_key
        if key:
            meta[signing.METADATA_FIELD] = signing.sign(onnx, key)
        meta.setdefault("created", _created_now())
        return json.dumps(meta, indent=1, sort_keys=True).encode()


class LocalRegistry(_RegistryBase):
    """A registry in a directory. Writes are atomic (temp dir + rename), so readers never see half a version."""

    def __init__(self, root: str | os.PathLike[str], seed_from: Path | None = BUNDLED) -> None:
        self.root = Path(str(root).removeprefix("file://"))
        self.uri = str(self.root)
        self._seed_from = seed_from

    def tasks(self) -> list[str]:
        """Tasks with a directory in the registry or its seed."""
        roots = [self.root] + ([self._seed_from] if self._seed_from else [])
        found = {p.name for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir()}
        return sorted(found)

    def versions(self, task: str) -> list[str]:
        """Versions of ``task`` (numeric directories), oldest first."""
        self._seed(task)
        d = self.root / task
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int)

    def _read_json(self, task: str, *parts: str) -> Any | None:
        path = self.root.joinpath(task, *parts)
        return json.loads(path.read_text()) if path.exists() else None

    def _read_model(self, task: str, version: str) -> bytes:
        return (self.root / task / version / "model.onnx").read_bytes()

    def publish(self, task: str, onnx: bytes, metadata: dict[str, Any], promote: bool = True) -> str:
        """Store a new immutable version; return its version string."""
        self._seed(task)
        task_dir = self.root / task
        task_dir.mkdir(parents=True, exist_ok=True)
        versions = self.versions(task)
        version = str(int(versions[-1]) + 1 if versions else 1)
        tmp = Path(tempfile.mkdtemp(dir=task_dir, prefix=".publishing-"))
        tmp.chmod(0o755)  # mkdtemp makes it 0700: workers running as another user must read versions
        (tmp / "model.onnx").write_bytes(onnx)
        (tmp / "metadata.json").write_bytes(self._new_metadata(task, version, onnx, metadata))
        try:
            tmp.rename(task_dir / version)  # atomic; fails if a concurrent publisher took the number
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RegistryError(f"could not publish {task} v{version}: {exc}") from exc
        if promote:
            self.promote(task, version)
        return version

    def _update_champion(self, task: str, change: Callable[[list[str]], list[str]]) -> str:
        found = self._read_json(task, "champion.json")
        history = change(list(found["history"]) if found else [])
        path = self.root / task / "champion.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": history[-1], "history": history}, indent=1))
        tmp.replace(path)  # atomic: readers see the old or the new champion, never half of one
        return history[-1]

    def _seed(self, task: str) -> None:
        """Copy the bundled baseline of a task into an empty local registry."""
        if self._seed_from is None or (self.root / task).exists() or self.root == self._seed_from:
            return
        src = self._seed_from / task
        if src.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".seeding-"))
            shutil.copytree(src, tmp / task)
            try:
                (tmp / task).rename(self.root / task)
            except OSError:
                pass  # another process seeded it first
            shutil.rmtree(tmp, ignore_errors=True)


class Registry(Protocol):
    """What every registry offers (LocalRegistry, S3Registry)."""

    uri: str

    def tasks(self) -> list[str]:
        """Return every task in the registry, sorted."""

    def versions(self, task: str) -> list[str]:
        """Return the versions of ``task``, oldest first."""

    def champion(self, task: str) -> str:
        """Return the version of ``task`` that serves."""

    def history(self, task: str) -> list[str]:
        """Return the champions of ``task`` in the order they were promoted."""

    def metadata(self, task: str, version: str | None = None) -> dict[str, Any]:
        """Return the metadata of a version of ``task`` (default the champion)."""

    def load(self, task: str, version: str | None = None) -> ModelVersion:
        """Return a version of ``task`` (default the champion) with its ONNX bytes."""

    def publish(self, task: str, onnx: bytes, metadata: dict[str, Any], promote: bool = True) -> str:
        """Store a new version of ``task``, promote it unless told not to, and return its version."""

    def promote(self, task: str, version: str) -> None:
        """Make ``version`` the champion of ``task``."""

    def rollback(self, task: str) -> str:
        """Make the previous champion of ``task`` the champion again; return it."""


class S3Registry(_RegistryBase):
    """A registry under ``s3://bucket/prefix``, in LocalRegistry's layout.

    S3 has no rename, so immutability rests on S3 conditional writes: a version's ``model.onnx`` is
    created with ``If-None-Match: *`` (a second publisher that picked the same number is refused and
    takes the next one; nothing is ever overwritten), then its ``metadata.json``, which marks the
    version complete: readers list only versions that have one. A publisher that died between the
    two leaves a number that is skipped, never reused. ``champion.json`` is replaced with
    ``If-Match`` on the ETag it was read with, so concurrent promotions do not lose history.
    """

    def __init__(self, uri: str, seed_from: Path | None = BUNDLED, *, unsigned: bool | None = None,
                 s3: Any = None) -> None:
        from stream.ingest import s3 as s3mod

        self._s3mod = s3mod
        self.bucket, prefix = s3mod.parse_uri(uri.rstrip("/"))
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._s3 = s3 or s3mod.client(unsigned=unsigned)
        self._seed_from = seed_from
        self._seeded: set[str] = set()

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self._key(*parts)}"

    def _read_json_with_etag(self, *parts: str) -> tuple[Any, str] | None:
        found = self._s3mod.read_with_etag(self._uri(*parts), s3=self._s3)
        return None if found is None else (json.loads(found[0]), found[1])

    def _read_json(self, task: str, *parts: str) -> Any | None:
        found = self._read_json_with_etag(task, *parts)
        return None if found is None else found[0]

    def _read_model(self, task: str, version: str) -> bytes:
        try:
            return self._s3mod.read_bytes(self._uri(task, version, "model.onnx"), s3=self._s3)
        except Rejected as exc:
            if exc.reason == "missing-object":
                raise RegistryError(f"{task} v{version}: model.onnx is missing from {self.uri}") from None
            raise

    def _listing(self, task: str) -> tuple[list[str], int]:
        """(complete versions in order, highest version number taken by any object)."""
        complete: set[int] = set()
        taken = 0
        base = self._key(task) + "/"
        for page in self._s3mod.iter_pages(self._s3, self.bucket, base):
            for obj in page.get("Contents", []):
                number, _, rest = obj["Key"][len(base):].partition("/")
                if number.isdigit() and rest:
                    taken = max(taken, int(number))
                    if rest == "metadata.json":
                        complete.add(int(number))
        return [str(v) for v in sorted(complete)], taken

    def tasks(self) -> list[str]:
        """Tasks with a prefix in the bucket or a directory in the seed."""
        base = self._key() + "/" if self.prefix else ""
        found: set[str] = set()
        for page in self._s3mod.iter_pages(self._s3, self.bucket, base, delimiter="/"):
            found.update(p["Prefix"][len(base):].strip("/") for p in page.get("CommonPrefixes", []))
        if self._seed_from is not None and self._seed_from.is_dir():
            found.update(p.name for p in self._seed_from.iterdir() if p.is_dir())
        return sorted(found)

    def versions(self, task: str) -> list[str]:
        """Versions of ``task`` in the bucket, oldest first."""
        self._seed(task)
        return self._listing(task)[0]

    def publish(self, task: str, onnx: bytes, metadata: dict[str, Any], promote: bool = True) -> str:
        """Store a new immutable version; return its version string."""
        self._seed(task)
        number = self._listing(task)[1] + 1
        for _attempt in range(20):
            try:
                self._put(self._uri(task, str(number), "model.onnx"), onnx, create_only=True)
                break
            except self._s3mod.S3Conflict:
                number += 1  # another publisher holds this number: never overwrite it
        else:
            raise RegistryError(f"could not find a free version number for {task} in {self.uri}")
        version = str(number)
        self._put(self._uri(task, version, "metadata.json"), self._new_metadata(task, version, onnx, metadata),
                  create_only=True, content_type="application/json")
        if promote:
            self.promote(task, version)
        return version

    def _update_champion(self, task: str, change: Callable[[list[str]], list[str]]) -> str:
        uri = self._uri(task, "champion.json")
        for _attempt in range(10):
            found = self._read_json_with_etag(task, "champion.json")
            history = change(list(found[0]["history"]) if found else [])
            body = json.dumps({"version": history[-1], "history": history}, indent=1).encode()
            try:
                if found is None:
                    self._put(uri, body, create_only=True, content_type="application/json")
                else:
                    self._put(uri, body, if_match=found[1], content_type="application/json")
                return history[-1]
            except self._s3mod.S3Conflict:
                time.sleep(0.05 * (_attempt + 1))  # someone else changed the champion: re-read, re-apply
        raise RegistryError(f"{task}: champion.json kept changing under us in {self.uri}")

    def _put(self, uri: str, data: bytes, **kwargs: Any) -> None:
        try:
            self._s3mod.put_bytes(uri, data, s3=self._s3, **kwargs)
        except Rejected as exc:  # refused or missing bucket: a registry problem, not an input's
            raise RegistryError(f"cannot write {uri}: {exc}") from None

    def _seed(self, task: str) -> None:
        """Upload the bundled baseline of a task into a registry that does not hold the task yet."""
        if self._seed_from is None or task in self._seeded:
            return
        self._seeded.add(task)
        src = self._seed_from / task
        if not src.is_dir() or self._listing(task)[1] > 0:
            return
        try:
            for path in sorted(src.rglob("*")):
                if path.is_file() and path.name != "champion.json":
                    rel = path.relative_to(src).as_posix()
                    self._s3mod.put_bytes(self._uri(task, rel), path.read_bytes(), s3=self._s3, create_only=True)
            if (src / "champion.json").exists():
                self._s3mod.put_bytes(self._uri(task, "champion.json"), (src / "champion.json").read_bytes(),
                                      s3=self._s3, create_only=True)
        except self._s3mod.S3Conflict:
            pass  # another process seeded it first
        except Rejected as exc:  # e.g. a read-only (public) registry: serve what is there
            log.warning("could not seed %s into %s: %s", task, self.uri, exc)


def open_registry(uri: str) -> LocalRegistry | S3Registry:
    """The registry at a URI: a directory path (or file://), or s3://bucket/prefix."""
    if uri.startswith("s3://"):
        return S3Registry(uri)
    return LocalRegistry(uri)
