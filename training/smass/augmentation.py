"""Training-time augmentation: per-point noise from the spectra's errors, instrument-like tilts and
distortions, random crops with their coverage masks."""

from __future__ import annotations

import numpy as np

from stream.features import spectra
from training.smass.model import ModelConfig


def grid_sigma(spectrum: spectra.Spectrum, values: np.ndarray) -> np.ndarray:
    """1-sigma noise of each grid value: the spectrum's relative error, over √(samples per grid cell)."""
    w, r = spectrum.wavelength_um, spectrum.reflectance
    rel = spectrum.error / r if spectrum.error is not None else np.full(len(w), np.nan)
    rel = np.where(np.isfinite(rel), rel, np.nanmedian(rel) if np.isfinite(rel).any() else 0.01)
    per_cell = max(1.0, spectra.GRID_STEP_UM / float(np.median(np.diff(w))))
    return (values * np.interp(spectra.WAVELENGTH_GRID_UM, w, rel) / np.sqrt(per_cell)).astype(np.float32)


def grid_sigmas(spectra_: list[spectra.Spectrum], values: np.ndarray) -> np.ndarray:
    """(n, grid) ``grid_sigma`` of every spectrum."""
    return np.stack([grid_sigma(s, v) for s, v in zip(spectra_, values, strict=True)])


def tilt(wavelength_um: np.ndarray, per_um: float | np.ndarray) -> np.ndarray:
    """1 + s·(λ - 0.55 µm): multiplies a spectrum to change its slope by s per µm, keeping its normalisation."""
    return 1 + per_um * (wavelength_um - spectra.NORMALISATION_UM)


def augment(x: np.ndarray, sigma: np.ndarray, rng: np.random.Generator, cfg: ModelConfig) -> np.ndarray:
    """One epoch's noisy copy of the training spectra (same row order)."""
    return augment_with_mask(x, sigma, rng, cfg)[0]


def coverage_rows(n: int, left: np.ndarray | int = 0, right: np.ndarray | int = 0,
                  length: int | None = None) -> np.ndarray:
    """(n, length) float32: 1 inside [left, length-1-right] grid cells, 0 outside."""
    length = length or len(spectra.WAVELENGTH_GRID_UM)
    k = np.arange(length)[None, :]
    left, right = np.broadcast_to(left, (n,))[:, None], np.broadcast_to(right, (n,))[:, None]
    return ((k >= left) & (k <= length - 1 - right)).astype(np.float32)


def augment_with_mask(x: np.ndarray, sigma: np.ndarray, rng: np.random.Generator, cfg: ModelConfig,
                      mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(augmented spectra, coverage mask) for one epoch. ``mask``: the inputs' own coverage (default full).

    Order: noise, smoothing (resolution), slope, curvature and bumps (calibration), then cropping
    (coverage), which holds the ends flat exactly as stream.features.spectra does for a spectrum that stops short.
    """
    n, length = x.shape
    lam = spectra.WAVELENGTH_GRID_UM[:length]
    out = x + cfg.noise * sigma * rng.standard_normal((n, length))
    if cfg.smooth_max:
        widths = np.where(rng.random(n) < 0.5, rng.uniform(0, cfg.smooth_max, n), 0.0)
        k = np.arange(-8, 9)
        for i in np.flatnonzero(widths > 0.3):
            kern = np.exp(-0.5 * (k / widths[i]) ** 2)
            padded = np.pad(out[i], 8, mode="edge")
            out[i] = np.convolve(padded, kern / kern.sum(), mode="valid")
    if cfg.slope_jitter:
        if cfg.slope_dist == "normal":
            slope = np.clip(rng.normal(0, cfg.slope_jitter, (n, 1)), -3 * cfg.slope_jitter, 3 * cfg.slope_jitter)
        else:
            slope = rng.uniform(-cfg.slope_jitter, cfg.slope_jitter, (n, 1))
        out = out * tilt(lam, slope)
    if cfg.curvature_jitter:
        u = (lam - 0.68) / 0.24
        c = rng.normal(0, cfg.curvature_jitter, (n, 1))
        out = out * (1 + c * (u**2 - 1 / 3)) / (1 + c * (((spectra.NORMALISATION_UM - 0.68) / 0.24) ** 2 - 1 / 3))
    if cfg.bump_jitter:
        # Smooth local reflectance errors of a few % (telluric O2/H2O residuals, fringing, flux calibration
        # near 0.75-0.92 µm): SMASS I differs from SMASSII mostly there (docs/experiments/issue13).
        a = rng.normal(0, cfg.bump_jitter, (n, 1))
        mu, w = rng.uniform(0.70, 0.92, (n, 1)), rng.uniform(0.03, 0.08, (n, 1))

        def bump(wl: np.ndarray | float) -> np.ndarray:
            """1 + a·exp(-(λ-μ)²/2w²) per sample."""
            return 1 + a * np.exp(-0.5 * ((wl - mu) / w) ** 2)

        out = out * bump(lam) / bump(spectra.NORMALISATION_UM)
    left = np.zeros(n, int)
    right = np.zeros(n, int)
    if cfg.edge_cut_prob:
        left = np.where(rng.random(n) < cfg.edge_cut_prob, rng.integers(1, cfg.edge_cut_max + 1, n), 0)
        right = np.where(rng.random(n) < cfg.edge_cut_prob, rng.integers(1, cfg.edge_cut_max + 1, n), 0)
    if cfg.crop_prob:
        step = spectra.GRID_STEP_UM
        crop = rng.random(n) < cfg.crop_prob
        lo = np.round((rng.uniform(lam[0], cfg.crop_start_max, n) - lam[0]) / step).astype(int)
        hi = np.round((lam[-1] - rng.uniform(cfg.crop_end_min, lam[-1], n)) / step).astype(int)
        left = np.where(crop, np.maximum(left, lo), left)
        right = np.where(crop, np.maximum(right, hi), right)
    m = coverage_rows(n, left, right, length)
    if mask is not None:
        m = m * mask
    # Hold flat outside the (new) coverage, as stream.features.spectra does.
    first = np.argmax(m > 0, axis=1)
    last = length - 1 - np.argmax(m[:, ::-1] > 0, axis=1)
    idx = np.clip(np.arange(length)[None, :], first[:, None], last[:, None])
    out = np.take_along_axis(out, idx, axis=1)
    return out.astype(np.float32), m
