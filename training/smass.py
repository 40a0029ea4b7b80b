"""`skystream train smass`: asteroid main groups (C/S/X/Other) and Bus classes from SMASSII spectra.

Data: SMASSII visible spectra (Bus & Binzel 2002, smass.mit.edu/smass.html: ``smass2data.tar.gz`` and
``Bus.Taxonomy.txt``), read from ``DEFAULT_DATA`` unless ``--data-dir`` says otherwise. Features come
from stream.features.spectra, the same code the stream runs. All 1,341 spectra have a Bus class (none
is Q or unclassified; such objects would be skipped and counted).

Model: a functional Keras model holding ``members`` small 1D CNNs (input: normalised reflectance on
the grid, plus its derivative computed inside the model) whose softmax outputs are averaged; two
heads, main group and Bus class. One ONNX file, ~0.4 MB. The protocol (``ModelConfig``) was chosen
by 4-fold CV on an 80 % development split only; docs/experiments/smass-protocol.md has the rounds,
the variants tried and their numbers.

Since smass v2 (issue 13) the model also takes ``coverage`` (1 where the grid point lies inside the data)
and the default protocol trains with random crops and smooth instrument-like distortions, so spectra
from other instruments and narrower ranges (≥ ``MIN_COVERAGE_MASKED`` of the grid) are scored; the
metadata carries a temperature and the border-flag rule, and the SMASS I cross-instrument check
(training/cross_survey.py). docs/experiments/issue13/RESULTS.md has the research.

A run is load → fit (the final model on all spectra) → export to ONNX and verify against Keras →
evaluate (stratified k-fold CV of the same protocol, which includes the development 80 %, so read it
as slightly optimistic) → publish (through the promotion gate with ``--with-labels``):

    skystream train smass [--folds 5] [--registry URI | --bundle] [--report PATH] [--threads 2]
    skystream train smass --dev-split --folds 4 --threads 1 --seed S [--config FIELD=VALUE]   # protocol search
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stream.errors import Rejected
from stream.features import spectra
from stream.settings import shared_data
from training.result import TrainResult

if TYPE_CHECKING:
    from training.feedback import Merged
    from training.gate import EvalSet

__all__ = [
    "BUS_CLASS_NAMES", "BUS_TO_GROUP", "COVERAGE_NAME", "DEFAULT_DATA", "DEFAULT_SMASS1", "GROUP_NAMES",
    "MAIN_GROUPS", "MODEL_NAME", "TASK", "Evaluation", "Exported", "Loaded", "ModelConfig", "SmassData",
    "TaxonomyEntry", "add_arguments", "augment_with_mask", "border_rule", "build_metadata", "build_model",
    "bus_to_group_matrix", "check_arguments", "coverage_masks", "coverage_rows", "cross_validate",
    "development_split", "evaluate", "evaluate_cross_survey", "evaluate_protocol", "export_and_verify", "fit",
    "grid_sigma", "iter_tar_spectra", "load", "load_smass", "override_config", "parse_taxonomy", "predict",
    "protocol", "publish", "run", "survey_variants", "tilt", "train_model",
]

ORIGIN = "http://smass.mit.edu/smass.html (Bus & Binzel 2002, Icarus 158, 146): smass2data.tar.gz, Bus.Taxonomy.txt"
DEFAULT_DATA = shared_data() / "smass2"
DEFAULT_SMASS1 = shared_data() / "smass1" / "smass1data.tar.gz"  # issue 13: the cross-instrument check

# Main groups: Bus & Binzel's C, S and X complexes, and every other class as Other. Q (and unclassified
# "-") belong to none: such spectra are left out of training (SMASSII holds no Q spectrum, so nothing is lost).
MAIN_GROUPS: dict[str, tuple[str, ...]] = {
    "C": ("B", "C", "Cb", "Cg", "Cgh", "Ch"),
    "S": ("S", "Sa", "Sk", "Sl", "Sq", "Sr"),
    "X": ("X", "Xc", "Xe", "Xk"),
    "Other": ("A", "D", "K", "L", "Ld", "O", "R", "T", "V"),
}
GROUP_NAMES: tuple[str, ...] = tuple(MAIN_GROUPS)
BUS_TO_GROUP = {bus: group for group, classes in MAIN_GROUPS.items() for bus in classes}
BUS_CLASS_NAMES: tuple[str, ...] = tuple(sorted(BUS_TO_GROUP))  # the Bus head's classes (25, no Q)


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaxonomyEntry:
    """One object of the SMASS taxonomy table: its Tholen and Bus classes."""
    object: str  # "1" or "1996 UK": the same convention as stream.spectra.object_name
    name: str
    tholen: str
    bus: str  # "" when unclassified


_PROVISIONAL = re.compile(r"\d{4} [A-Z]{2}\d*")


def parse_taxonomy(text: str) -> dict[str, TaxonomyEntry]:
    """Bus.Taxonomy.txt → entries by object.

    Rows are ``number name<TAB>tholen<TAB>bus`` with provisional designations (``1996 UK``) indented
    and without a number; some rows carry extra tabs (``523 Ada<TAB><TAB><TAB><TAB>X``), so the Bus
    class is the last field and the Tholen class the second, never fixed positions. (Reading fixed
    tab positions loses 523 Ada (X) and 614 Pia (C): that gives the 1,339 of the published counts.)
    """
    entries: dict[str, TaxonomyEntry] = {}
    for line in text.splitlines():
        if "\t" not in line:
            continue  # header prose
        fields = line.split("\t")
        designation = " ".join(fields[0].split())
        tholen = fields[1].strip() if len(fields) > 2 else ""
        bus = fields[-1].strip()
        bus = "" if bus == "-" else bus
        if line[:1].isspace() or _PROVISIONAL.fullmatch(designation):
            obj, name = designation, designation
        else:
            number, _, name = designation.partition(" ")
            if not number.isdigit():
                raise ValueError(f"unexpected taxonomy row: {line!r}")
            obj = str(int(number))
        if obj in entries:
            raise ValueError(f"object {obj} listed twice in the taxonomy")
        entries[obj] = TaxonomyEntry(obj, name, tholen, bus)
    return entries


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------
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


def _sha256(path: Path) -> str:
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
    data.sha256 = {"smass2data.tar.gz": _sha256(tar_path), "Bus.Taxonomy.txt": _sha256(tax_path)}
    if limit is not None and limit < len(data.objects):
        data = _subset(data, _stratified_pick(data.group, limit))
    return data


def _stratified_pick(labels: np.ndarray, n: int) -> np.ndarray:
    """About ``n`` indices with the class proportions of ``labels``, deterministic (every k-th of each class)."""
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(2, round(n * len(idx) / len(labels)))
        picks.append(idx[np.linspace(0, len(idx) - 1, min(k, len(idx))).astype(int)])
    return np.sort(np.concatenate(picks))


def _subset(data: SmassData, idx: np.ndarray) -> SmassData:
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


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
TASK = "smass"  # the registry's task name
MODEL_NAME = "smass-cnn"
INPUT_NAME = "reflectance"
OUTPUT_GROUP = "main_group"
OUTPUT_BUS = "bus_class"
INPUT_SCALE = 4.0  # (r - 1) * 4: normalised reflectance (0.6–1.6) to about ±2; a constant, so nothing is fit
DERIVATIVE_SCALE = 20.0  # central difference over 0.01 µm, brought to the scale of the reflectance channel
COVERAGE_NAME = "coverage"  # second input with ModelConfig.coverage_mask: 1 where the grid point is inside the data
SLOPE_SCALE = 2.0  # shape_only: LS slope per µm (S ~0.5, C ~0) times this, about unit scale
CONTINUUM_SCALE = 2.0  # continuum-removed residuals (std ~0.25 after centring) to about the reflectance channel's scale


@dataclass(frozen=True)
class ModelConfig:
    """The training protocol. Chosen by 4-fold CV on an 80 % development split only (the other 20 %
    was scored once at the end); docs/experiments/smass-protocol.md lists what was tried."""

    members: int = 3  # ensemble of independently initialised CNNs inside one functional model
    filters: tuple[int, ...] = (16, 32, 32)
    kernel: int = 5
    dense: int = 64
    dropout: float = 0.3
    derivative: bool = True  # second input channel: d(reflectance)/d(wavelength), computed in the model
    continuum: bool = False  # extra channel: the spectrum minus its least-squares line over the grid (band shape)
    bus_vote: bool = False  # main-group output = mean of the main head and the Bus head summed into main groups
    class_balance: float = 0.0  # sample weights ∝ (main-group frequency)^-class_balance, mean 1 (0 = none)
    epochs: int = 80
    batch_size: int = 32
    learning_rate: float = 2e-3  # cosine-decayed to 0 over the run
    label_smoothing: float = 0.0
    bus_loss_weight: float = 0.5  # the Bus head is auxiliary: it shapes features, the main head decides
    noise: float = 2.0  # × each spectrum's own error propagated to the grid, redrawn every epoch
    edge_cut_prob: float = 0.3  # fraction of samples whose ends are held flat, as for narrower spectra
    edge_cut_max: int = 10  # grid cells (0.05 µm) per end
    slope_jitter: float = 0.0  # spectra multiplied by 1 + s·(λ - 0.55 µm), s ~ U(-a, a) per µm (0 = off)
    # Issue 13 (spectra from other instruments; docs/experiments/issue13/RESULTS.md). Since smass v2 the
    # default is that recipe: coverage mask + crop 0.5 + curvature 0.02 + bump 0.02 (slope jitter stays off:
    # slope is what separates C from X); shape_only, smooth_max and blue_edge_um were not run and stay off.
    slope_dist: str = "uniform"  # "uniform": s ~ U(-a, a); "normal": s ~ N(0, a) clipped at ±3a
    curvature_jitter: float = 0.02  # × (1 + c·(u² - 1/3)), u = (λ - 0.68)/0.24, c ~ N(0, this), renormalised at 0.55 µm
    crop_prob: float = 0.5  # fraction of samples cropped to [U(0.44, crop_start_max), U(crop_end_min, 0.92)] µm
    crop_start_max: float = 0.50
    crop_end_min: float = 0.82
    smooth_max: float = 0.0  # Gaussian smoothing of half the samples, sigma ~ U(0, this) grid cells (resolution)
    coverage_mask: bool = True  # second model input "coverage" (1 = grid point inside the data); uncovered -> 1.0
    shape_only: bool = False  # CNN sees only the slope-removed spectrum; the LS slope enters as one scalar feature
    bump_jitter: float = 0.02  # × (1 + a·exp(-(λ-μ)²/2w²)), a ~ N(0, this), μ ~ U(0.70, 0.92), w ~ U(0.03, 0.08) µm
    blue_edge_um: float = 0.0  # with coverage_mask: grid points below this always count as uncovered (in the model)


def build_model(cfg: ModelConfig, n_grid: int):
    """(training model with one output pair per member, serving model averaging the members).

    The serving model takes the normalised reflectance on the grid (batch, n_grid) and returns the
    main-group and Bus-class probabilities; everything else (centring, derivative) happens inside it,
    so the ONNX file needs nothing but SpectrumFeatures.reflectance.
    """
    import keras
    from keras import layers

    inp = keras.Input((n_grid,), name=INPUT_NAME)
    inputs = [inp]
    centred = layers.Rescaling(INPUT_SCALE, offset=-INPUT_SCALE, name="centre")(inp)
    scalars = None
    if cfg.shape_only:
        # Bus & Binzel's separation: the CNN sees the residual from the least-squares line (band shape);
        # the line's slope (a fixed projection, per µm, scaled) is one scalar beside the CNN features,
        # so a slope error between instruments moves only that scalar. Both from the held-flat input.
        removal = keras.initializers.Constant(CONTINUUM_SCALE * _continuum_removal(n_grid))
        centred = layers.Dense(n_grid, use_bias=False, trainable=False, kernel_initializer=removal,
                               name="continuum_removed")(centred)
        slope_row = keras.initializers.Constant(_slope_projection(n_grid)[:, None])
        scalars = layers.Dense(1, use_bias=False, trainable=False, kernel_initializer=slope_row, name="slope")(inp)
    mask = None
    if cfg.coverage_mask:
        # Uncovered grid points are neutral (0 after centring: reflectance 1.0, or no residual) and
        # flagged by a mask channel, so the CNN knows what is missing instead of seeing held values as data.
        cov = keras.Input((n_grid,), name=COVERAGE_NAME)
        inputs.append(cov)
        if cfg.blue_edge_um:  # a fixed 0/1 vector: the model ignores the blue edge whatever the input covers
            keep = (spectra.WAVELENGTH_GRID_UM[:n_grid] >= cfg.blue_edge_um - 1e-9).astype(np.float32)
            cov = layers.Rescaling(keep, name="drop_blue_edge")(cov)
        centred = layers.Multiply(name="masked")([centred, cov])
        mask = layers.Reshape((n_grid, 1), name="mask_channel")(cov)
    x = layers.Reshape((n_grid, 1), name="channels")(centred)
    channels = [x]
    if cfg.continuum:
        # Bus & Binzel's slope removal as a fixed linear map: r - (a + b·λ) with a, b the least-squares
        # line over the grid, so the CNN sees band shape apart from slope (C/X differ mostly in slope,
        # S vs K/L/A in band depth against slope). Not trainable: a constant projection, nothing is fit.
        removal = keras.initializers.Constant(CONTINUUM_SCALE * _continuum_removal(n_grid))
        residual = layers.Dense(n_grid, use_bias=False, trainable=False, kernel_initializer=removal,
                                name="continuum_removed")
        channels.append(layers.Reshape((n_grid, 1), name="band_channel")(residual(centred)))
    if mask is not None:
        channels.append(mask)
    if len(channels) > 1:
        x = layers.Concatenate(name="with_bands")(channels)
    if cfg.derivative:
        ahead = layers.Cropping1D((2, 0), name="ahead")(channels[0])
        behind = layers.Cropping1D((0, 2), name="behind")(channels[0])
        difference = layers.Subtract(name="difference")([ahead, behind])
        if mask is not None:  # no derivative across the edge of the covered range
            both = layers.Multiply(name="both_covered")([layers.Cropping1D((2, 0), name="mask_ahead")(mask),
                                                         layers.Cropping1D((0, 2), name="mask_behind")(mask)])
            difference = layers.Multiply(name="masked_difference")([difference, both])
        slope = layers.Rescaling(DERIVATIVE_SCALE, name="derivative")(difference)
        x = layers.Concatenate(name="with_derivative")([layers.Cropping1D((1, 1), name="middle")(x), slope])
    outputs, groups, buses = {}, [], []
    for m in range(cfg.members):
        h = x
        for i, f in enumerate(cfg.filters):
            h = layers.Conv1D(f, cfg.kernel, padding="same", activation="relu", name=f"m{m}_conv{i}")(h)
            h = layers.MaxPooling1D(2, name=f"m{m}_pool{i}")(h)
        h = layers.Flatten(name=f"m{m}_flat")(h)
        if scalars is not None:
            h = layers.Concatenate(name=f"m{m}_with_slope")([h, scalars])
        h = layers.Dropout(cfg.dropout, name=f"m{m}_drop0")(h)
        h = layers.Dense(cfg.dense, activation="relu", name=f"m{m}_dense")(h)
        h = layers.Dropout(cfg.dropout, name=f"m{m}_drop1")(h)
        groups.append(layers.Dense(len(GROUP_NAMES), activation="softmax", name=f"group_{m}")(h))
        buses.append(layers.Dense(len(BUS_CLASS_NAMES), activation="softmax", name=f"bus_{m}")(h))
        outputs[f"group_{m}"], outputs[f"bus_{m}"] = groups[-1], buses[-1]
    inp = inputs if len(inputs) > 1 else inp
    train = keras.Model(inp, outputs, name="smass_cnn_train")
    group_name = "main_group_head" if cfg.bus_vote else OUTPUT_GROUP
    if cfg.members == 1:
        group = layers.Identity(name=group_name)(groups[0])
        bus = layers.Identity(name=OUTPUT_BUS)(buses[0])
    else:
        group = layers.Average(name=group_name)(groups)
        bus = layers.Average(name=OUTPUT_BUS)(buses)
    if cfg.bus_vote:
        # The Bus head's 25 probabilities summed into main groups (a fixed 0/1 matrix), averaged with
        # the main head: two views of the same spectrum, whose errors are only partly shared.
        to_group = layers.Dense(len(GROUP_NAMES), use_bias=False, trainable=False, name="bus_to_group",
                                kernel_initializer=keras.initializers.Constant(bus_to_group_matrix()))
        group = layers.Average(name=OUTPUT_GROUP)([group, to_group(bus)])
    serve = keras.Model(inp, [group, bus], name="smass_cnn")
    return train, serve


def bus_to_group_matrix() -> np.ndarray:
    """(25, 4) 0/1 matrix: Bus-class probabilities @ matrix = main-group probabilities."""
    out = np.zeros((len(BUS_CLASS_NAMES), len(GROUP_NAMES)), np.float32)
    for j, bus in enumerate(BUS_CLASS_NAMES):
        out[j, GROUP_NAMES.index(BUS_TO_GROUP[bus])] = 1.0
    return out


def _continuum_removal(n_grid: int) -> np.ndarray:
    """(n, n) symmetric matrix I - A A⁺ (A = [1, λ]): a row vector times it is the residual from its
    least-squares line over the grid."""
    lam = spectra.WAVELENGTH_GRID_UM[:n_grid].astype(np.float64)
    design = np.stack([np.ones_like(lam), lam - lam.mean()], axis=1)
    return (np.eye(n_grid) - design @ np.linalg.pinv(design)).astype(np.float32)


def _slope_projection(n_grid: int) -> np.ndarray:
    """(n,) row: reflectance @ row = least-squares slope over the grid, per µm, × SLOPE_SCALE."""
    lam = spectra.WAVELENGTH_GRID_UM[:n_grid].astype(np.float64)
    design = np.stack([np.ones_like(lam), lam - lam.mean()], axis=1)
    return (SLOPE_SCALE * np.linalg.pinv(design)[1]).astype(np.float32)


def grid_sigma(spectrum: spectra.Spectrum, values: np.ndarray) -> np.ndarray:
    """1-sigma noise of each grid value: the spectrum's relative error, over √(samples per grid cell)."""
    w, r = spectrum.wavelength_um, spectrum.reflectance
    rel = spectrum.error / r if spectrum.error is not None else np.full(len(w), np.nan)
    rel = np.where(np.isfinite(rel), rel, np.nanmedian(rel) if np.isfinite(rel).any() else 0.01)
    per_cell = max(1.0, spectra.GRID_STEP_UM / float(np.median(np.diff(w))))
    return (values * np.interp(spectra.WAVELENGTH_GRID_UM, w, rel) / np.sqrt(per_cell)).astype(np.float32)


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


def train_model(cfg: ModelConfig, x: np.ndarray, sigma: np.ndarray, group: np.ndarray, bus: np.ndarray,
                seed: int, threads: int = 2, label: str = "", log=print, mask: np.ndarray | None = None):
    """Train reproducibly; return the serving Keras model. Logs a summary per epoch (every 10th off a tty)."""
    from training.keras_export import configure_tensorflow

    configure_tensorflow(seed, threads)
    import keras

    train, serve = build_model(cfg, x.shape[1])
    steps_per_epoch = int(np.ceil(len(x) / cfg.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps_per_epoch * cfg.epochs)
    losses, weights = {}, {}
    for m in range(cfg.members):
        for head in ("group", "bus"):
            losses[f"{head}_{m}"] = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
            weights[f"{head}_{m}"] = 1.0 if head == "group" else cfg.bus_loss_weight
    # One graph call per epoch's worth of batches: per-call overhead dominates for a model this small.
    train.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses, loss_weights=weights,
                  steps_per_execution=steps_per_epoch)

    # Every epoch's shuffled, freshly noised copy, drawn up front from one seeded generator and fed
    # in a single fit call (per-epoch fit calls cost more than the training itself here).
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(x)) for _ in range(cfg.epochs)]
    parts = [augment_with_mask(x[o], sigma[o], rng, cfg, None if mask is None else mask[o]) for o in orders]
    xa = np.concatenate([p[0] for p in parts])
    if cfg.coverage_mask:
        xa = {INPUT_NAME: xa, COVERAGE_NAME: np.concatenate([p[1] for p in parts])}
    del parts
    order = np.concatenate(orders)
    y_group = np.eye(len(GROUP_NAMES), dtype=np.float32)[group[order]]
    y_bus = np.eye(len(BUS_CLASS_NAMES), dtype=np.float32)[bus[order]]
    targets = {}
    for m in range(cfg.members):  # every member sees the same stream; they differ by initialisation
        targets[f"group_{m}"], targets[f"bus_{m}"] = y_group, y_bus

    tty = sys.stderr.isatty()
    total_steps = int(np.ceil(len(order) / cfg.batch_size))

    class Progress(keras.callbacks.Callback):
        """Per-epoch summary: mean loss over the epoch's batches (from Keras's running mean)."""

        def __init__(self) -> None:
            super().__init__()
            self.previous = (0, 0.0)

        def on_train_batch_end(self, batch: int, logs=None) -> None:
            """Print the mean loss of each finished epoch (on one line when stderr is a terminal)."""
            done = batch + 1  # batches so far; called once per `steps_per_execution` batches
            epoch = done // steps_per_epoch if done < total_steps else cfg.epochs
            if epoch <= self.previous[0] // steps_per_epoch and done < total_steps:
                return
            total = logs["loss"] * done
            loss = (total - self.previous[1]) / (done - self.previous[0])
            self.previous = (done, total)
            line = f"{label}epoch {epoch:3d}/{cfg.epochs} loss {loss:.4f}"
            if tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
            elif epoch % 10 == 0 or epoch == cfg.epochs:
                log(line)

    sample_weight = None
    if cfg.class_balance:
        # Rarer main groups (Other, X) weigh more; normalised so the mean weight (and step size) stays 1.
        freq = np.bincount(group, minlength=len(GROUP_NAMES)) / len(group)
        per_class = np.where(freq > 0, freq, 1.0) ** -cfg.class_balance
        per_sample = per_class[group]
        sample_weight = (per_sample / per_sample.mean()).astype(np.float32)[order]
    train.fit(xa, targets, batch_size=cfg.batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[Progress()],
              sample_weight=sample_weight)
    if tty:
        print(file=sys.stderr)
    return serve


def predict(serve, x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(main-group, Bus-class) probabilities of a serving model on the grid values ``x``; ``mask`` (the
    coverage, default full) is used only by models with a coverage input."""
    if len(serve.inputs) > 1:
        mask = np.ones_like(x) if mask is None else mask
        x = {INPUT_NAME: x, COVERAGE_NAME: mask.astype(np.float32)}
    group, bus = serve.predict(x, batch_size=512, verbose=0)
    return np.asarray(group), np.asarray(bus)


# --------------------------------------------------------------------------------------------
# Spectra as other surveys would deliver them (independent check of the coverage policy)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def _scores(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"weighted_f1": float(f1_score(y, p, average="weighted")), "accuracy": float(accuracy_score(y, p))}


def coverage_masks(data: SmassData) -> np.ndarray:
    """(n, grid) coverage mask of each loaded spectrum (stream.features.spectra.coverage_mask of its quality)."""
    return np.stack([spectra.coverage_mask(q) for q in data.quality]).astype(np.float32)


def cross_validate(data: SmassData, cfg: ModelConfig, folds: int, seed: int, threads: int,
                   variants: dict[str, np.ndarray], log=print,
                   variant_masks: Mapping[str, np.ndarray] | None = None) -> dict:
    """Stratified k-fold CV (by main group) of the full protocol; every number from out-of-fold predictions.

    Nothing is fit on a test fold: the model's input scaling is a constant, augmentation noise comes
    from each training spectrum's own errors, and the protocol (ModelConfig) is fixed in advance.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    x, g, b = data.features, data.group, data.bus
    masks = coverage_masks(data)
    variant_masks = variant_masks or {}
    sigma = np.stack([grid_sigma(s, v) for s, v in zip(data.spectra, x, strict=True)])
    n = len(x)
    p_group = np.zeros((n, len(GROUP_NAMES)), np.float32)
    p_bus = np.zeros((n, len(BUS_CLASS_NAMES)), np.float32)
    p_variant = {name: np.full((n, len(GROUP_NAMES)), np.nan, np.float32) for name in variants}
    per_fold = []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (train_idx, test_idx) in enumerate(splitter.split(x, g)):
        t0 = time.perf_counter()
        log(f"fold {k + 1}/{folds}: training on {len(train_idx)} spectra, testing on {len(test_idx)}")
        model = train_model(cfg, x[train_idx], sigma[train_idx], g[train_idx], b[train_idx], seed=seed,
                            threads=threads, label=f"  fold {k + 1}/{folds} ", log=log, mask=masks[train_idx])
        p_group[test_idx], p_bus[test_idx] = predict(model, x[test_idx], masks[test_idx])
        for name, v in variants.items():
            ok = test_idx[np.all(np.isfinite(v[test_idx]), axis=1)]
            if len(ok):
                vm = variant_masks.get(name)
                p_variant[name][ok] = predict(model, v[ok], None if vm is None else vm[ok])[0]
        fold = _scores(g[test_idx], p_group[test_idx].argmax(1))
        fold["bus_accuracy"] = float(np.mean(p_bus[test_idx].argmax(1) == b[test_idx]))
        fold["seconds"] = round(time.perf_counter() - t0, 1)
        per_fold.append(fold)
        log(f"fold {k + 1}/{folds}: main-group weighted F1 {fold['weighted_f1']:.4f}, "
            f"Bus accuracy {fold['bus_accuracy']:.4f} ({fold['seconds']:.0f} s)")

    pred = p_group.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        g, pred, labels=range(len(GROUP_NAMES)), zero_division=0)
    f1s = np.array([f["weighted_f1"] for f in per_fold])
    bus_acc = np.array([f["bus_accuracy"] for f in per_fold])
    bus_pred = p_bus.argmax(1)
    robustness = {}
    for name, pv in p_variant.items():
        scored = np.all(np.isfinite(pv), axis=1)
        entry = {"n_scored": int(scored.sum()), "n_rejected": int((~scored).sum())}
        if scored.any():
            entry.update(_scores(g[scored], pv[scored].argmax(1)))
            entry["same_as_full_spectrum"] = float(np.mean(pv[scored].argmax(1) == pred[scored]))
        robustness[name] = entry
    return {
        "protocol": f"stratified {folds}-fold CV by main group, shuffle seed {seed}; out-of-fold predictions",
        "n_spectra": n,
        "main_group": {
            "weighted_f1_mean": float(f1s.mean()),
            "weighted_f1_std": float(f1s.std()),
            "weighted_f1_per_fold": f1s.round(5).tolist(),
            **{f"{k}_pooled": v for k, v in _scores(g, pred).items()},
            "per_class": {
                name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(support[i])}
                for i, name in enumerate(GROUP_NAMES)
            },
            "confusion_matrix": {"labels": list(GROUP_NAMES), "rows": "true", "columns": "predicted",
                                 "counts": confusion_matrix(g, pred, labels=range(len(GROUP_NAMES))).tolist()},
            "from_bus_head_accuracy": float(np.mean(
                np.array([GROUP_NAMES.index(BUS_TO_GROUP[BUS_CLASS_NAMES[i]]) for i in bus_pred]) == g)),
        },
        "bus_class": {
            "accuracy_mean": float(bus_acc.mean()),
            "accuracy_std": float(bus_acc.std()),
            "accuracy_per_fold": bus_acc.round(5).tolist(),
            "accuracy_pooled": float(np.mean(bus_pred == b)),
        },
        "other_surveys_simulated": robustness,
        "per_fold": per_fold,
    }


# --------------------------------------------------------------------------------------------
# Final model, export, publication
# --------------------------------------------------------------------------------------------
def _file_sha256(*paths: Path) -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    return {str(p.relative_to(root)): _sha256(p) for p in paths}


def build_metadata(data: SmassData, cfg: ModelConfig, args: argparse.Namespace, onnx_bytes: bytes,
                   cv: dict | None, check: dict, train_pred: np.ndarray, seconds: float) -> dict:
    """The registry metadata of a trained model: classes, grid, I/O names, metrics, training data,
    drift reference, smoke test, seeds, config, code and library versions."""
    from stream.scoring.drift import build_reference
    from training.keras_export import code_version, library_versions, onnx_io

    io = onnx_io(onnx_bytes)
    outputs = {OUTPUT_GROUP: io["outputs"][0]["name"], OUTPUT_BUS: io["outputs"][1]["name"]}
    grid = spectra.WAVELENGTH_GRID_UM.tolist()
    records = [{"wavelength_um": grid, "reflectance": row.tolist(), "quality": q}
               for row, q in zip(data.features, data.quality, strict=True)]
    # A few real spectra (one or two per main group) with their ONNX outputs: workers re-run them
    # before serving a new version (stream/models/hot_swap.py).
    smoke_idx = np.concatenate([np.flatnonzero(data.group == i)[:2] for i in range(len(GROUP_NAMES))])
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    smoke_x = data.features[smoke_idx]
    smoke_in = {INPUT_NAME: smoke_x}
    if cfg.coverage_mask:
        smoke_in[COVERAGE_NAME] = coverage_masks(data)[smoke_idx]
    smoke_out = session.run(None, smoke_in)
    here = Path(__file__).resolve()
    return {
        "name": MODEL_NAME,
        "description": "1D CNN ensemble: SMASSII visible reflectance spectrum (0.44-0.92 µm) -> asteroid main group "
                       "(C/S/X/Other) and Bus (1999) class",
        "kind": "spectrum",
        "class_names": list(GROUP_NAMES),
        "bus_class_names": list(BUS_CLASS_NAMES),
        "bus_to_main_group": BUS_TO_GROUP,
        "wavelength_grid_um": grid,
        "preprocessing": spectra.PREPROCESSING_VERSION,
        "input_name": INPUT_NAME,
        **({"coverage_name": COVERAGE_NAME, "min_coverage": spectra.MIN_COVERAGE_MASKED} if cfg.coverage_mask else {}),
        **({"calibration": {"temperature": TEMPERATURE, "method": "temperature scaling of the main-group "
                            "probabilities", "provenance": TEMPERATURE_PROVENANCE},
            "border_rule": border_rule(data)} if cfg.coverage_mask else {}),
        "output_names": outputs,
        "io": io,
        "metrics": {"cv": cv, "onnx_vs_keras": check,
                    "training_set": _scores(data.group, train_pred.argmax(1))},
        "training_data": {
            "origin": ORIGIN,
            "sha256": data.sha256,
            "n_spectra": len(data.objects),
            "main_group_counts": {n: int(np.sum(data.group == i)) for i, n in enumerate(GROUP_NAMES)},
            "skipped": {k: len(v) for k, v in data.skipped.items()},
        },
        "drift_reference": build_reference("spectrum", records, [GROUP_NAMES[i] for i in train_pred.argmax(1)]),
        "smoke_test": {"inputs": {name: v.tolist() for name, v in smoke_in.items()},
                       "outputs": {name: out.tolist() for name, out in zip(outputs.values(), smoke_out, strict=True)},
                       "atol": 1e-4, "objects": [data.objects[i] for i in smoke_idx]},
        "seeds": {"seed": args.seed, "cv_split_seed": args.seed},
        "config": dataclasses.asdict(cfg),
        "code": {"git": code_version(), "sha256": _file_sha256(here, Path(spectra.__file__).resolve()),
                 # Absolute paths in the arguments are this machine's, not provenance: keep their names.
                 "command": " ".join(Path(a).name if Path(a).is_absolute() else a for a in (
                     ["skystream", "train", "smass", *sys.argv[3:]]
                     if sys.argv[1:3] == ["train", "smass"] else sys.argv))},
        "libraries": library_versions(),
        "training_seconds": round(seconds, 1),
    }


# Issue 13: temperature and border flag of the recipe, written into the metadata (stream/scoring/calibration.py).
# T was fitted (NLL) on simulated-instrument out-of-fold predictions (slope N(0, 0.12)/µm, curvature and
# bumps N(0, 0.03), random crop) of the dev split, 4-fold CV, seeds 0/1/2: 1.76-1.80. Not refitted per run
# (that costs four more trainings); recorded with its provenance.
TEMPERATURE = 1.8
TEMPERATURE_PROVENANCE = ("fitted on simulated-instrument out-of-fold predictions of the dev split, "
                          "docs/experiments/issue13/RESULTS.md (section 3; 1.76-1.80 over seeds 0/1/2)")
BORDER_MARGIN = 0.2  # calibrated top-two margin below which an S/Other or C/X answer is flagged
CX_SLOPE_BAND_PER_UM = 0.10  # the typical instrument slope difference (RESULTS.md section 1)


def border_rule(data: SmassData) -> dict:
    """The border flag's rule (fixed in advance, docs/experiments/issue13/RESULTS.md section 3), with the
    C|X slope boundary = midpoint of the C and X median slopes of the training spectra."""
    from stream.scoring.calibration import normalised_slope

    slopes = np.array([normalised_slope(row) for row in data.features])
    c, x = GROUP_NAMES.index("C"), GROUP_NAMES.index("X")
    boundary = 0.5 * (np.median(slopes[data.group == c]) + np.median(slopes[data.group == x]))
    return {"pairs": [["S", "Other"], ["C", "X"]], "margin": BORDER_MARGIN, "bus_runner_up": True,
            "cx_slope_boundary_per_um": round(float(boundary), 4), "cx_slope_band_per_um": CX_SLOPE_BAND_PER_UM,
            "provenance": "docs/experiments/issue13/RESULTS.md section 3 (rule fixed before SMASS I was scored); "
                          "boundary from the training spectra"}


DEV_SPLIT_SEED = 12345  # the one stratified 80/20 development split of docs/experiments/smass-protocol.md


def development_split(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(development 80 %, held-out 20 %) row indices, stratified by main group, always the same split."""
    from sklearn.model_selection import train_test_split

    dev, held_out = train_test_split(np.arange(len(group)), test_size=0.2, stratify=group,
                                     random_state=DEV_SPLIT_SEED)
    return np.sort(dev), np.sort(held_out)


def override_config(cfg: ModelConfig, items: list[str]) -> ModelConfig:
    """``FIELD=VALUE`` strings applied to a ModelConfig, each value read as the field's type."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in {f.name for f in dataclasses.fields(cfg)}:
            raise SystemExit(f"--config {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(f.name for f in dataclasses.fields(cfg))}")
        current = getattr(cfg, key)
        if isinstance(current, bool):
            parsed = value.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(current, tuple):
            parsed = tuple(int(v) for v in value.split(","))
        else:
            parsed = type(current)(value)
        cfg = dataclasses.replace(cfg, **{key: parsed})
    return cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `skystream train smass`."""
    from stream.settings import Settings

    defaults = ModelConfig()
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="directory with smass2data.tar.gz and Bus.Taxonomy.txt (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {defaults.epochs})")
    parser.add_argument("--members", type=int, default=None,
                        help=f"CNNs averaged inside the one model (default {defaults.members})")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds; 0 skips CV (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, augmentation and CV split")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2: shared machine)")
    parser.add_argument("--registry", default=None, help="registry URI (default: Settings().registry, "
                        f"now {Settings().registry!r})")
    parser.add_argument("--smass1", type=Path, default=DEFAULT_SMASS1,
                        help="SMASS I archive (smass1data.tar.gz) scored as a cross-instrument check and recorded "
                             "in the metadata (metrics.smass1); skipped when missing (default: %(default)s)")
    parser.add_argument("--report", type=Path, default=None, help="also write the metrics report as JSON here")
    parser.add_argument("--bundle", action="store_true",
                        help="write the model into stream/bundled/registry (the shipped baseline) instead")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run for tests: ~160 spectra, 2 folds, 1 member, 3 epochs")
    parser.add_argument("--config", metavar="FIELD=VALUE", action="append", default=[],
                        help="override a ModelConfig field (repeatable; tuples as 16,32,32), for comparing protocols")
    parser.add_argument("--dev-split", action="store_true",
                        help="protocol selection: CV on the 80 %% development split only (see "
                             "docs/experiments/smass-protocol.md; use --folds 4), no final model, nothing published")
    parser.add_argument("--with-labels", metavar="SOURCE", default=None,
                        help="retrain with curated labels (task smass) from a broker host:port or a JSON-lines "
                             "dump (`skystream labels dump`): hold out a fixed evaluation set, train on the rest, "
                             "and publish only if the candidate is not worse than the registry's champion on it")
    parser.add_argument("--gate-tolerance", type=float, default=0.0,
                        help="with --with-labels: accepted loss in held-out main-group weighted F1 (default 0)")
    parser.add_argument("--keep-refused", action="store_true",
                        help="with --with-labels: store a refused candidate as an unpromoted version")


# --------------------------------------------------------------------------------------------
# The run: load → fit → export and verify → evaluate → publish
# --------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> TrainResult:
    """`skystream train smass`: every step in order; with ``--dev-split`` only load and evaluate."""
    started = time.perf_counter()
    cfg, folds, limit = protocol(args)
    problem = check_arguments(args)
    if problem:
        return TrainResult(TASK, "invalid_arguments", message=problem)
    loaded = load(args, limit, cfg)
    if args.dev_split:
        return evaluate_protocol(args, loaded, cfg, folds)
    model = fit(args, loaded, cfg)
    exported = export_and_verify(model, loaded.data)
    if not exported.agrees:
        return TrainResult(TASK, "export_mismatch", {"onnx_vs_keras": exported.check},
                           message="ONNX and Keras disagree on a class: not publishing")
    evaluation = evaluate(args, loaded, cfg, folds, exported)
    return publish(args, loaded, cfg, exported, evaluation, time.perf_counter() - started)


@dataclass
class Loaded:
    """The training data of a run, the fixed evaluation set held out of it, and the curated labels."""

    data: SmassData  # what fit and CV use (without the evaluation set's spectra)
    variants: dict[str, np.ndarray]  # the spectra as other surveys would deliver them (survey_variants)
    feedback: Merged | None = None  # with --with-labels
    eval_set: EvalSet | None = None  # with --with-labels: held out of training and CV, scored by the gate
    variant_masks: dict[str, np.ndarray] = field(default_factory=dict)  # coverage of each variant's rows


@dataclass
class Exported:
    """The ONNX model and how it compares with the Keras model it came from."""

    onnx_bytes: bytes
    check: dict  # training.keras_export.compare_onnx_keras on every training spectrum
    agrees: bool  # the same class for every spectrum: safe to publish


@dataclass
class Evaluation:
    """The protocol's CV (None with --folds < 2) and the exported model's outputs on its training spectra."""

    cv: dict | None
    train_pred: np.ndarray  # main-group probabilities, from onnxruntime


def _log(msg: str) -> None:
    print(msg, flush=True)


def protocol(args: argparse.Namespace) -> tuple[ModelConfig, int, int | None]:
    """(model config, CV folds, spectra limit) from the flags: --quick, --epochs, --members, --config."""
    cfg = ModelConfig()
    folds = args.folds
    limit = None
    if args.quick:
        cfg = dataclasses.replace(cfg, members=1, epochs=3)
        folds, limit = min(folds, 2), 160
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    if args.members is not None:
        cfg = dataclasses.replace(cfg, members=args.members)
    return override_config(cfg, args.config), folds, limit


def check_arguments(args: argparse.Namespace) -> str | None:
    """Why the flags contradict each other, or None."""
    if args.dev_split and (args.with_labels or args.bundle):
        return "--dev-split compares protocols on the development split; it publishes nothing"
    if args.with_labels and args.bundle:
        return "--with-labels gates against a registry's champion; it does not write the bundled baseline"
    return None


def load(args: argparse.Namespace, limit: int | None, cfg: ModelConfig | None = None) -> Loaded:
    """The labelled spectra (curated labels applied with --with-labels, which also holds out the gate's
    evaluation set) and, unless --dev-split, their other-survey variants."""
    feedback = None
    if args.with_labels:
        from training.feedback import load_labels, merge_smass

        taxonomy = parse_taxonomy((args.data_dir / "Bus.Taxonomy.txt").read_text(encoding="latin-1"))
        have_spectrum = {spectra.object_name(base) for base, _ in iter_tar_spectra(args.data_dir / "smass2data.tar.gz")}
        feedback = merge_smass(load_labels(args.with_labels, "smass"), taxonomy, have_spectrum,
                               known_classes=BUS_CLASS_NAMES)
        _log(feedback.summary())

    data = load_smass(args.data_dir, limit=limit, classes=feedback.data if feedback else None)
    counts = ", ".join(f"{n} {int(np.sum(data.group == i))}" for i, n in enumerate(GROUP_NAMES))
    _log(f"SMASSII: {len(data.objects)} labelled spectra ({counts}); skipped: "
         f"{ {k: len(v) for k, v in data.skipped.items()} or 'none'}")
    eval_set = None
    if feedback is not None:
        from training.gate import make_eval_set

        # Fixed by object identity, so the same objects stay out of every retrained model.
        # Both inputs: the gate feeds each model (champion, candidate) the ones it takes.
        eval_set, train_rows = make_eval_set({INPUT_NAME: data.features, COVERAGE_NAME: coverage_masks(data)},
                                             data.group, data.objects,
                                             name="SMASSII held-out objects, curated labels applied")
        data = _subset(data, np.flatnonzero(train_rows))
        _log(f"evaluation set: {len(eval_set)} spectra held out of training and CV (sha256 {eval_set.sha256[:12]}); "
             f"{len(data.objects)} left for training")
    masked = (cfg or ModelConfig()).coverage_mask
    variant_masks: dict[str, np.ndarray] = {}
    # Variants as the stream would score them: with the coverage rule of this kind of model.
    variants = {} if args.dev_split else survey_variants(
        data, load_smass(args.data_dir, smoothed=True),
        min_coverage=spectra.MIN_COVERAGE_MASKED if masked else None, masks=variant_masks)
    return Loaded(data, variants, feedback, eval_set, variant_masks)


def fit(args: argparse.Namespace, loaded: Loaded, cfg: ModelConfig):
    """The final Keras serving model, trained on every loaded spectrum."""
    data = loaded.data
    _log(f"model: {cfg}")
    _log(f"final model on all {len(data.objects)} spectra")
    sigma = np.stack([grid_sigma(s, v) for s, v in zip(data.spectra, data.features, strict=True)])
    return train_model(cfg, data.features, sigma, data.group, data.bus, seed=args.seed, threads=args.threads,
                       label="  final ", log=_log, mask=coverage_masks(data))


def export_and_verify(model, data: SmassData) -> Exported:
    """ONNX bytes of the model, checked against Keras on every training spectrum."""
    from training.keras_export import compare_onnx_keras, export_onnx

    shapes = {INPUT_NAME: (None, data.features.shape[1])}
    feed = {INPUT_NAME: data.features}
    if len(model.inputs) > 1:  # ModelConfig.coverage_mask
        shapes[COVERAGE_NAME] = (None, data.features.shape[1])
        feed[COVERAGE_NAME] = coverage_masks(data)
    onnx_bytes = export_onnx(model, shapes)
    check = compare_onnx_keras(model, onnx_bytes, feed)
    _log(f"ONNX vs Keras on {check['n_samples']} spectra: max |diff| {check['max_abs_diff']:.2e}, "
         f"argmax agreement {check['argmax_agreement']:.4f}; ONNX {len(onnx_bytes) / 1024:.0f} KiB")
    return Exported(onnx_bytes, check, agrees=check["argmax_agreement"] >= 1.0)


def evaluate(args: argparse.Namespace, loaded: Loaded, cfg: ModelConfig, folds: int,
             exported: Exported) -> Evaluation:
    """k-fold CV of the protocol (out-of-fold, with the other-survey variants), and the exported model
    on its training spectra (for the training-set scores and the drift reference)."""
    import onnxruntime as ort

    cv = None
    if folds >= 2:
        cv = cross_validate(loaded.data, cfg, folds, args.seed, args.threads, loaded.variants, log=_log,
                            variant_masks=loaded.variant_masks)
        mg, bus = cv["main_group"], cv["bus_class"]
        _log(f"CV main-group weighted F1 {mg['weighted_f1_mean']:.4f} ± {mg['weighted_f1_std']:.4f} "
             f"(pooled {mg['weighted_f1_pooled']:.4f}); Bus accuracy {bus['accuracy_pooled']:.4f}")
        for name, r in cv["other_surveys_simulated"].items():
            _log(f"  {name}: weighted F1 {r.get('weighted_f1', float('nan')):.4f} on {r['n_scored']} "
                 f"({r['n_rejected']} rejected)")
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: loaded.data.features}
    if cfg.coverage_mask:
        feed[COVERAGE_NAME] = coverage_masks(loaded.data)
    train_pred = session.run(None, feed)[0]
    return Evaluation(cv, train_pred)


def evaluate_protocol(args: argparse.Namespace, loaded: Loaded, cfg: ModelConfig, folds: int) -> TrainResult:
    """--dev-split: CV on the development 80 % only (the held-out 20 % stays untouched); nothing published."""
    data = loaded.data
    dev, held_out = development_split(data.group)
    _log(f"development split: {len(dev)} spectra ({len(held_out)} held out, untouched); model: {cfg}")
    cv = cross_validate(_subset(data, dev), cfg, folds, args.seed, args.threads, {}, log=_log)
    mg = cv["main_group"]
    _log(f"dev-split CV main-group weighted F1 {mg['weighted_f1_mean']:.4f} ± {mg['weighted_f1_std']:.4f} "
         f"(pooled {mg['weighted_f1_pooled']:.4f}); from the Bus head {mg['from_bus_head_accuracy']:.4f} accuracy")
    report = {"dev_split_cv": cv, "config": dataclasses.asdict(cfg)}
    return TrainResult(TASK, "not_published", report, report_path=_write_report(args.report, report),
                       message=f"dev-split CV main-group weighted F1 {mg['weighted_f1_pooled']:.4f} (pooled)")


def publish(args: argparse.Namespace, loaded: Loaded, cfg: ModelConfig, exported: Exported,
            evaluation: Evaluation, seconds: float) -> TrainResult:
    """Metadata, then the registry: through the promotion gate with --with-labels, else straight (or into
    the bundled baseline with --bundle); the report is written last, with the version."""
    from stream.models.registry import BUNDLED
    from stream.settings import Settings
    from training.keras_export import publish as publish_model

    metadata = build_metadata(loaded.data, cfg, args, exported.onnx_bytes, evaluation.cv, exported.check,
                              evaluation.train_pred, seconds)
    smass1 = getattr(args, "smass1", None)
    if smass1 and smass1.exists():
        metadata["metrics"]["smass1"] = evaluate_cross_survey(exported.onnx_bytes, metadata, smass1,
                                                              args.data_dir / "Bus.Taxonomy.txt")
    report = {"cv": evaluation.cv, "onnx_vs_keras": exported.check, "training_seconds": round(seconds, 1),
              "smass1": metadata["metrics"].get("smass1")}
    extra = {"config": dataclasses.asdict(cfg), "onnx_bytes": len(exported.onnx_bytes)}
    if loaded.feedback is not None:
        from training.gate import argmax_metrics, gate_and_publish, gate_metadata

        metadata["feedback"] = loaded.feedback.report
        metadata["training_data"]["held_out"] = loaded.eval_set.describe()
        decision, version, uri = gate_and_publish(
            args.registry or Settings().registry, TASK, MODEL_NAME, exported.onnx_bytes, metadata, loaded.eval_set,
            argmax_metrics(OUTPUT_GROUP), "weighted_f1", tolerance=args.gate_tolerance,
            keep_refused=args.keep_refused, log=_log)
        report.update(registry=uri, version=version, **extra, gate=gate_metadata(decision),
                      feedback=loaded.feedback.report)
        status = "published" if decision.accepted else "refused"
        return TrainResult(TASK, status, report, version, uri, decision, _write_report(args.report, report),
                           message=decision.reason)
    registry = BUNDLED if args.bundle else (args.registry or Settings().registry)
    uri, version = publish_model(registry, TASK, exported.onnx_bytes, metadata, bundled=args.bundle)
    report.update(registry=uri, version=version, **extra)
    return TrainResult(TASK, "published", report, version, uri, report_path=_write_report(args.report, report),
                       message=f"{TASK} v{version} ({MODEL_NAME}) to {uri} in {seconds:.0f} s")


def evaluate_cross_survey(onnx_bytes: bytes, metadata: dict, archive: Path, taxonomy_path: Path) -> dict:
    """SMASS I (another instrument) scored through the stream's reader and predictor with this model and
    its metadata (coverage input, calibration, border flag): training/cross_survey.py."""
    from stream.models.registry import ModelVersion
    from stream.scoring.onnx_model import OnnxModel
    from training.cross_survey import evaluate_smass1

    result = evaluate_smass1(OnnxModel(ModelVersion(TASK, "candidate", onnx_bytes, metadata)), archive, taxonomy_path)
    _log(f"SMASS I (other instrument): weighted F1 {result['weighted_f1']:.4f} on {result['n_scored']} "
         f"({result['n_rejected']} rejected); ECE {result['ece_top_class']:.3f}; "
         f"flagged {result['border_flagged_fraction']:.0%}")
    return result


def _write_report(path: Path | None, report: dict) -> Path | None:
    """The run's report as JSON at ``--report`` (nothing without it); returns where it was written."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
    return path
