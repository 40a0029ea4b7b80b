"""Issue 17, item 1: does training on other surveys' spectra help on other surveys? (an experiment script)

Cross-survey set: ../shared/data/mahlke2022 (718 visible spectra from 30 sources, Mahlke et al. 2022
classes mapped to main groups; Q rows left out, as SMASSII has none), through the stream's own reader
and resampling (rows the stream rejects are left out here too). Folds: 5 groups of sources
(sklearn GroupKFold on ``ref_spectrum``), so no source is on both sides.

- baseline: the shipped protocol (training.smass.ModelConfig) on all SMASSII, scored on every fold;
- mixed: the same protocol on all SMASSII + the cross-survey spectra of the other folds (their Bus
  class unknown: the Bus head's target is spread over the Bus classes of the main group), scored on
  the held-out fold. ``--weight W`` repeats the cross-survey rows W times in training.

Prints pooled source-held-out weighted F1, accuracy, top-class ECE (raw, 15 bins), the share of
spectra wrong with p > 0.9, per fold, and writes out-of-fold probabilities to --out (JSON) for
calibration experiments.

    .venv/bin/python docs/experiments/issue17/mixed_training.py [--quick] [--weight 1] [--out oof.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from stream.errors import Rejected  # noqa: E402
from stream.features import spectra  # noqa: E402
from training.reliability import expected_calibration_error as ece  # noqa: E402
from training.smass import GROUP_NAMES, ModelConfig, grid_sigma, load_smass, predict, train_model  # noqa: E402
from training.smass.cross_survey import iter_mahlke2022  # noqa: E402
from training.smass.data import coverage_masks  # noqa: E402


def load_cross_survey() -> dict:
    rows, sigma, masks, group, source, names = [], [], [], [], [], []
    rejected = 0
    for s in iter_mahlke2022():
        if s.group not in GROUP_NAMES:
            continue
        try:
            spectrum = spectra.read_spectrum(s.table, name=s.name)
            values, quality = spectra.resample(spectrum, min_coverage=spectra.MIN_COVERAGE_MASKED)  # as the stream
        except Rejected:
            rejected += 1
            continue
        rows.append(values)
        sigma.append(grid_sigma(spectrum, values))
        masks.append(spectra.coverage_mask(quality))
        group.append(GROUP_NAMES.index(s.group))
        source.append(s.source)
        names.append(s.name)
    return {"x": np.stack(rows).astype(np.float32), "sigma": np.stack(sigma),
            "mask": np.stack(masks).astype(np.float32),
            "group": np.array(group), "source": np.array(source), "names": names, "rejected": rejected}


def scores(p: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y).astype(float)
    return {"n": int(len(y)), "weighted_f1": round(float(f1_score(y, pred, average="weighted")), 4),
            "accuracy": round(float(correct.mean()), 4), "ece": round(ece(conf, correct), 4),
            "confident_wrong": round(float(((conf > 0.9) & (correct == 0)).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 epochs, 1 member (a smoke run)")
    ap.add_argument("--weight", type=int, default=1)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from sklearn.model_selection import GroupKFold

    cfg = ModelConfig(epochs=10, members=1) if args.quick else ModelConfig()
    smass = load_smass()
    s_sigma = np.stack([grid_sigma(sp, v) for sp, v in zip(smass.spectra, smass.features, strict=True)])
    s_mask = coverage_masks(smass)
    cs = load_cross_survey()
    print(f"SMASSII {len(smass.objects)}; cross-survey {len(cs['group'])} scored "
          f"({cs['rejected']} rejected by the reader), {len(set(cs['source']))} sources", flush=True)
    y = cs["group"]
    folds = list(GroupKFold(n_splits=args.folds).split(cs["x"], y, cs["source"]))
    oof = {"baseline": np.zeros((len(y), len(GROUP_NAMES))), "mixed": np.zeros((len(y), len(GROUP_NAMES)))}

    t0 = time.time()
    base = train_model(cfg, smass.features, s_sigma, smass.group, smass.bus, args.seed, args.threads,
                       label="baseline ", log=lambda m: None, mask=s_mask)
    oof["baseline"] = predict(base, cs["x"], cs["mask"])[0]
    print(f"baseline: {scores(oof['baseline'], y)} ({time.time() - t0:.0f} s)", flush=True)
    for k, (train, test) in enumerate(folds):
        t0 = time.time()
        rep = np.repeat(train, args.weight)
        x = np.concatenate([smass.features, cs["x"][rep]])
        sigma = np.concatenate([s_sigma, cs["sigma"][rep]])
        mask = np.concatenate([s_mask, cs["mask"][rep]])
        group = np.concatenate([smass.group, y[rep]])
        bus = np.concatenate([smass.bus, np.full(rep.size, -1)])
        model = train_model(cfg, x, sigma, group, bus, args.seed, args.threads, label=f"fold {k} ",
                            log=lambda m: None, mask=mask)
        oof["mixed"][test] = predict(model, cs["x"][test], cs["mask"][test])[0]
        print(f"fold {k} ({len(test)} held out, sources {sorted(set(cs['source'][test]))}): "
              f"baseline {scores(oof['baseline'][test], y[test])} mixed {scores(oof['mixed'][test], y[test])} "
              f"({time.time() - t0:.0f} s)", flush=True)
    for name, p in oof.items():
        print(f"{name}, pooled source-held-out: {scores(p, y)}")
    if args.out:
        args.out.write_text(json.dumps({"names": cs["names"], "source": cs["source"].tolist(), "group": y.tolist(),
                                        **{k: v.tolist() for k, v in oof.items()}}))


if __name__ == "__main__":
    main()
