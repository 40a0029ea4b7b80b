"""`skystream train tess`: the TESS transit triage/vetting CNN from Yu et al. 2019's labelled signals.

Data: the yu2019 TFRecords in ``DATA_DIR`` unless ``--data-dir`` says otherwise (origin: the public
Astronet-Triage repository, yuliang419/Astronet-Triage, ``tfrecord/``): 14,858 threshold-crossing
events of TESS sectors 1-5, each with a 201-bin global and 61-bin local view in the Astronet-Triage
convention (the same one stream/features/transits.py produces), its BLS period, duration and depth,
and a disposition: PC (planet candidate), EB (eclipsing binary), J (junk), O (other: 3 events, left out).

Model: AstroNet-style two-branch 1D CNN (Shallue & Vanderburg 2018; Yu et al. 2019), Keras
functional API: a deep branch on the global view, a shallow one on the local view, and the
scalars of stream.scoring.transit_predictor.scalar_features, joined by dense layers into three
logits (PC, EB, J). Trained on the train split with time-reversal and local-view stretch
augmentation. The exported model is ONE network read twice: its logits are averaged over each event
and its time reversal (both views reversed, inside the ONNX graph), then calibrated by two-stage
temperature scaling fitted on val (``calibrated_probabilities``). Each epoch the current weights,
their running average over the second half (SWA) and their exponential moving average (decay
0.999 per step) are candidates; val picks by the mean of triage and vetting average precision,
judged as shipped (flip-averaged, calibrated). The ONNX model takes ``global_view`` (N,201,1),
``local_view`` (N,61,1), ``scalars`` (N,3) and returns ``probabilities`` (N,3).
docs/experiments/tess-protocol.md has what each of these choices was measured to be worth.

A run is load → fit → export and verify → evaluate → publish (through the promotion gate with
``--with-labels``):

    skystream train tess [--epochs 40] [--registry DIR | --bundle | --no-publish] [--limit N] [--threads 1]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.features.transits import GLOBAL_BINS, LOCAL_BINS, normalise_view
from stream.scoring.transit_predictor import CLASSES, MODEL_NAME, SCALAR_FEATURES, scalar_features
from stream.settings import shared_data
from training.gate import add_gate_arguments
from training.reliability import ece_of, reliability
from training.result import TrainResult

if TYPE_CHECKING:
    from training.gate import GateDecision

log = logging.getLogger(__name__)

__all__ = [
    "DATA_DIR", "GATE_PRIMARY", "LABELS", "TASK", "Evaluation", "Exported", "Fitted", "Loaded", "WeightAverage",
    "add_arguments", "augment", "build_metadata", "build_model", "calibrated_probabilities", "check_arguments",
    "data_hash", "drift_reference", "evaluate", "export_and_verify", "fit",
    "fit_temperatures", "flip_averaged", "gate_metrics", "inputs_of", "load", "load_split", "metrics", "publish",
    "run", "selection_score", "serving_model", "shards",
]

TASK = "tess"
DATA_DIR = shared_data() / "tess" / "yu2019"
DATA_ORIGIN = "https://github.com/yuliang419/Astronet-Triage (astronet/tfrecord), Yu et al. 2019, AJ 158, 25"
BUNDLED_REGISTRY = Path(__file__).resolve().parents[1] / "stream" / "bundled" / "registry"
LABELS = {c: i for i, c in enumerate(CLASSES)}  # O (other) is left out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `skystream train tess`."""
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="directory with the yu2019 TFRecord shards")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--registry", help="registry to publish to (default: SKYSTREAM_REGISTRY)")
    where.add_argument("--bundle", action="store_true",
                       help="publish into stream/bundled/registry (the shipped baseline) instead")
    where.add_argument("--no-publish", action="store_true", help="train and evaluate only")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pc-weight", type=float, default=2.0,
                        help="loss weight of planet candidates (the rare class); undone in the exported model")
    parser.add_argument("--ema-decay", type=float, default=0.999,
                        help="per-step decay of the exponential moving average of the weights, a candidate "
                             "each epoch (0: off)")
    parser.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                        help="do not average the logits of each event and of its time reversal in the model")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train and val events (tests)")
    parser.add_argument("--report", type=Path, help="also write the metrics report (metrics, training, ONNX check) "
                        "as JSON here")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="write the training report here: loss curves, precision-recall curves and reliability "
                             "diagrams of triage and vetting, with index.md (training/report.py)")
    add_gate_arguments(parser, "tess", "the relabelled val split (the labels apply to train and val)",
                       "the mean of triage and vetting average precision on val")


# -- data ----------------------------------------------------------------------------------------
def data_hash(paths: list[Path]) -> str:
    """sha256 over the shards' names and contents (order-independent)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def shards(data_dir: Path, split: str) -> list[Path]:
    """The TFRecord shards of one split (``train`` or ``val``), sorted."""
    found = sorted(data_dir.glob(f"{split}-*"))
    if not found:
        raise SystemExit(f"no {split}-* TFRecord shards in {data_dir} (get them from {DATA_ORIGIN})")
    return found


def load_split(data_dir: Path, split: str, limit: int = 0) -> dict[str, np.ndarray]:
    """Views, scalars and labels of one split (events labelled O are dropped)."""
    import tensorflow as tf

    spec = {
        "global_view": tf.io.FixedLenFeature([GLOBAL_BINS], tf.float32),
        "local_view": tf.io.FixedLenFeature([LOCAL_BINS], tf.float32),
        "Period": tf.io.FixedLenFeature([], tf.float32),
        "Duration": tf.io.FixedLenFeature([], tf.float32),  # days
        "Transit_Depth": tf.io.FixedLenFeature([], tf.float32),  # ppm
        "SN": tf.io.FixedLenFeature([], tf.float32),
        "tic_id": tf.io.FixedLenFeature([], tf.int64),
        "Disposition": tf.io.FixedLenFeature([], tf.string),
    }
    ds = tf.data.TFRecordDataset([str(p) for p in shards(data_dir, split)]).map(
        lambda r: tf.io.parse_single_example(r, spec))
    rows: dict[str, list[Any]] = {k: [] for k in spec}
    for ex in ds.as_numpy_iterator():
        label = ex["Disposition"].decode()
        if label not in LABELS:
            continue
        for k in spec:
            rows[k].append(label if k == "Disposition" else ex[k])
        if limit and len(rows["tic_id"]) >= limit:
            break
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["label"] = np.array([LABELS[d] for d in out["Disposition"]], dtype=np.int64)
    out["duration_hours"] = out["Duration"].astype(np.float64) * 24.0
    out["scalars"] = scalar_features(out["Period"], out["duration_hours"], out["Transit_Depth"])
    return out


def inputs_of(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model inputs (views with a channel axis, scalars) of a loaded split, as float32."""
    return {
        "global_view": d["global_view"].astype(np.float32)[..., None],
        "local_view": d["local_view"].astype(np.float32)[..., None],
        "scalars": d["scalars"].astype(np.float32),
    }


def augment(x: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random variations the stream's views will show and the training views do not.

    Both views: time reversal (half the events) and a little white noise (0.03 of the depth).
    Local view: stretched by 0.8-1.2 and shifted by up to 1.5 bins, for a duration estimate off
    by up to 20 % (our BLS box runs ~10 % shorter than the 30-min-smeared QLP durations of the
    training views) and an epoch off by a few minutes.
    """
    g, loc = x["global_view"][..., 0].copy(), x["local_view"][..., 0].copy()
    flip = rng.random(len(g)) < 0.5
    g[flip], loc[flip] = g[flip, ::-1], loc[flip, ::-1]
    stretch = rng.uniform(0.8, 1.2, len(loc))
    shift = rng.uniform(-1.5, 1.5, len(loc))
    centre = np.arange(LOCAL_BINS) - (LOCAL_BINS - 1) / 2
    for i in range(len(loc)):
        loc[i] = normalise_view(np.interp(centre * stretch[i] + shift[i], centre, loc[i]))
    g += rng.normal(0.0, 0.03, g.shape)
    loc += rng.normal(0.0, 0.03, loc.shape)
    return {"global_view": g[..., None].astype(np.float32), "local_view": loc[..., None].astype(np.float32),
            "scalars": x["scalars"]}


# -- model ---------------------------------------------------------------------------------------
def build_model(scalar_stats: tuple[list[float], list[float]]) -> Any:
    """Two-branch 1D CNN returning logits (PC, EB, J); scalars standardised with the train mean/variance."""
    n_scalars = len(scalar_stats[0])
    import keras
    from keras import layers

    def branch(x: Any, filters: tuple[int, ...], pool: int, name: str) -> Any:
        """A stack of convolution blocks over one view, flattened."""
        for i, f in enumerate(filters):
            x = layers.Conv1D(f, 5, padding="same", activation="relu", name=f"{name}_conv{i}a")(x)
            x = layers.Conv1D(f, 5, padding="same", activation="relu", name=f"{name}_conv{i}b")(x)
            x = layers.MaxPooling1D(pool, strides=2, name=f"{name}_pool{i}")(x)
        return layers.Flatten(name=f"{name}_flat")(x)

    g_in = keras.Input((GLOBAL_BINS, 1), name="global_view")
    l_in = keras.Input((LOCAL_BINS, 1), name="local_view")
    s_in = keras.Input((n_scalars,), name="scalars")
    scalars = layers.Normalization(name="scalar_norm", mean=scalar_stats[0], variance=scalar_stats[1])(s_in)
    z = layers.Concatenate(name="join")([
        branch(g_in, (16, 32, 64, 128), 5, "global"),
        branch(l_in, (16, 32), 7, "local"),
        scalars,
    ])
    for i, units in enumerate((256, 128)):
        z = layers.Dense(units, activation="relu", name=f"dense{i}")(z)
        z = layers.Dropout(0.3, name=f"dropout{i}")(z)
    logits = layers.Dense(len(CLASSES), name="logits")(z)
    return keras.Model([g_in, l_in, s_in], logits, name="tess_triage_logits")


def flip_averaged(logit_model: Any) -> Any:
    """The logit model averaged over each event and its time reversal (both views reversed).

    Training augments with time reversal, so both orientations are the same signal to the model;
    averaging them inside the graph is one model that reads each event twice."""
    import keras
    from keras import layers

    inputs = [keras.Input(t.shape[1:], name=t.name) for t in logit_model.inputs]
    g, loc, s = inputs
    reverse = {name: layers.Lambda(lambda t: keras.ops.flip(t, axis=1), name=f"reverse_{name}")
               for name in ("global", "local")}
    z = logit_model([g, loc, s])
    z_rev = logit_model([reverse["global"](g), reverse["local"](loc), s])
    avg = layers.Average(name="flip_average")([z, z_rev])
    return keras.Model(inputs, avg, name="tess_triage_logits_flip_averaged")


def serving_model(logit_model: Any, temperatures: tuple[float, float], flip_average: bool = False) -> Any:
    """The logit model (optionally flip-averaged) followed by ``calibrated_probabilities``."""
    import keras
    from keras import layers

    if flip_average:
        logit_model = flip_averaged(logit_model)
    t_pc, t_rest = (float(t) for t in temperatures)

    def calibrate(z: Any) -> Any:
        """Calibrated probabilities (PC, EB, J) from the logits, with the two fitted temperatures."""
        ops = keras.ops
        u = z[:, 0] - ops.logsumexp(z[:, 1:], axis=1)  # log-odds of PC against the rest
        p_pc, p_rest = ops.sigmoid(u / t_pc), ops.sigmoid(-u / t_pc)
        q = ops.sigmoid((z[:, 1] - z[:, 2]) / t_rest)  # EB against J among the rest
        return ops.stack([p_pc, p_rest * q, p_rest * (1.0 - q)], axis=1)

    probs = layers.Lambda(calibrate, name="probabilities")(logit_model.output)
    return keras.Model(logit_model.inputs, probs, name="tess_triage_cnn")


# -- evaluation ----------------------------------------------------------------------------------
def _pr_curve(y: np.ndarray, p: np.ndarray, points: int = 50) -> dict[str, list[float]]:
    """Precision and recall at up to ``points`` thresholds (enough to draw the curve in metadata)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p)
    keep = np.unique(np.linspace(0, len(precision) - 1, min(points, len(precision))).round().astype(int))
    return {"precision": precision[keep].round(4).tolist(), "recall": recall[keep].round(4).tolist()}


def metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Yu et al.'s two questions: triage (PC or EB vs J) and vetting (PC vs rest)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    triage_p, triage_y = probs[:, 0] + probs[:, 1], (labels != LABELS["J"]).astype(int)
    vet_p, vet_y = probs[:, 0], (labels == LABELS["PC"]).astype(int)
    out = {}
    for name, p, y in (("triage", triage_p, triage_y), ("vetting", vet_p, vet_y)):
        has_both = 0 < y.sum() < len(y)
        out[f"{name}_average_precision"] = float(average_precision_score(y, p)) if has_both else float("nan")
        out[f"{name}_roc_auc"] = float(roc_auc_score(y, p)) if has_both else float("nan")
        out[f"{name}_accuracy"] = float(np.mean((p >= 0.5) == y))
        out[f"{name}_reliability"] = reliability(p, y, bins=10)
        out[f"{name}_ece"] = ece_of(out[f"{name}_reliability"])
        if has_both:
            out[f"{name}_pr_curve"] = _pr_curve(y, p)
        out[f"{name}_positives"] = int(y.sum())
    out["n"] = int(len(labels))
    out["log_loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1))))
    return out


def calibrated_probabilities(logits: np.ndarray, temperatures: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Two-stage temperature scaling of (PC, EB, J) logits; with both temperatures 1 it is the softmax.

    P(PC) is the sigmoid of the PC-vs-rest log-odds over ``t_pc``, and the rest is split between EB
    and J by the sigmoid of their logit difference over ``t_rest``. Unlike one softmax temperature
    (which reorders P(PC) when it changes, since the log-sum-exp of the other logits is not
    linear in 1/T), P(PC) stays a monotone function of the uncalibrated one: calibration leaves
    the vetting ranking, hence its average precision, alone.
    """
    from scipy.special import expit

    t_pc, t_rest = temperatures
    z = np.asarray(logits, dtype=np.float64)
    u = z[:, 0] - np.logaddexp(z[:, 1], z[:, 2])
    q = expit((z[:, 1] - z[:, 2]) / t_rest)
    p_rest = expit(-u / t_pc)
    return np.stack([expit(u / t_pc), p_rest * q, p_rest * (1.0 - q)], axis=1)


def fit_temperatures(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(t_pc, t_rest) minimising the negative log-likelihood (Guo et al. 2017's temperature scaling,
    once per stage: the likelihood splits into the PC-vs-rest term and the EB-vs-J term of the rest)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_expit

    z = np.asarray(logits, dtype=np.float64)

    def fit(log_odds: np.ndarray, positive: np.ndarray) -> float:
        """The temperature minimising the negative log-likelihood of a binary split."""
        sign = np.where(positive, 1.0, -1.0)
        res = minimize_scalar(lambda log_t: -float(np.mean(log_expit(sign * log_odds / np.exp(log_t)))),
                              bounds=(np.log(0.25), np.log(8.0)), method="bounded")
        return float(np.exp(res.x))

    rest = labels != LABELS["PC"]
    t_pc = fit(z[:, 0] - np.logaddexp(z[:, 1], z[:, 2]), labels == LABELS["PC"])
    t_rest = fit((z[:, 1] - z[:, 2])[rest], labels[rest] == LABELS["EB"]) if rest.any() else 1.0
    return t_pc, t_rest


def selection_score(m: dict[str, float]) -> float:
    """What val picks the weights by: the mean of triage and vetting average precision."""
    return 0.5 * (m["triage_average_precision"] + m["vetting_average_precision"])


GATE_PRIMARY = "mean_average_precision"  # selection_score: what chose the epoch also decides promotion


def gate_metrics(outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """training.gate metric function: the val metrics of ``metrics`` (rates only) plus their selection score."""
    m = metrics(np.asarray(outputs["probabilities"]), labels)
    rates = {k: v for k, v in m.items() if not k.endswith("_positives") and k != "n"}
    return {GATE_PRIMARY: selection_score(m), **rates}


# -- drift reference -----------------------------------------------------------------------------
def drift_reference(train: dict[str, np.ndarray], val_probs: np.ndarray) -> dict[str, Any]:
    """PSI reference (stream.scoring.drift format) from the training signals and the val predictions.

    Only the features whose meaning is the same for the training signals (QLP's BLS on 30-min
    light curves) and the stream's (our BLS on SPOC light curves) are kept: period, depth and
    duration. SNR definitions and light-curve quality differ between the two, so they would
    report drift that is not there.
    """
    from stream.scoring.drift import build_reference

    records = [{
        "quality": {"robust_rms_ppm": 0.0, "n_valid": 1, "n_cadences": 1},
        "signals": [{"period_days": float(p), "snr": 0.0, "depth_ppm": float(d), "duration_hours": float(h)}],
    } for p, d, h in zip(train["Period"], train["Transit_Depth"], train["duration_hours"], strict=True)]
    labels = ["planet-candidate" if p[0] >= 0.5 else "astrophysical" if p[0] + p[1] >= 0.5 else "junk"
              for p in val_probs]
    ref = build_reference("lightcurve", records, labels)
    keep = {"log10_period_days", "log10_depth_ppm", "duration_hours"}
    ref["features"] = {k: v for k, v in ref["features"].items() if k in keep}
    ref["population"] = "yu2019 train signals (features); val predictions (classes)"
    return ref


# -- training ------------------------------------------------------------------------------------
_LOGGED = ("triage_average_precision", "triage_accuracy", "vetting_average_precision", "log_loss")


class WeightAverage:
    """Keras callback: an exponential moving average of the trainable weights, updated every step."""

    def __init__(self, model: Any, decay: float) -> None:
        import keras
        import tensorflow as tf

        class _Callback(keras.callbacks.Callback):
            def on_train_batch_end(cb, batch: int, logs: Any = None) -> None:  # noqa: N805
                """Update the weight average after each step."""
                self.update()

        self.model, self.decay = model, decay
        self.variables = list(model.trainable_variables)
        self.averages = [tf.Variable(v.value) for v in self.variables]
        self.callback = _Callback()

        self.update = tf.function(self._update, autograph=False)  # no source reading at trace time

    def _update(self) -> None:
        for a, v in zip(self.averages, self.variables, strict=True):
            a.assign_sub((1.0 - self.decay) * (a - v.value))

    def weights(self) -> list[np.ndarray]:
        """All model weights (get_weights order) with the trainable ones replaced by their averages."""
        avg = {id(v): a.numpy() for v, a in zip(self.variables, self.averages, strict=True)}
        return [avg.get(id(v), np.asarray(v.value)) for v in self.model.weights]


# -- the run: load → fit → export and verify → evaluate → publish --------------------------------
def run(args: argparse.Namespace) -> TrainResult:
    """`skystream train tess`: every step in order."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = check_arguments(args)
    if problem:
        return TrainResult(TASK, "invalid_arguments", message=problem)
    loaded = load(args)
    fitted = fit(args, loaded)
    exported = export_and_verify(args, loaded, fitted)
    if exported.check["max_abs_diff"] > ONNX_TOLERANCE:
        return TrainResult(TASK, "export_mismatch", {"onnx_check": exported.check},
                           message=f"ONNX and Keras disagree: max |diff| {exported.check['max_abs_diff']:.2e}")
    evaluation = evaluate(loaded, fitted, exported)
    return publish(args, loaded, fitted, exported, evaluation)


ONNX_TOLERANCE = 1e-4  # largest |ONNX - Keras| probability accepted for publication


@dataclass
class Loaded:
    """The train and val splits (curated labels applied with --with-labels) and the model inputs of each."""

    train: dict[str, np.ndarray]  # load_split's columns
    val: dict[str, np.ndarray]
    x_train: dict[str, np.ndarray]  # inputs_of(train)
    x_val: dict[str, np.ndarray]
    feedback: dict[str, Any] | None = None  # with --with-labels: what the labels changed, per split

    @property
    def y_train(self) -> np.ndarray:
        """Labels of the train split (index into CLASSES)."""
        return self.train["label"]

    @property
    def y_val(self) -> np.ndarray:
        """Labels of the val split (index into CLASSES)."""
        return self.val["label"]


@dataclass
class Fitted:
    """The chosen weights (PC loss weight undone in the logits) and their calibration on val."""

    logit_model: Any  # Keras: (PC, EB, J) logits
    reader: Any  # the logits as shipped: logit_model flip-averaged (or itself with --no-flip-average)
    temperatures: tuple[float, float]  # two-stage temperature scaling, fitted on val
    chosen_weights: str  # which candidate val picked, e.g. "epoch 35"
    history: list[dict[str, Any]]  # every candidate's val metrics
    val_logits: np.ndarray  # the reader's logits on val
    seconds: float  # training time


@dataclass
class Exported:
    """The serving model, its ONNX bytes, the ONNX-vs-Keras check and the smoke test for workers."""

    model: Any
    onnx_bytes: bytes
    check: dict[str, Any]
    smoke: dict[str, Any]


@dataclass
class Evaluation:
    """Metrics of the shipped model (calibrated) on val and train, and val uncalibrated."""

    val: dict[str, float]
    val_uncalibrated: dict[str, float]
    train: dict[str, float]
    val_probs: np.ndarray


def check_arguments(args: argparse.Namespace) -> str | None:
    """Why the flags contradict each other, or None."""
    if getattr(args, "with_labels", None) and args.bundle:
        return "--with-labels gates against a registry's champion; it does not write the bundled baseline"
    return None


def load(args: argparse.Namespace) -> Loaded:
    """Seeded TensorFlow on its thread budget, then the train and val splits (with --with-labels relabelled)."""
    from training.keras_export import configure_tensorflow

    # Before the first TFRecord is read: thread counts can only be set before TensorFlow's runtime starts.
    configure_tensorflow(args.seed, threads=args.threads)
    train_d = load_split(args.data_dir, "train", args.limit)
    val_d = load_split(args.data_dir, "val", args.limit)
    feedback = None
    if getattr(args, "with_labels", None):
        from training.feedback import load_labels, merge_tess

        labels = load_labels(args.with_labels, TASK)
        merged = {"train": merge_tess(labels, train_d), "val": merge_tess(labels, val_d)}
        for split, m in merged.items():
            print(f"{split}: {m.summary()}", flush=True)
        train_d, val_d = merged["train"].data, merged["val"].data
        feedback = {split: m.report for split, m in merged.items()}
    loaded = Loaded(train_d, val_d, inputs_of(train_d), inputs_of(val_d), feedback)
    log.info("train %d events %s, val %d events %s", len(loaded.y_train), np.bincount(loaded.y_train, minlength=3),
             len(loaded.y_val), np.bincount(loaded.y_val, minlength=3))
    return loaded


def fit(args: argparse.Namespace, loaded: Loaded) -> Fitted:
    """Train on the train split; each epoch's current, SWA and EMA weights are candidates, val picks
    (judged as shipped); then the PC loss weight is folded into the logits and the temperatures fitted."""
    import keras

    t0 = time.perf_counter()
    x_train, y_train, x_val, y_val = loaded.x_train, loaded.y_train, loaded.x_val, loaded.y_val
    stats = (x_train["scalars"].mean(axis=0).tolist(), x_train["scalars"].var(axis=0).tolist())
    model = build_model(stats)
    steps = args.epochs * int(np.ceil(len(y_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps, alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(args.seed)
    # Planet candidates weigh more in the loss; that multiplies their odds by pc_weight, so the
    # PC logit is lowered by log(pc_weight) wherever probabilities are read (and in the export).
    sample_weight = np.where(y_train == LABELS["PC"], args.pc_weight, 1.0)
    offset = np.array([-np.log(args.pc_weight), 0.0, 0.0])
    # Logits as shipped: the flip-averaged wrapper shares the model's layers, so it reads whatever
    # weights are set on the model.
    reader = flip_averaged(model) if args.flip_average else model
    ema = WeightAverage(model, args.ema_decay) if args.ema_decay > 0 else None
    best: tuple[float, str, list[np.ndarray]] | None = None
    history = []
    # Stochastic weight averaging (Izmailov et al. 2018) over the second half of training: one
    # model with much of an ensemble's benefit. Each epoch the current, the averaged and the
    # exponentially averaged weights are candidates; val picks.
    swa: list[np.ndarray] | None = None
    swa_count = 0
    swa_start = args.epochs // 2
    for epoch in range(args.epochs):
        hist = model.fit(augment(x_train, rng), y_train, sample_weight=sample_weight, batch_size=args.batch_size,
                         epochs=1, shuffle=True, verbose=0, callbacks=[ema.callback] if ema else None)
        current = model.get_weights()
        candidates = [(f"epoch {epoch + 1}", current)]
        if epoch >= swa_start:
            swa_count += 1
            swa = current if swa is None else [a + (w - a) / swa_count for a, w in zip(swa, current, strict=True)]
            candidates.append((f"average of epochs {swa_start + 1}-{epoch + 1}", swa))
        if ema is not None:
            candidates.append((f"exponential average at epoch {epoch + 1}", ema.weights()))
        for label, weights in candidates:
            model.set_weights(weights)
            # Judged as shipped: flip-averaged if so, calibrated with its own temperatures.
            logits = reader.predict(x_val, batch_size=512, verbose=0) + offset
            m = metrics(calibrated_probabilities(logits, fit_temperatures(logits, y_val)), y_val)
            history.append({"weights": label, "loss": round(float(hist.history["loss"][-1]), 4),
                            **{k: round(m[k], 4) for k in _LOGGED}})
            log.info("%s", history[-1])
            score = selection_score(m)
            if best is None or score > best[0]:
                best = (score, label, [w.copy() for w in weights])
        model.set_weights(current)
    assert best is not None
    model.set_weights(best[2])
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel, bias + offset.astype(bias.dtype)])
    val_logits = reader.predict(x_val, batch_size=512, verbose=0)
    temperatures = fit_temperatures(val_logits, y_val)
    return Fitted(model, reader, temperatures, best[1], history, val_logits, time.perf_counter() - t0)


def export_and_verify(args: argparse.Namespace, loaded: Loaded, fitted: Fitted) -> Exported:
    """The serving model (flip-averaged, calibrated) as ONNX, compared with Keras on val, with a smoke test."""
    from stream.models.hot_swap import make_smoke_test
    from training.keras_export import compare_onnx_keras, export_onnx

    model = serving_model(fitted.logit_model, fitted.temperatures, flip_average=args.flip_average)
    onnx_bytes = export_onnx(model, {"global_view": (None, GLOBAL_BINS, 1), "local_view": (None, LOCAL_BINS, 1),
                                     "scalars": (None, len(SCALAR_FEATURES))})
    check = compare_onnx_keras(model, onnx_bytes, loaded.x_val)
    # Reference inputs and outputs a worker checks before serving this version (stream.models.hot_swap):
    # two val events of each class.
    labels = loaded.y_val
    pick = np.concatenate([np.flatnonzero(labels == k)[:2] for k in range(len(CLASSES))])
    smoke = make_smoke_test(onnx_bytes, {k: v[pick] for k, v in loaded.x_val.items()})
    return Exported(model, onnx_bytes, check, smoke)


def evaluate(loaded: Loaded, fitted: Fitted, exported: Exported) -> Evaluation:
    """Val (calibrated and not) and train metrics of the model as shipped; prints a JSON summary."""
    val_uncal = metrics(calibrated_probabilities(fitted.val_logits), loaded.y_val)
    val_probs = calibrated_probabilities(fitted.val_logits, fitted.temperatures)
    val_metrics = metrics(val_probs, loaded.y_val)
    train_logits = fitted.reader.predict(loaded.x_train, batch_size=512, verbose=0)
    train_metrics = metrics(calibrated_probabilities(train_logits, fitted.temperatures), loaded.y_train)
    print(json.dumps({"val": val_metrics, "chosen_weights": fitted.chosen_weights,
                      "temperatures": fitted.temperatures, "train_seconds": round(fitted.seconds, 1),
                      "onnx_max_abs_diff": exported.check["max_abs_diff"],
                      "onnx_bytes": len(exported.onnx_bytes)}, indent=1))
    return Evaluation(val_metrics, val_uncal, train_metrics, val_probs)


def build_metadata(args: argparse.Namespace, loaded: Loaded, fitted: Fitted, exported: Exported,
                   evaluation: Evaluation) -> dict[str, Any]:
    """The registry metadata: classes, I/O, views, preprocessing, calibration, metrics, training settings
    and history, data provenance, ONNX check, smoke test, drift reference, code and library versions."""
    from stream.features.transits import DEFAULT_CONFIG
    from training.keras_export import code_version, library_versions, onnx_io

    all_shards = shards(args.data_dir, "train") + shards(args.data_dir, "val")
    return {
        "name": MODEL_NAME,
        "description": "AstroNet-style two-branch 1D CNN: TESS transit triage (PC or EB vs junk) and "
                       "vetting (PC vs rest), logits averaged over each event and its time reversal, "
                       "calibrated probabilities of PC, EB, J (two-stage temperature scaling)",
        "classes": list(CLASSES),
        "class_semantics": {
            "PC": "planet candidate", "EB": "eclipsing binary", "J": "junk (instrumental or noise)",
            "triage_probability": "P(PC) + P(EB): astrophysical signal",
            "planet_probability": "P(PC): planet candidate",
        },
        "io": onnx_io(exported.onnx_bytes),
        "scalar_features": list(SCALAR_FEATURES),
        "views": {"global_bins": GLOBAL_BINS, "local_bins": LOCAL_BINS,
                  "convention": "Astronet-Triage (Yu et al. 2019): median bins, median 0, minimum -1"},
        "preprocessing": DEFAULT_CONFIG.describe(),
        "calibration": {"method": "two-stage temperature scaling fitted on val: P(PC) = sigmoid(PC-vs-rest "
                                  "log-odds / planet_temperature); EB and J share the rest by sigmoid((z_EB - z_J) "
                                  "/ eb_junk_temperature)",
                        "planet_temperature": fitted.temperatures[0],
                        "eb_junk_temperature": fitted.temperatures[1]},
        "metrics": {"val": evaluation.val, "val_uncalibrated": evaluation.val_uncalibrated,
                    "train": evaluation.train,
                    "note": "val chose the weights and fitted the temperatures; it is not an independent test"},
        "training": {
            "epochs": args.epochs, "chosen_weights": fitted.chosen_weights, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "seed": args.seed, "threads": args.threads,
            "pc_loss_weight": args.pc_weight,
            "seconds": round(fitted.seconds, 1), "n_train": len(loaded.y_train), "n_val": len(loaded.y_val),
            "class_counts": {"train": np.bincount(loaded.y_train, minlength=3).tolist(),
                             "val": np.bincount(loaded.y_val, minlength=3).tolist()},
            "limit": args.limit,
            "augmentation": "time reversal, noise 0.03; local view stretch 0.8-1.2 and shift +-1.5 bins",
            "swa": "weights averaged over the second half of the epochs are candidates too",
            "ema_decay": args.ema_decay,
            "flip_average": args.flip_average,
            "history": fitted.history,
        },
        # Provenance, not this machine's path: the dataset's name, origin and per-shard hashes.
        "data": {"name": args.data_dir.name, "sha256": data_hash(all_shards), "origin": DATA_ORIGIN,
                 "shards": [p.name for p in all_shards],
                 "shard_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in all_shards}},
        "onnx_check": exported.check,
        "smoke_test": exported.smoke,
        "drift_reference": drift_reference(loaded.train, evaluation.val_probs),
        "code_version": code_version(),
        "libraries": library_versions(),
    }


def publish(args: argparse.Namespace, loaded: Loaded, fitted: Fitted, exported: Exported,
            evaluation: Evaluation) -> TrainResult:
    """Metadata and the JSON report, then the registry: through the promotion gate with --with-labels,
    else straight (or into the bundled baseline with --bundle); nothing with --no-publish."""
    from stream.settings import Settings
    from training.keras_export import publish as publish_model

    metadata = build_metadata(args, loaded, fitted, exported, evaluation)
    report = {k: metadata[k] for k in ("metrics", "training", "onnx_check")}
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))
    done = dict(task=TASK, metrics=report, report_path=args.report)
    if getattr(args, "report_dir", None):
        from training.report import write_report_dir

        index = write_report_dir(args.report_dir, {**metadata, "task": TASK}, report)
        logging.getLogger(__name__).info("training report: %s", index)
    if loaded.feedback is not None:
        decision, version, uri = _publish_gated(args, exported.onnx_bytes, metadata, loaded)
        status = "not_published" if args.no_publish else "published" if decision.accepted else "refused"
        return TrainResult(status=status, version=version, registry=uri, gate=decision, message=decision.reason,
                           **done)
    if args.no_publish:
        return TrainResult(status="not_published", message="--no-publish: trained and evaluated only", **done)
    if args.bundle:
        uri, version = publish_model(BUNDLED_REGISTRY, TASK, exported.onnx_bytes, metadata, bundled=True)
    else:
        uri, version = publish_model(args.registry or Settings().registry, TASK, exported.onnx_bytes, metadata)
    return TrainResult(status="published", version=version, registry=uri,
                       message=f"{MODEL_NAME} as {TASK} v{version} in {uri}", **done)


def _publish_gated(args: argparse.Namespace, onnx_bytes: bytes, metadata: dict[str, Any],
                   loaded: Loaded) -> tuple[GateDecision, str | None, str]:
    """--with-labels: score candidate and champion on the relabelled val split; publish only if not worse
    (and not with --no-publish). Returns (decision, version written or None, registry URI)."""
    from stream.settings import Settings
    from training.gate import EvalSet, gate_and_publish

    eval_set = EvalSet(
        loaded.x_val, loaded.y_val, tuple(str(t) for t in loaded.val["tic_id"]),
        {"rule": "the yu2019 val split (val-* shards), curated labels applied", "limit": args.limit},
        name="yu2019 val split, curated labels applied")
    metadata["feedback"] = loaded.feedback
    metadata["metrics"] = dict(metadata["metrics"], gate_note=(
        "the gate's evaluation set is the val split, which also chose the weights and fitted the temperatures "
        "of the candidate: the candidate's score is optimistic, so the gate favours it slightly"))
    return gate_and_publish(
        args.registry or Settings().registry, TASK, MODEL_NAME, onnx_bytes, metadata, eval_set, gate_metrics,
        GATE_PRIMARY, tolerance=args.gate_tolerance, keep_refused=args.keep_refused, publish=not args.no_publish,
        log=lambda line: print(line, flush=True))
