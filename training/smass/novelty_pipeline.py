"""`skystream train smass-novelty`: add the novelty head (training/smass/novelty.py) to a published
classifier version and publish the result as the next version.

The classifier's graph is kept as it is (its outputs are bit for bit those of the base version); the
head is fitted on the SMASSII spectra, exported with tf2onnx, checked against Keras and merged into the
same ONNX file as a third output. A report directory (``--report-dir``) receives the findings as JSON
and a figure of the most novel spectra of SMASSII, SMASS I and the Mahlke et al. 2022 cross-survey set.

    skystream train smass-novelty [--base VERSION] [--registry URI | --bundle] [--report-dir DIR]

``train smass`` runs the same step (``attach``) on every model it trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.result import TrainResult
from training.smass.augmentation import grid_sigmas
from training.smass.cross_survey import DEFAULT_MAHLKE2022, DEFAULT_SMASS1
from training.smass.data import DEFAULT_DATA, SmassData, coverage_masks, development_split, load_smass, subset
from training.smass.model import COVERAGE_NAME, INPUT_NAME, TASK
from training.smass.novelty import QUICK, NoveltyConfig, NoveltyHead, fit_novelty, novelty_metadata

__all__ = ["NoveltyStep", "add_arguments", "attach", "fit_head", "holdout_check", "novelty_step", "run"]


def _log(msg: str) -> None:
    print(msg, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `skystream train smass-novelty`."""
    parser.add_argument("--base", default=None, help="classifier version to extend (default: the champion)")
    parser.add_argument("--registry", default=None, help="registry URI (default: Settings().registry)")
    parser.add_argument("--bundle", action="store_true",
                        help="extend the bundled baseline (stream/bundled/registry) and write the result there")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="directory with smass2data.tar.gz and Bus.Taxonomy.txt (default: %(default)s)")
    parser.add_argument("--smass1", type=Path, default=DEFAULT_SMASS1,
                        help="SMASS I archive, scored for the findings (skipped when missing; default: %(default)s)")
    parser.add_argument("--mahlke2022", type=Path, default=DEFAULT_MAHLKE2022,
                        help="Mahlke et al. 2022 visible set, scored per source for the findings (skipped when "
                             "missing; default: %(default)s)")
    parser.add_argument("--folds", type=int, default=NoveltyConfig().folds,
                        help="cross-conformal folds = served autoencoder/mixture pairs (default %(default)s)")
    parser.add_argument("--slope-feature", action="store_true",
                        help="the mixture also reads the continuum slope: absurd slopes become novel, and twice "
                             "as many spectra of other surveys (NoveltyConfig.slope_feature)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the folds, weights and augmentation")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2: shared machine)")
    parser.add_argument("--no-holdout-check", dest="holdout_check", action="store_false",
                        help="skip the validity check (a second head fitted on 80 %% of SMASSII, scoring the rest)")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="write the report here: report.json, index.md and the figures (training/report.py)")
    parser.add_argument("--quick", action="store_true", help="tiny run for tests: ~160 spectra, 2 folds, 2 epochs")


def fit_head(data: SmassData, cfg: NoveltyConfig, seed: int, threads: int) -> NoveltyHead:
    """The head fitted on these spectra (their noise and coverage drive the augmentation)."""
    return fit_novelty(data.features, grid_sigmas(data.spectra, data.features), coverage_masks(data), seed=seed,
                       threads=threads, cfg=cfg, log=_log)


def attach(base_onnx: bytes, metadata: dict[str, Any], head: NoveltyHead,
           data: SmassData) -> tuple[bytes, dict[str, Any]]:
    """(one ONNX file: the classifier and the head, its metadata): the head exported and checked against
    Keras on every training spectrum, merged, the I/O and smoke test redone, ``novelty`` added."""
    from stream.models.hot_swap import make_smoke_test
    from training.keras_export import compare_onnx_keras, export_onnx, merge_outputs, onnx_io

    model = head.keras_model()
    length = data.features.shape[1]
    head_onnx = export_onnx(model, {INPUT_NAME: (None, length), COVERAGE_NAME: (None, length)})
    check = compare_onnx_keras(model, head_onnx, {INPUT_NAME: data.features, COVERAGE_NAME: coverage_masks(data)})
    _log(f"novelty head ONNX vs Keras on {check['n_samples']} spectra: max |score diff| {check['max_abs_diff']:.2e}; "
         f"{len(head_onnx) / 1024:.0f} KiB")
    if check["max_abs_diff"] > 1e-2:
        raise ValueError(f"the novelty head's ONNX export disagrees with Keras (max |diff| "
                         f"{check['max_abs_diff']:.3g})")
    merged = merge_outputs(base_onnx, head_onnx, prefix="novelty/")
    meta = dict(metadata)
    smoke = metadata.get("smoke_test") or {}
    inputs = {k: np.asarray(v, dtype=np.float32) for k, v in smoke.get("inputs", {}).items()}
    meta["smoke_test"] = {**smoke, **make_smoke_test(merged, inputs, atol=float(smoke.get("atol", 1e-4)))}
    meta["io"] = onnx_io(merged)
    meta["novelty"] = novelty_metadata(head)
    meta["novelty"]["onnx_vs_keras"] = check
    return merged, meta


def holdout_check(data: SmassData, cfg: NoveltyConfig, seed: int, threads: int) -> dict:
    """Is α the false-alarm rate? A head fitted on the development 80 % of SMASSII scores the other 20 %
    (never seen by it, nor by its calibration): the share below each α should be about α."""
    from training.smass.novelty_report import share_below

    dev, held = development_split(data.group)
    d, h = subset(data, dev), subset(data, held)
    _log(f"holdout check: a head on {len(dev)} spectra scores the {len(held)} held out")
    head = fit_head(d, cfg, seed, threads)
    scores = head.keras_model().predict([h.features, coverage_masks(h)], verbose=0, batch_size=1024)
    return {"n_fitted": len(dev), "n_scored": len(held), **share_below(head.p_values(scores))}


@dataclass
class NoveltyStep:
    """The classifier with the head merged in, its metadata, the findings and the report's figure."""

    onnx_bytes: bytes
    metadata: dict[str, Any]
    findings: dict
    figure: tuple[str, bytes]  # (caption, PNG) of the most novel spectra


def novelty_step(base_onnx: bytes, metadata: dict[str, Any], data: SmassData, cfg: NoveltyConfig, seed: int,
                 threads: int, smass1: Path | None, mahlke2022: Path | None, holdout: bool = True) -> NoveltyStep:
    """Fit the head on ``data``, merge it into ``base_onnx``, and measure it as the stream will score:
    the findings go into the metadata (``novelty.findings``, headline shares under ``metrics.novelty``)."""
    from training.smass.cross_survey import serving_model
    from training.smass.novelty_report import findings, most_novel_png

    started = time.perf_counter()
    head = fit_head(data, cfg, seed, threads)
    checked = holdout_check(data, cfg, seed, threads) if holdout else None
    merged, meta = attach(base_onnx, metadata, head, data)
    candidate = serving_model(merged, meta)
    oof_p = np.array([np.mean(head.calibration[k] >= s) for k, s in zip(head.fold_of, head.out_of_fold, strict=True)])
    found, plots = findings(candidate, oof_p, data.objects, data.bus_names, smass1, mahlke2022, checked)
    meta["novelty"]["findings"] = found
    meta["novelty"]["training_seconds"] = round(time.perf_counter() - started, 1)
    # The headline shares as metrics too, so `skystream models show` and `models list` print them.
    meta["metrics"] = {**meta.get("metrics", {}), "novelty": {
        name: {k: v for k, v in f.items() if k.startswith("alpha_")} for name, f in found.items()
        if isinstance(f, dict) and "alpha_0.01" in f}}
    _summarise(found)
    masks = coverage_masks(data)
    smassii_rows = [{"name": data.objects[i], "novelty": float(oof_p[i]), "reflectance": data.features[i],
                     "coverage": masks[i], "class": data.bus_names[i]} for i in np.argsort(oof_p)[:8]]
    caption = "the most novel spectra of SMASSII (out of fold), SMASS I and the Mahlke et al. 2022 set"
    return NoveltyStep(merged, meta, found, (caption, most_novel_png(plots, smassii_rows)))


def run(args: argparse.Namespace) -> TrainResult:
    """Load the base version, fit the head, check it, merge, report, publish."""
    from stream.models.registry import BUNDLED, LocalRegistry, open_registry
    from stream.settings import Settings
    from training.keras_export import code_version, publish
    from training.report import write_report_dir

    started = time.perf_counter()
    cfg = dataclasses.replace(QUICK if args.quick else NoveltyConfig(folds=args.folds),
                              slope_feature=args.slope_feature)
    if args.bundle:
        registry = LocalRegistry(BUNDLED, seed_from=None)
    else:
        registry = open_registry(args.registry or Settings().registry)
    base = registry.load(TASK, args.base)
    if "novelty" in base.metadata:
        return TrainResult(TASK, "invalid_arguments",
                           message=f"{TASK} v{base.version} already has a novelty head; extend a version without one")
    data = load_smass(args.data_dir, limit=160 if args.quick else None)
    _log(f"SMASSII: {len(data.objects)} spectra; base: {base.name} v{base.version}; {cfg}")
    step = novelty_step(base.onnx, base.metadata, data, cfg, args.seed, args.threads, args.smass1, args.mahlke2022,
                        args.holdout_check)
    meta = step.metadata
    if args.mahlke2022 and args.mahlke2022.exists():  # the classifier's own numbers there, per source (item 2)
        from training.smass.cross_survey import evaluate_mahlke2022_onnx

        meta["metrics"]["mahlke2022"] = evaluate_mahlke2022_onnx(step.onnx_bytes, meta, args.mahlke2022, log=_log)
    meta.pop("created", None)  # the registry stamps the new version; the classifier's own date is the base's
    meta.pop("sha256", None)
    meta.pop("hmac_sha256", None)
    meta["based_on"] = {"version": base.version, "sha256": base.metadata.get("sha256"),
                        "change": "novelty head added (skystream train smass-novelty); classifier graph unchanged"}
    meta["code"] = {**meta.get("code", {}), "novelty_git": code_version(),
                    "novelty_command": f"skystream train smass-novelty --seed {args.seed} --folds {cfg.folds}"
                                       + (" --slope-feature" if cfg.slope_feature else "")}
    uri, version = publish(BUNDLED if args.bundle else registry.uri, TASK, step.onnx_bytes, meta, bundled=args.bundle)
    report_path = None
    if args.report_dir:
        report_path = write_report_dir(args.report_dir, {**meta, "task": TASK, "version": version},
                                       {"novelty": step.findings}, {"most-novel": step.figure})
    seconds = time.perf_counter() - started
    return TrainResult(TASK, "published", {"novelty": step.findings}, version, uri, report_path=report_path,
                       message=f"{TASK} v{version} = v{base.version} + novelty head, to {uri} in {seconds:.0f} s")


def _summarise(found: dict) -> None:
    for name in ("smassii_out_of_fold", "smassii_holdout", "smass1", "mahlke2022"):
        if name in found:
            f = found[name]
            _log(f"  {name}: {f.get('n', f.get('n_scored'))} spectra, below 0.01: {f['alpha_0.01']:.1%}, "
                 f"below 0.05: {f['alpha_0.05']:.1%}")
