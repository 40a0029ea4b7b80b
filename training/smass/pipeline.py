"""The run of `skystream train smass`: load -> fit -> export and verify -> evaluate -> publish, and its
command-line arguments."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stream.features import spectra
from training.gate import add_gate_arguments
from training.result import TrainResult
from training.smass.augmentation import grid_sigmas
from training.smass.cross_survey import DEFAULT_MAHLKE2022, DEFAULT_SMASS1
from training.smass.data import (
    DEFAULT_DATA,
    SmassData,
    coverage_masks,
    development_split,
    iter_tar_spectra,
    load_smass,
    subset,
)
from training.smass.evaluation import cross_validate
from training.smass.fitting import train_model
from training.smass.labels import BUS_CLASS_NAMES, GROUP_NAMES, parse_taxonomy
from training.smass.metadata import build_metadata
from training.smass.model import COVERAGE_NAME, INPUT_NAME, MODEL_NAME, OUTPUT_GROUP, TASK, ModelConfig, override_config
from training.smass.variants import survey_variants

if TYPE_CHECKING:
    from training.feedback import Merged
    from training.gate import EvalSet


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
    parser.add_argument("--mahlke2022", type=Path, default=DEFAULT_MAHLKE2022,
                        help="Mahlke et al. 2022 visible set, scored per source for the classifier's metrics "
                             "(metrics.mahlke2022) and the novelty findings (skipped when missing; default: "
                             "%(default)s)")
    parser.add_argument("--report", type=Path, default=None, help="also write the metrics report as JSON here")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="write the training report here: its figures (confusion matrices, per-class scores, "
                             "reliability diagrams, the most confident errors, the novelty findings) and index.md")
    parser.add_argument("--bundle", action="store_true",
                        help="write the model into stream/bundled/registry (the shipped baseline) instead")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run for tests: ~160 spectra, 2 folds, 1 member, 3 epochs")
    parser.add_argument("--config", metavar="FIELD=VALUE", action="append", default=[],
                        help="override a ModelConfig field (repeatable; tuples as 16,32,32), for comparing protocols")
    parser.add_argument("--no-novelty", dest="novelty", action="store_false",
                        help="publish the classifier without the novelty head (training/smass/novelty.py)")
    parser.add_argument("--dev-split", action="store_true",
                        help="protocol selection: CV on the 80 %% development split only (see "
                             "docs/experiments/smass-protocol.md; use --folds 4), no final model, nothing published")
    add_gate_arguments(parser, "smass", "a fixed evaluation set held out of them",
                       "held-out main-group weighted F1")


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
        data = subset(data, np.flatnonzero(train_rows))
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
    return train_model(cfg, data.features, grid_sigmas(data.spectra, data.features), data.group, data.bus,
                       seed=args.seed, threads=args.threads, label="  final ", log=_log, mask=coverage_masks(data))


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
    cv = cross_validate(subset(data, dev), cfg, folds, args.seed, args.threads, {}, log=_log)
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
    onnx_bytes = exported.onnx_bytes
    figures = {}
    if evaluation.cv:
        figures["most-confident-errors"] = _confident_errors_figure(loaded.data, evaluation.cv)
    if getattr(args, "novelty", True) and cfg.coverage_mask:
        step = _with_novelty(args, loaded, onnx_bytes, metadata)
        onnx_bytes, metadata = step.onnx_bytes, step.metadata
        figures["most-novel"] = step.figure
    smass1 = getattr(args, "smass1", None)
    if smass1 and smass1.exists():
        metadata["metrics"]["smass1"] = evaluate_cross_survey(onnx_bytes, metadata, smass1,
                                                              args.data_dir / "Bus.Taxonomy.txt")
    mahlke2022 = getattr(args, "mahlke2022", None)
    if mahlke2022 and mahlke2022.exists():
        from training.smass.cross_survey import evaluate_mahlke2022_onnx

        metadata["metrics"]["mahlke2022"] = evaluate_mahlke2022_onnx(onnx_bytes, metadata, mahlke2022, log=_log)
    report = {"cv": evaluation.cv, "onnx_vs_keras": exported.check, "training_seconds": round(seconds, 1),
              "smass1": metadata["metrics"].get("smass1")}
    extra = {"config": dataclasses.asdict(cfg), "onnx_bytes": len(onnx_bytes)}
    if loaded.feedback is not None:
        from training.gate import argmax_metrics, gate_and_publish, gate_metadata

        metadata["feedback"] = loaded.feedback.report
        metadata["training_data"]["held_out"] = loaded.eval_set.describe()
        decision, version, uri = gate_and_publish(
            args.registry or Settings().registry, TASK, MODEL_NAME, onnx_bytes, metadata, loaded.eval_set,
            argmax_metrics(OUTPUT_GROUP), "weighted_f1", tolerance=args.gate_tolerance,
            keep_refused=args.keep_refused, log=_log)
        report.update(registry=uri, version=version, **extra, gate=gate_metadata(decision),
                      feedback=loaded.feedback.report)
        status = "published" if decision.accepted else "refused"
        _write_report_dir(args, metadata, report, version, figures)
        return TrainResult(TASK, status, report, version, uri, decision, _write_report(args.report, report),
                           message=decision.reason)
    registry = BUNDLED if args.bundle else (args.registry or Settings().registry)
    uri, version = publish_model(registry, TASK, onnx_bytes, metadata, bundled=args.bundle)
    report.update(registry=uri, version=version, **extra)
    _write_report_dir(args, metadata, report, version, figures)
    return TrainResult(TASK, "published", report, version, uri, report_path=_write_report(args.report, report),
                       message=f"{TASK} v{version} ({MODEL_NAME}) to {uri} in {seconds:.0f} s")


def _with_novelty(args: argparse.Namespace, loaded: Loaded, onnx_bytes: bytes, metadata: dict):
    """The classifier with the novelty head merged in (training/smass/novelty.py), fitted on the same spectra
    (a model without the coverage input cannot take it: the head reads the same two inputs)."""
    from training.smass.novelty import QUICK, NoveltyConfig
    from training.smass.novelty_pipeline import novelty_step

    return novelty_step(onnx_bytes, metadata, loaded.data, QUICK if args.quick else NoveltyConfig(), args.seed,
                        args.threads, getattr(args, "smass1", None), getattr(args, "mahlke2022", None),
                        holdout=not args.quick)


def _confident_errors_figure(data: SmassData, cv: dict) -> tuple[str, bytes]:
    """The spectra of the CV's most confident errors (caption, PNG)."""
    from training.smass.figures import spectra_png

    where = {obj: i for i, obj in enumerate(data.objects)}
    masks = coverage_masks(data)
    rows = [{"label": f"{e['object']} {e['bus_class']}: {e['true']} called {e['predicted']} p={e['confidence']:.2f}",
             "reflectance": data.features[where[e["object"]]], "coverage": masks[where[e["object"]]]}
            for e in cv["main_group"]["most_confident_errors"]]
    return ("the cross-validation's most confident errors (calibrated probability), their spectra",
            spectra_png({"most confident errors, out of fold": rows}))


def evaluate_cross_survey(onnx_bytes: bytes, metadata: dict, archive: Path, taxonomy_path: Path) -> dict:
    """SMASS I (another instrument) scored through the stream's reader and predictor with this model and
    its metadata (coverage input, calibration, border flag): training/smass/cross_survey.py."""
    from training.smass.cross_survey import evaluate_smass1, serving_model

    result = evaluate_smass1(serving_model(onnx_bytes, metadata), archive, taxonomy_path)
    _log(f"SMASS I (other instrument): weighted F1 {result['weighted_f1']:.4f} on {result['n_scored']} "
         f"({result['n_rejected']} rejected); ECE {result['ece_top_class']:.3f}; "
         f"flagged {result['border_flagged_fraction']:.0%}")
    return result


def _write_report_dir(args: argparse.Namespace, metadata: dict, report: dict, version: str | None,
                      figures: dict[str, tuple[str, bytes]]) -> None:
    """``--report-dir``: the figures of the metadata as published, and this run's own (training/report.py)."""
    if getattr(args, "report_dir", None):
        from training.report import write_report_dir

        index = write_report_dir(args.report_dir, {**metadata, "task": TASK, "version": version}, report, figures)
        _log(f"training report: {index}")


def _write_report(path: Path | None, report: dict) -> Path | None:
    """The run's report as JSON at ``--report`` (nothing without it); returns where it was written."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
    return path
