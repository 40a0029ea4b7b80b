"""`skystream train tess`: the TESS transit triage/vetting CNN from Yu et al. 2019's labelled signals.

Data: ../shared/data/tess/yu2019 (TFRecords; origin: the public Astronet-Triage repository,
yuliang419/Astronet-Triage, ``tfrecord/``): 14,858 threshold-crossing events of TESS sectors 1-5,
each with a 201-bin global and 61-bin local view in the Astronet-Triage convention (the same one
stream/transits.py produces), its BLS period, duration and depth, and a disposition: PC (planet
candidate), EB (eclipsing binary), J (junk), O (other: 3 events, left out).

Model: AstroNet-style two-branch 1D CNN (Shallue & Vanderburg 2018; Yu et al. 2019), Keras
functional API: a deep branch on the global view, a shallow one on the local view, and the
scalars of stream.transit_model.scalar_features, joined by dense layers into three logits
(PC, EB, J). Trained on the train split with time-reversal and local-view stretch augmentation;
the epoch is chosen on val (mean of triage and vetting average precision); a temperature fitted
on val calibrates the softmax. The exported ONNX model takes ``global_view`` (N,201,1),
``local_view`` (N,61,1), ``scalars`` (N,3) and returns ``probabilities`` (N,3).

    skystream train tess [--epochs 40] [--registry DIR | --bundled] [--limit N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream.transit_model import CLASSES, MODEL_NAME, SCALAR_FEATURES, scalar_features
from stream.transits import GLOBAL_BINS, LOCAL_BINS, normalise_view

log = logging.getLogger(__name__)

TASK = "tess"
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tess" / "yu2019"
DATA_ORIGIN = "https://github.com/yuliang419/Astronet-Triage (astronet/tfrecord), Yu et al. 2019, AJ 158, 25"
BUNDLED_REGISTRY = Path(__file__).resolve().parents[1] / "stream" / "bundled" / "registry"
LABELS = {c: i for i, c in enumerate(CLASSES)}  # O (other) is left out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="directory with the yu2019 TFRecord shards")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--registry", help="registry to publish to (default: SKYSTREAM_REGISTRY)")
    where.add_argument("--bundled", action="store_true",
                       help="publish into stream/bundled/registry (the shipped baseline) instead")
    where.add_argument("--no-publish", action="store_true", help="train and evaluate only")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pc-weight", type=float, default=2.0,
                        help="loss weight of planet candidates (the rare class); undone in the exported model")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train and val events (tests)")
    parser.add_argument("--report", type=Path, help="also write the metrics and metadata as JSON here")
    parser.add_argument("--with-labels", metavar="SOURCE", default=None,
                        help="retrain with curated labels (task tess) from a broker host:port or a JSON-lines dump "
                             "(`skystream labels dump`), applied to train and val; publish only if the candidate "
                             "is not worse than the registry's champion on the relabelled val split")
    parser.add_argument("--gate-tolerance", type=float, default=0.0,
                        help="with --with-labels: accepted loss in the mean of triage and vetting average "
                             "precision on val (default 0)")
    parser.add_argument("--keep-refused", action="store_true",
                        help="with --with-labels: store a refused candidate as an unpromoted version")


# -- data ----------------------------------------------------------------------------------------
def data_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def shards(data_dir: Path, split: str) -> list[Path]:
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


def serving_model(logit_model: Any, temperature: float) -> Any:
    """The logit model followed by temperature scaling and softmax: outputs calibrated probabilities."""
    import keras
    from keras import layers

    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logit_model.output)
    probs = layers.Softmax(name="probabilities")(scaled)
    return keras.Model(logit_model.inputs, probs, name="tess_triage_cnn")


# -- evaluation ----------------------------------------------------------------------------------
def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
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
        out[f"{name}_ece"] = expected_calibration_error(p, y)
        out[f"{name}_positives"] = int(y.sum())
    out["n"] = int(len(labels))
    out["log_loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1))))
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature minimising the negative log-likelihood (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1))))

    res = minimize_scalar(nll, bounds=(np.log(0.25), np.log(8.0)), method="bounded")
    return float(np.exp(res.x))


def selection_score(m: dict[str, float]) -> float:
    return 0.5 * (m["triage_average_precision"] + m["vetting_average_precision"])


GATE_PRIMARY = "mean_average_precision"  # selection_score: what chose the epoch also decides promotion


def gate_metrics(outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """training.gate metric function: the val metrics of ``metrics`` (rates only) plus their selection score."""
    m = metrics(np.asarray(outputs["probabilities"]), labels)
    rates = {k: v for k, v in m.items() if not k.endswith("_positives") and k != "n"}
    return {GATE_PRIMARY: selection_score(m), **rates}


# -- drift reference -----------------------------------------------------------------------------
def drift_reference(train: dict[str, np.ndarray], val_probs: np.ndarray) -> dict[str, Any]:
    """PSI reference (stream.drift format) from the training signals and the val predictions.

    Only the features whose meaning is the same for the training signals (QLP's BLS on 30-min
    light curves) and the stream's (our BLS on SPOC light curves) are kept: period, depth and
    duration. SNR definitions and light-curve quality differ between the two, so they would
    report drift that is not there.
    """
    from stream.drift import build_reference

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
def train(args: argparse.Namespace) -> dict[str, Any]:
    from training.keras_export import configure_tensorflow

    configure_tensorflow(args.seed, threads=args.threads)
    import keras

    t0 = time.perf_counter()
    train_d = load_split(args.data, "train", args.limit)
    val_d = load_split(args.data, "val", args.limit)
    feedback = None
    if getattr(args, "with_labels", None):
        from training.feedback import load_labels, merge_tess

        labels = load_labels(args.with_labels, TASK)
        merged = {"train": merge_tess(labels, train_d), "val": merge_tess(labels, val_d)}
        for split, m in merged.items():
            print(f"{split}: {m.summary()}", flush=True)
        train_d, val_d = merged["train"].data, merged["val"].data
        feedback = {split: m.report for split, m in merged.items()}
    x_train, y_train = inputs_of(train_d), train_d["label"]
    x_val, y_val = inputs_of(val_d), val_d["label"]
    log.info("train %d events %s, val %d events %s", len(y_train), np.bincount(y_train, minlength=3),
             len(y_val), np.bincount(y_val, minlength=3))

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
    best: tuple[float, str, list[np.ndarray]] | None = None
    history = []
    # Stochastic weight averaging (Izmailov et al. 2018) over the second half of training: one
    # model with much of an ensemble's benefit. Each epoch both the current and the averaged
    # weights are candidates; val picks.
    swa: list[np.ndarray] | None = None
    swa_count = 0
    swa_start = args.epochs // 2
    for epoch in range(args.epochs):
        hist = model.fit(augment(x_train, rng), y_train, sample_weight=sample_weight, batch_size=args.batch_size,
                         epochs=1, shuffle=True, verbose=0)
        current = model.get_weights()
        candidates = [(f"epoch {epoch + 1}", current)]
        if epoch >= swa_start:
            swa_count += 1
            swa = current if swa is None else [a + (w - a) / swa_count for a, w in zip(swa, current, strict=True)]
            candidates.append((f"average of epochs {swa_start + 1}-{epoch + 1}", swa))
        for label, weights in candidates:
            model.set_weights(weights)
            # Judged as shipped: with its own calibration temperature (it reorders P(PC) a little).
            logits = model.predict(x_val, batch_size=512, verbose=0) + offset
            m = metrics(softmax(logits, fit_temperature(logits, y_val)), y_val)
            score = selection_score(m)
            history.append({"weights": label, "loss": float(hist.history["loss"][-1]), **{
                k: round(m[k], 4) for k in ("triage_average_precision", "triage_accuracy",
                                            "vetting_average_precision", "log_loss")}})
            log.info("%s", history[-1])
            if best is None or score > best[0]:
                best = (score, label, [w.copy() for w in weights])
        model.set_weights(current)
    assert best is not None
    model.set_weights(best[2])
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel, bias + offset.astype(bias.dtype)])
    val_logits = model.predict(x_val, batch_size=512, verbose=0)
    temperature = fit_temperature(val_logits, y_val)
    train_seconds = time.perf_counter() - t0
    val_uncal = metrics(softmax(val_logits), y_val)
    val_probs = softmax(val_logits, temperature)
    val_metrics = metrics(val_probs, y_val)
    train_metrics = metrics(softmax(model.predict(x_train, batch_size=512, verbose=0), temperature), y_train)
    return {
        "logit_model": model, "temperature": temperature, "best_epoch": best[1], "history": history,
        "val": val_metrics, "val_uncalibrated": val_uncal, "train_metrics": train_metrics,
        "train_seconds": train_seconds, "x_val": x_val, "val_labels": y_val, "train_d": train_d,
        "val_probs": val_probs, "feedback": feedback, "val_tic_ids": val_d["tic_id"],
        "n_train": len(y_train), "n_val": len(y_val),
        "class_counts": {"train": np.bincount(y_train, minlength=3).tolist(),
                         "val": np.bincount(y_val, minlength=3).tolist()},
    }


def run(args: argparse.Namespace) -> int:
    from stream.config import Settings
    from stream.model_updates import make_smoke_test
    from stream.transits import DEFAULT_CONFIG
    from training.keras_export import code_version, compare_onnx_keras, export_onnx, library_versions, onnx_io, publish

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "with_labels", None) and args.bundled:
        print("--with-labels gates against a registry's champion; it does not write the bundled baseline")
        return 2
    result = train(args)
    model = serving_model(result["logit_model"], result["temperature"])
    onnx_bytes = export_onnx(model, {"global_view": (None, GLOBAL_BINS, 1), "local_view": (None, LOCAL_BINS, 1),
                                     "scalars": (None, len(SCALAR_FEATURES))})
    check = compare_onnx_keras(model, onnx_bytes, result["x_val"])
    if check["max_abs_diff"] > 1e-4:
        raise SystemExit(f"ONNX and Keras disagree: max |diff| {check['max_abs_diff']:.2e}")
    # Reference inputs and outputs a worker checks before serving this version (stream.model_updates):
    # two val events of each class.
    labels = result["val_labels"]
    pick = np.concatenate([np.flatnonzero(labels == k)[:2] for k in range(len(CLASSES))])
    smoke = make_smoke_test(onnx_bytes, {k: v[pick] for k, v in result["x_val"].items()})
    all_shards = shards(args.data, "train") + shards(args.data, "val")
    metadata = {
        "name": MODEL_NAME,
        "description": "AstroNet-style two-branch 1D CNN: TESS transit triage (PC or EB vs junk) and "
                       "vetting (PC vs rest), temperature-calibrated softmax over PC, EB, J",
        "classes": list(CLASSES),
        "class_semantics": {
            "PC": "planet candidate", "EB": "eclipsing binary", "J": "junk (instrumental or noise)",
            "triage_probability": "P(PC) + P(EB): astrophysical signal",
            "planet_probability": "P(PC): planet candidate",
        },
        "io": onnx_io(onnx_bytes),
        "scalar_features": list(SCALAR_FEATURES),
        "views": {"global_bins": GLOBAL_BINS, "local_bins": LOCAL_BINS,
                  "convention": "Astronet-Triage (Yu et al. 2019): median bins, median 0, minimum -1"},
        "preprocessing": DEFAULT_CONFIG.describe(),
        "temperature": result["temperature"],
        "metrics": {"val": result["val"], "val_uncalibrated": result["val_uncalibrated"],
                    "train": result["train_metrics"],
                    "note": "val chose the epoch and fitted the temperature; it is not an independent test"},
        "training": {
            "epochs": args.epochs, "chosen_weights": result["best_epoch"], "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "seed": args.seed, "threads": args.threads,
            "pc_loss_weight": args.pc_weight,
            "seconds": round(result["train_seconds"], 1), "n_train": result["n_train"], "n_val": result["n_val"],
            "class_counts": result["class_counts"], "limit": args.limit,
            "augmentation": "time reversal, noise 0.03; local view stretch 0.8-1.2 and shift +-1.5 bins",
            "swa": "weights averaged over the second half of the epochs are candidates too",
            "history": result["history"],
        },
        "data": {"path": str(args.data), "sha256": data_hash(all_shards), "origin": DATA_ORIGIN,
                 "shards": [p.name for p in all_shards]},
        "onnx_check": check,
        "smoke_test": smoke,
        "drift_reference": drift_reference(result["train_d"], result["val_probs"]),
        "code_version": code_version(),
        "libraries": library_versions(),
    }
    summary = {k: metadata[k] for k in ("metrics", "training", "onnx_check")}
    print(json.dumps({"val": result["val"], "chosen_weights": result["best_epoch"],
                      "temperature": result["temperature"], "train_seconds": round(result["train_seconds"], 1),
                      "onnx_max_abs_diff": check["max_abs_diff"], "onnx_bytes": len(onnx_bytes)}, indent=1))
    if args.report:
        args.report.write_text(json.dumps(summary, indent=1))
    if result["feedback"] is not None:
        return _publish_gated(args, onnx_bytes, metadata, result)
    if args.no_publish:
        return 0
    if args.bundled:
        uri, version = publish(BUNDLED_REGISTRY, TASK, onnx_bytes, metadata, bundled=True)
    else:
        uri, version = publish(args.registry or Settings().registry, TASK, onnx_bytes, metadata)
    print(f"published {MODEL_NAME} as {TASK} v{version} in {uri}")
    return 0


def _publish_gated(args: argparse.Namespace, onnx_bytes: bytes, metadata: dict[str, Any],
                   result: dict[str, Any]) -> int:
    """--with-labels: score candidate and champion on the relabelled val split; publish only if not worse.
    Returns 0 when published (or --no-publish), 3 when refused."""
    from stream.config import Settings
    from stream.registry import open_registry
    from training.gate import EvalSet, gate, publish_gated

    eval_set = EvalSet(
        result["x_val"], result["val_labels"], tuple(str(t) for t in result["val_tic_ids"]),
        {"rule": "the yu2019 val split (val-* shards), curated labels applied", "limit": args.limit},
        name="yu2019 val split, curated labels applied")
    metadata["feedback"] = result["feedback"]
    metadata["metrics"]["gate_note"] = ("the gate's evaluation set is the val split, which also chose the "
                                        "epoch and fitted the temperature of the candidate: the candidate's "
                                        "score is optimistic, so the gate favours it slightly")
    registry = args.registry or Settings().registry
    decision = gate(registry, TASK, onnx_bytes, eval_set, gate_metrics, GATE_PRIMARY, args.gate_tolerance)
    print(decision.table(), flush=True)
    if args.no_publish:
        return 0
    version = publish_gated(registry, TASK, onnx_bytes, metadata, decision, keep_refused=args.keep_refused)
    uri = open_registry(registry).uri
    if version is None:
        print(f"not published: the champion keeps serving ({uri})")
    else:
        print(f"published {MODEL_NAME} as {TASK} v{version} in {uri}"
              + ("" if decision.accepted else " unpromoted (refused by the gate, kept for inspection)"))
    return 0 if decision.accepted else 3
