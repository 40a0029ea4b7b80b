"""Spectra drawn for the training report: one panel per set, each spectrum's covered part, offset."""

from __future__ import annotations

import io

import numpy as np

from stream.features import spectra

__all__ = ["spectra_png"]

OFFSET = 0.15  # between successive spectra of a panel


def spectra_png(panels: dict[str, list[dict]]) -> bytes:
    """PNG of ``panels``: title -> rows with ``label``, ``reflectance`` (grid values) and ``coverage``."""
    from matplotlib.figure import Figure

    panels = {title: rows for title, rows in panels.items() if rows}
    fig = Figure(figsize=(5 * max(1, len(panels)), 4))
    axes = fig.subplots(1, max(1, len(panels)), sharey=True, squeeze=False)[0]
    grid = spectra.WAVELENGTH_GRID_UM
    for ax, (title, rows) in zip(axes, panels.items(), strict=False):
        for i, r in enumerate(rows):
            covered = np.asarray(r["coverage"]) > 0
            ax.plot(grid[covered], np.asarray(r["reflectance"])[covered] + OFFSET * i, lw=1, label=r["label"])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("wavelength (µm)")
        ax.legend(fontsize=6, loc="upper left")
    axes[0].set_ylabel(f"reflectance / R(0.55 µm), offset {OFFSET} each")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
