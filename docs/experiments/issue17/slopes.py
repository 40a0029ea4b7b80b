"""Issue 17: the visible slope of each main group under Bus labels (SMASSII) and Mahlke labels (an experiment script).

Least-squares slope of reflectance over 0.50-0.85 µm, per µm, normalised at 0.55 µm: on the stream's grid
for SMASSII, on the native 0.025 µm points for the cross-survey rows (those covering the whole range).
Prints median and interquartile range per group and set.

    .venv/bin/python docs/experiments/issue17/slopes.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from stream.features import spectra  # noqa: E402
from training.smass import GROUP_NAMES, load_smass  # noqa: E402
from training.smass.cross_survey import iter_mahlke2022  # noqa: E402

RANGE_UM = (0.50, 0.85)


def slope(wavelength: np.ndarray, reflectance: np.ndarray) -> float | None:
    """Slope per µm over RANGE_UM, over the value of the line at 0.55 µm; None when the range is not covered."""
    inside = (wavelength >= RANGE_UM[0] - 1e-9) & (wavelength <= RANGE_UM[1] + 1e-9)
    covered = wavelength[inside].min() <= RANGE_UM[0] + 0.01 and wavelength[inside].max() >= RANGE_UM[1] - 0.01
    if inside.sum() < 5 or not covered:
        return None
    design = np.stack([np.ones(inside.sum()), wavelength[inside] - spectra.NORMALISATION_UM], axis=1)
    intercept, per_um = np.linalg.lstsq(design, reflectance[inside], rcond=None)[0]
    return float(per_um / intercept)


def main() -> None:
    found: dict[tuple[str, str], list[float]] = {}
    smass = load_smass()
    for values, group in zip(smass.features, smass.group, strict=True):
        found.setdefault(("SMASSII", GROUP_NAMES[group]), []).append(slope(spectra.WAVELENGTH_GRID_UM, values))
    for row in iter_mahlke2022():
        if row.group in GROUP_NAMES:
            table = np.loadtxt(row.table.decode().splitlines(), ndmin=2)
            found.setdefault(("cross-survey", row.group), []).append(slope(table[:, 0], table[:, 1]))
    for group in GROUP_NAMES:
        cells = []
        for source in ("SMASSII", "cross-survey"):
            x = np.array([v for v in found[(source, group)] if v is not None])
            q1, median, q3 = np.percentile(x, [25, 50, 75])
            cells.append(f"{source}: {median:.3f} ({q1:.3f}..{q3:.3f}), n {x.size}")
        print(f"{group:5s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
