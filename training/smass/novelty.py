"""The novelty head: how unlike the SMASSII spectra a spectrum is, as a conformal p-value.

Model (the asteroid-spectra tutorial's idea, made servable): a small dense autoencoder learns a 6-number
code of a spectrum's *shape*, and a Gaussian mixture fitted on the codes of the training spectra says how
likely a code is. The autoencoder reads the spectrum divided by its own least-squares line over the
covered grid points (``SlopeNormalise``), so a slope error between instruments, the most common survey
difference, does not make a spectrum novel; it is trained on the spectra augmented as the classifier is
(noise, crops, curvature and bumps: training/smass/augmentation.py), so instrument-like distortions are
learnt as ordinary.

Cross-conformal calibration (Vovk 2015): the SMASSII spectra are split into ``folds``; fold k's
autoencoder and mixture are fitted on the other folds and score fold k's spectra (their negative
log-likelihoods are its calibration scores). All ``folds`` pairs are served, each scoring every new
spectrum, and the p-value compares each score with its own fold's calibration scores
(stream/scoring/novelty.py). A p-value below α happens for about a fraction α of SMASSII-like
spectra, so α is the false-alarm rate of the ``novel-spectrum`` alert.

The head is one ONNX graph with the classifier's inputs (``reflectance``, ``coverage``) and one output,
``novelty_score`` (n, folds); ``training.keras_export.merge_outputs`` adds it to the classifier's graph, so a
model version stays one file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stream.features import spectra
from stream.scoring.novelty import OUTPUT_NAME, conformal_p_values
from training.smass.augmentation import augment_with_mask
from training.smass.model import COVERAGE_NAME, INPUT_NAME, ModelConfig

__all__ = ["QUICK", "NoveltyConfig", "NoveltyHead", "fit_novelty", "novelty_metadata"]

SHAPE_CENTRE_UM = 0.68  # the least-squares line is fitted as a + b·(λ - this): the grid's middle
SHAPE_SCALE = 10.0  # (r / line - 1) × this: residuals of a few % to about unit scale
SLOPE_SCALE = 2.0  # relative slope per µm (C ~0, S ~0.5, D ~1) × this: about the codes' scale


@dataclass(frozen=True)
class NoveltyConfig:
    """The head's protocol (small on purpose: 1,341 spectra of 97 points)."""

    folds: int = 5  # cross-conformal folds = served autoencoder/mixture pairs
    hidden: int = 48
    latent: int = 6
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    copies: int = 10  # augmented copies of each training spectrum (the classifier's augmentation)
    components: int = 8  # Gaussian mixture, full covariances
    reg_covar: float = 1e-4  # added to the mixture's covariances: no component collapses on a few codes
    # The mixture can also read the continuum slope (`--slope-feature`): a straight line rising 2 per µm, which
    # no asteroid has, is then novel (p 0.0007 instead of 0.998), but so are twice as many spectra of other
    # surveys (Mahlke set below 0.01: 7.1 % instead of 3.5 %; README, "Novelty"). Off: the issue asks that
    # instrument differences do not flood the alert.
    slope_feature: bool = False


QUICK = NoveltyConfig(folds=2, epochs=2, copies=2, components=2)


def _layers():
    """The Keras layers of the head, defined on first use (TensorFlow loads only in training).

    Every sum is a product with a constant matrix, not a ReduceSum: onnxruntime's ReduceSum adds a row
    in a different order for a batch of one than for a larger batch (scores moved by up to 1e-4), MatMul
    does not. What is left is the last Log (vectorised or not by batch size: ~1e-8); the p-value counts
    calibration scores above the score, so it is the same alone or in any batch unless one lies that close
    (tests/test_spectra.py checks a batch bit for bit)."""
    import keras
    from keras import ops

    class SlopeNormalise(keras.layers.Layer):
        """(reflectance, coverage) -> [shape, slope]: shape = (reflectance / its least-squares line over the
        covered points - 1) × SHAPE_SCALE, 0 where not covered (the bands without the continuum); slope =
        the line's slope relative to its value at SHAPE_CENTRE_UM, per µm, × SLOPE_SCALE (n, 1)."""

        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            lam = (spectra.WAVELENGTH_GRID_UM - SHAPE_CENTRE_UM).astype(np.float32)
            self.lam = lam[None, :]
            self.powers = np.stack([np.ones_like(lam), lam, lam * lam], axis=1)  # (grid, 3): Σ m·λ^j by one product

        def call(self, inputs):
            r, m = inputs
            lam, powers = ops.convert_to_tensor(self.lam), ops.convert_to_tensor(self.powers)
            s = ops.matmul(m, powers)  # Σm, Σmλ, Σmλ²
            t = ops.matmul(m * r, powers)  # Σmr, Σmλr, (unused)
            s0, s1, s2, t0, t1 = s[:, 0:1], s[:, 1:2], s[:, 2:3], t[:, 0:1], t[:, 1:2]
            det = ops.maximum(s0 * s2 - s1 * s1, 1e-6)
            a, b = (s2 * t0 - s1 * t1) / det, (s0 * t1 - s1 * t0) / det
            line = a + b * lam
            return [m * (r / ops.maximum(line, 1e-3) - 1.0) * SHAPE_SCALE, b / ops.maximum(a, 1e-3) * SLOPE_SCALE]

    class MixtureScore(keras.layers.Layer):
        """code -> -log p(code) under a fitted full-covariance Gaussian mixture (constants, not trained)."""

        def __init__(self, weights, means, precisions_cholesky, **kwargs) -> None:
            super().__init__(**kwargs)
            k, d = means.shape
            self.k, self.d = k, d
            # (z - μ_k) L_k for every k in one product: z @ [L_1 … L_K] - [μ_1 L_1 … μ_K L_K]
            self.l_cat = np.concatenate(list(precisions_cholesky), axis=1).astype(np.float32)  # (d, k·d)
            self.offset = np.einsum("kd,kde->ke", means, precisions_cholesky).reshape(1, k * d).astype(np.float32)
            log_det = np.log(np.diagonal(precisions_cholesky, axis1=1, axis2=2)).sum(axis=1)
            self.constant = (np.log(weights) + log_det - 0.5 * d * np.log(2 * np.pi)).astype(np.float32)[None, :]
            self.blocks = np.kron(np.eye(k), np.ones((d, 1))).astype(np.float32)  # (k·d, k): sums each block of d
            self.ones = np.ones((k, 1), np.float32)

        def call(self, z):
            y = ops.matmul(z, ops.convert_to_tensor(self.l_cat)) - ops.convert_to_tensor(self.offset)
            log_p = ops.convert_to_tensor(self.constant) - 0.5 * ops.matmul(y * y, ops.convert_to_tensor(self.blocks))
            top = ops.max(log_p, axis=1, keepdims=True)  # exact in any order
            return -(top + ops.log(ops.matmul(ops.exp(log_p - top), ops.convert_to_tensor(self.ones))))

    return keras, SlopeNormalise, MixtureScore


@dataclass
class NoveltyHead:
    """The fitted head: one (encoder, mixture) pair per fold and each fold's calibration scores."""

    encoders: list  # Keras models: normalised shape -> code
    mixtures: list  # sklearn GaussianMixture, fitted on the codes
    calibration: list[np.ndarray]  # fold k: scores of its held-out spectra by pair k (sorted)
    fold_of: np.ndarray  # (n,) the fold each training spectrum was held out in
    out_of_fold: np.ndarray  # (n,) each training spectrum's score by the pair that did not see it
    config: NoveltyConfig

    def keras_model(self):
        """The serving graph: (reflectance, coverage) -> novelty_score (n, folds)."""
        keras, slope_normalise, mixture_score = _layers()
        length = len(spectra.WAVELENGTH_GRID_UM)
        r = keras.Input((length,), name=INPUT_NAME)
        m = keras.Input((length,), name=COVERAGE_NAME)
        x, slope = slope_normalise()([r, m])

        def features(enc):
            return keras.layers.Concatenate()([enc(x), slope]) if self.config.slope_feature else enc(x)

        scores = [mixture_score(g.weights_, g.means_, g.precisions_cholesky_)(features(enc))
                  for enc, g in zip(self.encoders, self.mixtures, strict=True)]
        out = keras.layers.Concatenate(name=OUTPUT_NAME)(scores)
        return keras.Model([r, m], out)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """Conformal p-values of (n, folds) scores, exactly as the stream computes them."""
        return conformal_p_values(scores, self.calibration)


def _encoder_and_autoencoder(cfg: NoveltyConfig, length: int, name: str):
    """(encoder: shape -> code, trainer: (reflectance, coverage) -> reconstruction - shape)."""
    keras, slope_normalise, _ = _layers()
    from keras import layers

    shape_in = keras.Input((length,))
    code = layers.Dense(cfg.latent, name="code")(layers.Dense(cfg.hidden, activation="relu")(shape_in))
    encoder = keras.Model(shape_in, code, name=name)  # unique: the serving graph holds one per fold
    decoder_in = keras.Input((cfg.latent,))
    decoder = keras.Model(decoder_in, layers.Dense(length)(layers.Dense(cfg.hidden, activation="relu")(decoder_in)))
    r, m = keras.Input((length,)), keras.Input((length,))
    x, _ = slope_normalise()([r, m])
    # The reconstruction is compared only where the spectrum has data (uncovered points are 0 by construction).
    residual = layers.Multiply()([layers.Subtract()([decoder(encoder(x)), x]), m])
    return encoder, keras.Model([r, m], residual)


def _codes(encoder, x: np.ndarray, mask: np.ndarray, cfg: NoveltyConfig) -> np.ndarray:
    """What the mixture reads: the codes of spectra (through the same normalisation layer as the serving
    graph), with the continuum slope when ``cfg.slope_feature``."""
    keras, slope_normalise, _ = _layers()
    r, m = keras.Input((x.shape[1],)), keras.Input((x.shape[1],))
    shape, slope = slope_normalise()([r, m])
    out = keras.layers.Concatenate()([encoder(shape), slope]) if cfg.slope_feature else encoder(shape)
    return keras.Model([r, m], out).predict([x, mask], verbose=0, batch_size=1024)


def _fit_pair(cfg: NoveltyConfig, x: np.ndarray, sigma: np.ndarray, mask: np.ndarray, seed: int, threads: int,
              name: str):
    """One autoencoder and mixture on (x, sigma, mask), reproducibly; the mixture is fitted on the codes
    of the augmented copies, so what augmentation does to a spectrum stays likely."""
    from sklearn.mixture import GaussianMixture

    from training.keras_export import configure_tensorflow

    configure_tensorflow(seed, threads)
    import keras

    rng = np.random.default_rng(seed)
    augmentation = ModelConfig()  # the classifier's distortions (noise, edge cuts, crops, curvature, bumps)
    copies = [augment_with_mask(x, sigma, rng, augmentation, mask) for _ in range(cfg.copies)]
    xa = np.concatenate([c[0] for c in copies])
    ma = np.concatenate([c[1] for c in copies])
    encoder, trainer = _encoder_and_autoencoder(cfg, x.shape[1], name)
    trainer.compile(keras.optimizers.Adam(cfg.learning_rate), "mse")
    trainer.fit([xa, ma], np.zeros_like(xa), epochs=cfg.epochs, batch_size=cfg.batch_size, shuffle=True, verbose=0)
    codes = np.concatenate([_codes(encoder, x, mask, cfg), _codes(encoder, xa, ma, cfg)])
    mixture = GaussianMixture(cfg.components, covariance_type="full", reg_covar=cfg.reg_covar, random_state=seed,
                              n_init=2).fit(codes)
    return encoder, mixture


def _score(encoder, mixture, x: np.ndarray, mask: np.ndarray, cfg: NoveltyConfig) -> np.ndarray:
    return -mixture.score_samples(_codes(encoder, x, mask, cfg))


def fit_novelty(x: np.ndarray, sigma: np.ndarray, mask: np.ndarray, seed: int = 0, threads: int = 2,
                cfg: NoveltyConfig | None = None, log=print) -> NoveltyHead:
    """Fit the head on the training spectra (features, per-point sigma, coverage), cross-conformally."""
    cfg = cfg or NoveltyConfig()
    fold_of = np.random.default_rng(seed).permutation(len(x)) % cfg.folds
    encoders, mixtures, calibration = [], [], []
    out_of_fold = np.empty(len(x))
    for k in range(cfg.folds):
        train, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        encoder, mixture = _fit_pair(cfg, x[train], sigma[train], mask[train], seed + k, threads, f"encoder_{k}")
        scores = _score(encoder, mixture, x[held], mask[held], cfg)
        out_of_fold[held] = scores
        encoders.append(encoder)
        mixtures.append(mixture)
        calibration.append(np.sort(scores))
        log(f"  novelty fold {k + 1}/{cfg.folds}: fitted on {len(train)}, calibration scores of {len(held)} "
            f"(median {np.median(scores):.2f})")
    return NoveltyHead(encoders, mixtures, calibration, fold_of, out_of_fold, cfg)


def novelty_metadata(head: NoveltyHead) -> dict:
    """The model metadata's ``novelty`` section: what the stream needs to turn scores into p-values."""
    return {
        "output_name": OUTPUT_NAME,
        "method": "cross-conformal p-value of a Gaussian-mixture negative log-likelihood of an autoencoder code "
                  "of the slope-normalised spectrum; one (autoencoder, mixture) pair per SMASSII fold",
        "calibration_scores": [np.round(c, 5).tolist() for c in head.calibration],
        "config": asdict(head.config),
    }
