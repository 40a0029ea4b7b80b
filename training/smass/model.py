"""The model: its protocol (``ModelConfig``) and the Keras architecture exported to ONNX."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from stream.features import spectra
from training.smass.labels import BUS_CLASS_NAMES, GROUP_NAMES, bus_to_group_matrix

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
