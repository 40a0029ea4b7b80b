"""Model registry: immutable ONNX model versions per task, with metadata and a champion alias.

Layout (the same under a local directory or, later, an ``s3://bucket/prefix``)::

    <root>/<task>/<version>/model.onnx
    <root>/<task>/<version>/metadata.json    # includes "sha256" of model.onnx
    <root>/<task>/champion.json              # {"version": "2", "history": ["1", "2"]}

Versions are positive integers as strings ("1", "2", ...), never rewritten once published.
The repository ships a baseline registry under ``stream/bundled/registry``; a local registry that
does not yet hold a task is seeded from it, so the stream runs on a fresh clone without training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.errors import Rejected

BUNDLED = Path(__file__).parent / "bundled" / "registry"


class RegistryError(Exception):
    """The registry does not hold what was asked, or refuses a change."""


@dataclass(frozen=True)
class ModelVersion:
    task: str
    version: str
    onnx: bytes
    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.task))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalRegistry:
    """A registry in a directory. Writes are atomic (temp dir + rename), so readers never see half a version."""

    def __init__(self, root: str | os.PathLike[str], seed_from: Path | None = BUNDLED) -> None:
        self.root = Path(str(root).removeprefix("file://"))
        self.uri = str(self.root)
        self._seed_from = seed_from

    # -- reading ---------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        roots = [self.root] + ([self._seed_from] if self._seed_from else [])
        found = {p.name for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir()}
        return sorted(found)

    def versions(self, task: str) -> list[str]:
        self._seed(task)
        d = self.root / task
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int)

    def champion(self, task: str) -> str:
        self._seed(task)
        path = self.root / task / "champion.json"
        if path.exists():
            return json.loads(path.read_text())["version"]
        versions = self.versions(task)
        if not versions:
            raise RegistryError(f"no model for task {task!r} in registry {self.uri}")
        return versions[-1]

    def metadata(self, task: str, version: str | None = None) -> dict[str, Any]:
        version = version or self.champion(task)
        path = self.root / task / version / "metadata.json"
        if not path.exists():
            raise RegistryError(f"{task} version {version} is not in registry {self.uri}")
        return json.loads(path.read_text())

    def load(self, task: str, version: str | None = None) -> ModelVersion:
        """Load a version (default: the champion) and verify its checksum."""
        version = version or self.champion(task)
        meta = self.metadata(task, version)
        onnx = (self.root / task / version / "model.onnx").read_bytes()
        if sha256_hex(onnx) != meta.get("sha256"):
            raise Rejected("checksum-mismatch", f"{task} v{version}: model.onnx does not match its sha256")
        return ModelVersion(task, version, onnx, meta)

    # -- writing ---------------------------------------------------------------------------
    def publish(self, task: str, onnx: bytes, metadata: dict[str, Any], promote: bool = True) -> str:
        """Store a new immutable version; return its version string."""
        self._seed(task)
        task_dir = self.root / task
        task_dir.mkdir(parents=True, exist_ok=True)
        versions = self.versions(task)
        version = str(int(versions[-1]) + 1 if versions else 1)
        meta = dict(metadata, task=task, version=version, sha256=sha256_hex(onnx))
        meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        tmp = Path(tempfile.mkdtemp(dir=task_dir, prefix=".publishing-"))
        (tmp / "model.onnx").write_bytes(onnx)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            tmp.rename(task_dir / version)  # atomic; fails if a concurrent publisher took the number
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RegistryError(f"could not publish {task} v{version}: {exc}") from exc
        if promote:
            self.promote(task, version)
        return version

    def promote(self, task: str, version: str) -> None:
        if version not in self.versions(task):
            raise RegistryError(f"{task} has no version {version}; versions: {self.versions(task)}")
        path = self.root / task / "champion.json"
        history = json.loads(path.read_text())["history"] if path.exists() else []
        history = [v for v in history if v != version] + [version]
        self._write_json(path, {"version": version, "history": history})

    def rollback(self, task: str) -> str:
        """Make the previous champion the champion again; return it."""
        path = self.root / task / "champion.json"
        history = json.loads(path.read_text())["history"] if path.exists() else []
        if len(history) < 2:
            raise RegistryError(f"{task}: no earlier champion to roll back to")
        self._write_json(path, {"version": history[-2], "history": history[:-1]})
        return history[-2]

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=1))
        tmp.replace(path)

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


def open_registry(uri: str) -> LocalRegistry:
    """The registry at a URI: a directory path (or file://). S3 comes with the model-lifecycle work."""
    if uri.startswith("s3://"):
        raise RegistryError("s3:// registries are not implemented yet; use a directory")
    return LocalRegistry(uri)
