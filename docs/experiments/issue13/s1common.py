# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Shared helpers for the issue-13 research scripts: SMASS I through stream.spectra, labels, metrics."""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np

from stream.features import spectra
from stream.errors import Rejected
from training import smass

SMASS1_TAR = Path("../shared/data/smass1/smass1data.tar.gz")
SMASS2_DIR = Path("../shared/data/smass2")
GRID = spectra.WAVELENGTH_GRID_UM
_NUM = re.compile(r"a(\d{6,7})\.\[1\]")
_PROV = re.compile(r"au(\d{4})([A-Z]{2}\d*)\.\[1\]")


def smass1_object(base: str) -> str:
    if m := _NUM.fullmatch(base):
        return str(int(m.group(1)))
    if m := _PROV.fullmatch(base):
        return f"{m.group(1)} {m.group(2)}"
    return base


def load_smass1(min_coverage: float | None = None):
    """All SMASS I spectra through stream.spectra (read_spectrum + resample).

    Returns list of dicts: object, file, spectrum, values (or None), quality, rejected reason, mask.
    ``min_coverage`` overrides spectra.MIN_COVERAGE temporarily (None: the shipped rule).
    """
    taxonomy = smass.parse_taxonomy((SMASS2_DIR / "Bus.Taxonomy.txt").read_text(encoding="latin-1"))
    out = []
    old = spectra.MIN_COVERAGE
    if min_coverage is not None:
        spectra.MIN_COVERAGE = min_coverage
    try:
        with tarfile.open(SMASS1_TAR) as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                base = m.name.rsplit("/", 1)[-1]
                if not m.isfile() or not base.endswith(".[1]"):
                    continue
                raw = tar.extractfile(m).read()
                obj = smass1_object(base)
                entry = taxonomy.get(obj)
                bus = entry.bus if entry else ""
                rec = {"object": obj, "file": base, "bus": bus,
                       "group": smass.BUS_TO_GROUP.get(bus, ""), "values": None, "reason": None}
                try:
                    s = spectra.read_spectrum(raw, name=base)
                    rec["spectrum"] = s
                    v, q = spectra.resample(s)
                    rec["values"], rec["quality"] = v, q
                    rec["mask"] = ((GRID >= q["min_um"] - 1e-9) & (GRID <= q["max_um"] + 1e-9)).astype(np.float32)
                except Rejected as exc:
                    rec["reason"] = exc.reason
                    rec["message"] = str(exc)
                out.append(rec)
    finally:
        spectra.MIN_COVERAGE = old
    return out


def weighted_f1(y, p):
    from sklearn.metrics import f1_score
    return float(f1_score(y, p, average="weighted"))


def ece(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-class expected calibration error, equal-width bins on [0, 1]."""
    conf = prob.max(1)
    correct = (prob.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def ls_slope(lam, ratio):
    """Least-squares slope per µm of ratio (normalised at 0.55) against wavelength."""
    a = np.vstack([np.ones_like(lam), lam - 0.55]).T
    coef, *_ = np.linalg.lstsq(a, ratio, rcond=None)
    return float(coef[1] / coef[0])
