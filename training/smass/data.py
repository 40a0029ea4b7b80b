"""The SMASSII data set: spectra read through the stream's own preprocessing, their labels, subsets and splits."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.features import spectra
from stream.settings import shared_data
from training.smass.labels import BUS_CLASS_NAMES, BUS_TO_GROUP, GROUP_NAMES, parse_taxonomy

ORIGIN = "http://smass.mit.edu/smass.html (Bus & Binzel 2002, Icarus 158, 146): smass2data.tar.gz, Bus.Taxonomy.txt"


DEFAULT_DATA = shared_data() / "smass2"


@dataclass
class SmassData:
    """The SMASS spectra as training inputs: features, Bus and group labels, quality and file hashes."""
    objects: list[str]
    files: list[str]
    spectra: list[spectra.Spectrum]
    features: np.ndarray  # (n, grid) float32, from stream.spectra.resample
    quality: list[dict]  # SpectrumFeatures.quality of each spectrum
    bus: np.ndarray  # index into BUS_CLASS_NAMES
    group: np.ndarray  # index into GROUP_NAMES
    sha256: dict[str, str]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> objects

    @property
    def bus_names(self) -> list[str]:
        """The Bus class name of each spectrum."""
        return [BUS_CLASS_NAMES[i] for i in self.bus]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def iter_tar_spectra(tar_path: Path, smoothed: bool = False):
    """(member name, bytes) of the raw spectra (or, with ``smoothed``, the .spfit fits) in the tarball."""
    with tarfile.open(tar_path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            base = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not base.endswith(".[2]") or (".spfit" in base) != smoothed:
                continue
            yield base, tar.extractfile(member).read()


def load_smass(data_dir: Path = DEFAULT_DATA, smoothed: bool = False, limit: int | None = None,
               classes: Mapping[str, str] | None = None) -> SmassData:
    """Every labelled SMASSII spectrum through stream.features.spectra, with its Bus class and main group.

    ``limit`` keeps a class-stratified subset (for quick runs). ``smoothed`` reads the .spfit files.
    ``classes`` (object -> Bus class, e.g. training.feedback.merge_smass(...).data) replaces the
    taxonomy's classes: objects it does not list count as unlabelled.
    """
    tar_path, tax_path = data_dir / "smass2data.tar.gz", data_dir / "Bus.Taxonomy.txt"
    taxonomy = parse_taxonomy(tax_path.read_text(encoding="latin-1"))
    data = SmassData([], [], [], np.empty(0), [], np.empty(0), np.empty(0), {})
    rows = []
    for base, raw in iter_tar_spectra(tar_path, smoothed):
        obj = spectra.object_name(base)
        entry = taxonomy.get(obj)
        bus = classes.get(obj, "") if classes is not None else entry.bus if entry is not None else ""
        if not bus:
            data.skipped.setdefault("unlabelled", []).append(obj)
            continue
        if bus not in BUS_TO_GROUP:
            data.skipped.setdefault(f"class {bus} has no main group", []).append(obj)
            continue
        spectrum = spectra.read_spectrum(raw, name=base)
        values, quality = spectra.resample(spectrum)
        data.objects.append(obj)
        data.files.append(base)
        data.spectra.append(spectrum)
        data.quality.append(quality)
        rows.append(values)
        data.group = np.append(data.group, GROUP_NAMES.index(BUS_TO_GROUP[bus]))
        data.bus = np.append(data.bus, BUS_CLASS_NAMES.index(bus))
    data.features = np.stack(rows).astype(np.float32)
    data.group = data.group.astype(np.int64)
    data.bus = data.bus.astype(np.int64)
    data.sha256 = {"smass2data.tar.gz": sha256_of(tar_path), "Bus.Taxonomy.txt": sha256_of(tax_path)}
    if limit is not None and limit < len(data.objects):
        data = subset(data, _stratified_pick(data.group, limit))
    return data


def _stratified_pick(labels: np.ndarray, n: int) -> np.ndarray:
    """About ``n`` indices with the class proportions of ``labels``, deterministic (every k-th of each class)."""
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(2, round(n * len(idx) / len(labels)))
        picks.append(idx[np.linspace(0, len(idx) - 1, min(k, len(idx))).astype(int)])
    return np.sort(np.concatenate(picks))


def subset(data: SmassData, idx: np.ndarray) -> SmassData:
    return SmassData(
        [data.objects[i] for i in idx],
        [data.files[i] for i in idx],
        [data.spectra[i] for i in idx],
        data.features[idx],
        [data.quality[i] for i in idx],
        data.bus[idx],
        data.group[idx],
        data.sha256,
        data.skipped,
    )


def coverage_masks(data: SmassData) -> np.ndarray:
    """(n, grid) coverage mask of each loaded spectrum (stream.features.spectra.coverage_mask of its quality)."""
    return np.stack([spectra.coverage_mask(q) for q in data.quality]).astype(np.float32)


DEV_SPLIT_SEED = 12345  # the one stratified 80/20 development split of docs/experiments/smass-protocol.md


def development_split(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(development 80 %, held-out 20 %) row indices, stratified by main group, always the same split."""
    from sklearn.model_selection import train_test_split

    dev, held_out = train_test_split(np.arange(len(group)), test_size=0.2, stratify=group,
                                     random_state=DEV_SPLIT_SEED)
    return np.sort(dev), np.sort(held_out)
