"""Fitting the model reproducibly (fixed seeds), and predicting with a fitted one."""

from __future__ import annotations

import sys

import numpy as np

from training.smass.augmentation import augment_with_mask
from training.smass.labels import BUS_CLASS_NAMES, GROUP_NAMES, bus_to_group_matrix
from training.smass.model import COVERAGE_NAME, INPUT_NAME, ModelConfig, build_model


def _bus_targets(bus: np.ndarray, group: np.ndarray) -> np.ndarray:
    """(n, Bus classes) targets of the Bus head: one-hot where the Bus class is known; where it is not
    (bus -1: spectra labelled in another taxonomy), spread evenly over the Bus classes of the main group."""
    targets = np.eye(len(BUS_CLASS_NAMES), dtype=np.float32)[np.maximum(bus, 0)]
    members = bus_to_group_matrix().T  # (groups, Bus classes): 1 where the class is in the group
    unknown = bus < 0
    targets[unknown] = (members / members.sum(axis=1, keepdims=True))[group[unknown]]
    return targets


def train_model(cfg: ModelConfig, x: np.ndarray, sigma: np.ndarray, group: np.ndarray, bus: np.ndarray,
                seed: int, threads: int = 2, label: str = "", log=print, mask: np.ndarray | None = None):
    """Train reproducibly; return the serving Keras model. Logs a summary per epoch (every 10th off a tty).

    ``bus``: index into BUS_CLASS_NAMES, or -1 where only the main group is known."""
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
    y_bus = _bus_targets(bus, group)[order]
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
