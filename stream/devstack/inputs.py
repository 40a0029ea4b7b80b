"""Inputs for the demo: the real SMASSII archive when there is one, else clearly simulated spectra.

Order of preference: a directory the user names; the archive in the shared data directory
(``stream.settings.shared_data()``: $SKYSTREAM_SHARED_DATA, else ../shared/data beside the checkout);
the public archive downloaded from its origin with its checksum verified; simulated SMASS-format
spectra (never presented as real).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from stream.settings import Settings, shared_data

__all__ = ["demo_inputs", "write_simulated_spectra"]

SMASS_ARCHIVE = "smass2/smass2data.tar.gz"
TESS_LC = "tess/lc"
# The origin named by the data set's README; this path could not be checked from the build machines
# (no internet there), and the sha256 guards against anything else being served.
SMASS_URL = "http://smass.mit.edu/data/smass/smass2data.tar.gz"
SMASS_SHA256 = "dacf575eb1403c08bdfbffcd5dbfe12503a588e09b04ed19cc4572584a57fa97"


def _unpack(archive: bytes, dest: Path, limit: int | None) -> int:
    """Unpack the observed spectra (not the .spfit smoothed fits) into ``dest``; return the count."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(m.name).name
            if not m.isfile() or ".spfit" in name or not name.startswith("a"):
                continue
            src = tar.extractfile(m)
            if src is None:
                continue
            # Write under a temporary name and rename: the watcher never sees a half-written file.
            tmp = dest / f".{name}.part"
            tmp.write_bytes(src.read())
            tmp.rename(dest / name)
            n += 1
            if limit and n >= limit:
                break
    return n


def demo_inputs(workdir: Path, limit: int | None = None, settings: Settings | None = None) -> tuple[Path, str]:
    """(directory of inputs, a sentence saying where they came from)."""
    dest = workdir / "inputs"
    if dest.exists():
        shutil.rmtree(dest)
    data = shared_data(settings)
    local = data / SMASS_ARCHIVE
    if local.exists():
        n = _unpack(local.read_bytes(), dest, limit)
        curves = sorted((data / TESS_LC).glob("*.fits")) if (data / TESS_LC).is_dir() else []
        for f in curves:  # copied: the watcher never follows a link out of its directory
            shutil.copy(f, dest / f.name)
        tess = f" and {len(curves)} real TESS light curves from {data / TESS_LC}" if curves else ""
        return dest, f"{n} real SMASSII spectra (Bus & Binzel 2002) from {local}{tess}"
    try:
        with urllib.request.urlopen(SMASS_URL, timeout=10) as resp:
            archive = resp.read()
        digest = hashlib.sha256(archive).hexdigest()
        if digest != SMASS_SHA256:
            raise ValueError(f"checksum mismatch ({digest[:12]}...)")
        n = _unpack(archive, dest, limit)
        return dest, f"{n} real SMASSII spectra downloaded from {SMASS_URL} (sha256 verified)"
    except Exception as exc:  # offline, or the archive changed: fall back, and say so
        n = write_simulated_spectra(dest, limit or 400)
        return dest, (f"{n} SIMULATED SMASS-format spectra (not real data: the SMASSII archive was not found "
                      f"in {data} (set SKYSTREAM_SHARED_DATA) and could not be downloaded: {exc})")


# Rough reflectance shapes of the main groups over 0.435-0.925 um, normalised at 0.55 um: a slope
# and, for S and Other(V-like), a 1-um band onset. Good enough to exercise the stream, not science.
_SHAPES = {
    "C": (0.05, 0.0, 0.0),
    "X": (0.25, 0.0, 0.0),
    "S": (0.9, 0.12, 0.93),
    "Other": (1.0, 0.45, 0.92),
}


def write_simulated_spectra(dest: Path, n: int, seed: int = 7) -> int:
    """Write ``n`` simulated spectra in the SMASSII three-column format, named sim000001.txt..."""
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    wl = np.round(np.arange(0.435, 0.9251, 0.0025), 4)
    groups = list(_SHAPES)
    for i in range(1, n + 1):
        slope, band, centre = _SHAPES[groups[i % len(groups)]]
        slope *= rng.uniform(0.7, 1.3)
        refl = 1 + slope * (wl - 0.55) - band * np.exp(-0.5 * ((wl - centre) / 0.07) ** 2)
        refl /= np.interp(0.55, wl, refl)
        err = np.full_like(wl, 0.01)
        refl = refl + rng.normal(0, 0.01, wl.size)
        body = "\n".join(f"{w:.4f}\t{r:.4f}\t{e:.4f}" for w, r, e in zip(wl, refl, err, strict=True))
        tmp = dest / f".sim{i:06d}.part"
        tmp.write_text(body + "\n")
        tmp.rename(dest / f"sim{i:06d}.txt")
    return n
