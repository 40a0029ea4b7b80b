"""Spectra as other surveys would deliver them (cuts, Gaia-like bands, tilts): an independent check of
the coverage policy."""

from __future__ import annotations

import numpy as np

from stream.errors import Rejected
from stream.features import spectra
from training.smass.augmentation import tilt
from training.smass.data import SmassData

GAIA_BAND_CENTRES_UM = np.arange(0.374, 1.035, 0.044)  # Gaia DR3 reflectance spectra: 16 bands, 44 nm wide


def _cut(spectrum: spectra.Spectrum, lo: float, hi: float) -> spectra.Spectrum:
    keep = (spectrum.wavelength_um >= lo - 1e-9) & (spectrum.wavelength_um <= hi + 1e-9)
    error = spectrum.error[keep] if spectrum.error is not None else None
    return spectra.Spectrum(spectrum.wavelength_um[keep], spectrum.reflectance[keep], error, int(keep.sum()))


def _gaia_like(spectrum: spectra.Spectrum) -> spectra.Spectrum:
    """Band means over the Gaia DR3 bands that lie inside the spectrum: 11 points, 0.462–0.902 µm."""
    w, r = spectrum.wavelength_um, spectrum.reflectance
    half = 0.022
    centres = GAIA_BAND_CENTRES_UM[(GAIA_BAND_CENTRES_UM - half >= w[0]) & (GAIA_BAND_CENTRES_UM + half <= w[-1])]
    means = np.array([r[(w >= c - half) & (w < c + half)].mean() for c in centres])
    return spectra.Spectrum(centres, means, None, len(centres))


def _tilted(spectrum: spectra.Spectrum, per_um: float) -> spectra.Spectrum:
    """The spectrum with a slope calibration error (e.g. from another solar analog)."""
    factor = tilt(spectrum.wavelength_um, per_um)
    error = spectrum.error * factor if spectrum.error is not None else None
    return spectra.Spectrum(spectrum.wavelength_um, spectrum.reflectance * factor, error, spectrum.n_rows)


SURVEY_VARIANTS = {
    "cut_0.49-0.92um (S3OS2 range)": lambda s: _cut(s, 0.49, 0.92),
    "cut_0.44-0.85um": lambda s: _cut(s, 0.44, 0.85),
    "cut_0.50-0.86um": lambda s: _cut(s, 0.50, 0.86),
    "gaia_like_11_bands": _gaia_like,
    # Surveys differ in slope by a few %/µm (solar analogs, atmosphere); slope separates C from X
    # and S from some Other classes, so these measure how much a slope error costs.
    "slope_+0.05_per_um": lambda s: _tilted(s, 0.05),
    "slope_-0.05_per_um": lambda s: _tilted(s, -0.05),
}


def survey_variants(data: SmassData, smoothed: SmassData | None = None, min_coverage: float | None = None,
                    masks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Features of every spectrum re-delivered as narrower / coarser tables, through stream.spectra.

    Rows that the coverage policy (``min_coverage``, default the reader's) rejects are NaN (counted as
    rejected in the metrics). ``masks``, if given, receives each variant's coverage masks (for models
    with a coverage input).
    """
    out = {}
    nan = np.full(len(spectra.WAVELENGTH_GRID_UM), np.nan, np.float32)
    for name, make in SURVEY_VARIANTS.items():
        rows, covered = [], []
        for s in data.spectra:
            try:
                values, quality = spectra.resample(make(s), min_coverage=min_coverage)
                rows.append(values)
                covered.append(spectra.coverage_mask(quality))
            except Rejected:
                rows.append(nan)
                covered.append(np.ones_like(nan))
        out[name] = np.stack(rows)
        if masks is not None:
            masks[name] = np.stack(covered)
    if smoothed is not None:
        by_object = dict(zip(smoothed.objects, smoothed.features, strict=True))
        out["spfit (Bus smoothed fits)"] = np.stack([by_object.get(o, nan) for o in data.objects])
        if masks is not None:
            mask_of = {o: spectra.coverage_mask(q) for o, q in zip(smoothed.objects, smoothed.quality, strict=True)}
            masks["spfit (Bus smoothed fits)"] = np.stack([mask_of.get(o, np.ones_like(nan)) for o in data.objects])
    return out
