# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Issue 13 experiments: one protocol variant -> dev-split k-fold CV on SMASSII (out-of-fold), the same
out-of-fold predictions on instrument-perturbed and 0.49-0.83 µm cut copies of the dev spectra (made
through stream.spectra), and SMASS I scored by fold models that never saw that asteroid's SMASSII spectrum.

cd . && PYTHONPATH=.:scratch13 .venv/bin/python scratch13/exp.py \
    --name NAME [--members 1] [--epochs 80] [--folds 4] [--seed 0] [--config FIELD=VALUE ...]
The untouched 20 % held-out split is never scored.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from s1common import GRID, SMASS2_DIR, ece, load_smass1, weighted_f1  # noqa: E402
from stream.features import spectra  # noqa: E402
from stream.errors import Rejected  # noqa: E402
from training import smass  # noqa: E402

OUT = Path("scratch13/results")
PERTURB_SEED = 2026  # fixed: every variant is judged on the same perturbed copies


def mask_of(q):
    return ((GRID >= q["min_um"] - 1e-9) & (GRID <= q["max_um"] + 1e-9)).astype(np.float32)


def through_reader(spectrum, slope=0.0, lo=None, hi=None, min_cov=0.6):
    s = smass.variants._tilted(spectrum, slope) if slope else spectrum
    if lo is not None:
        s = smass.variants._cut(s, lo, hi)
    old = spectra.MIN_COVERAGE
    spectra.MIN_COVERAGE = min_cov
    try:
        v, q = spectra.resample(s)
    except Rejected:
        return None, None
    finally:
        spectra.MIN_COVERAGE = old
    return v, mask_of(q)


def perturbed_copies(data):
    """Instrument-like copies: slope N(0, 0.12)/µm clipped ±0.3, start U(0.44, 0.50), end U(0.82, 0.92)."""
    rng = np.random.default_rng(PERTURB_SEED)
    n = len(data.objects)
    slope = np.clip(rng.normal(0, 0.12, n), -0.3, 0.3)
    lo, hi = rng.uniform(0.44, 0.50, n), rng.uniform(0.82, 0.92, n)
    xs, ms = [], []
    for i, s in enumerate(data.spectra):
        v, m = through_reader(s, slope[i], lo[i], hi[i])
        xs.append(v); ms.append(m)
    cut = [through_reader(s, 0.0, 0.49, 0.83) for s in data.spectra]
    return (np.stack(xs), np.stack(ms)), (np.stack([c[0] for c in cut]), np.stack([c[1] for c in cut])), slope


def instrument_copies(data, bump=0.0, seed_offset=1):
    """Second simulated instrument (added after the first runs; for calibration): slope N(0, 0.12)/µm clipped
    ±0.3, curvature c ~ N(0, 0.03) (× 1 + c(u² - 1/3), u = (λ-0.68)/0.24, as seen in SMASS I / SMASSII),
    start U(0.44, 0.50), end U(0.82, 0.92); through stream.spectra."""
    rng = np.random.default_rng(PERTURB_SEED + seed_offset)
    n = len(data.objects)
    slope = np.clip(rng.normal(0, 0.12, n), -0.3, 0.3)
    curv = rng.normal(0, 0.03, n)
    lo, hi = rng.uniform(0.44, 0.50, n), rng.uniform(0.82, 0.92, n)
    # instr_b (bump > 0): plus a smooth local error a·exp(-(λ-μ)²/2w²), a ~ N(0, bump), μ ~ U(0.70, 0.92),
    # w ~ U(0.03, 0.08): the shape of the SMASS I / SMASSII differences (no SMASS I labels involved).
    amp, mu, wid = rng.normal(0, bump, n), rng.uniform(0.70, 0.92, n), rng.uniform(0.03, 0.08, n)
    xs, ms = [], []
    for i, s in enumerate(data.spectra):
        u = (s.wavelength_um - 0.68) / 0.24
        f = (1 + curv[i] * (u**2 - 1 / 3)) * smass.tilt(s.wavelength_um, slope[i])
        if bump:
            f = f * (1 + amp[i] * np.exp(-0.5 * ((s.wavelength_um - mu[i]) / wid[i]) ** 2))
        s2 = spectra.Spectrum(s.wavelength_um, s.reflectance * f, None if s.error is None else s.error * f, s.n_rows)
        v, m = through_reader(s2, 0.0, lo[i], hi[i])
        xs.append(v); ms.append(m)
    return np.stack(xs), np.stack(ms)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", action="append", default=[])
    args = ap.parse_args()
    cfg = dataclasses.replace(smass.ModelConfig(), members=args.members, epochs=args.epochs)
    cfg = smass.override_config(cfg, args.config)
    t0 = time.time()
    data = smass.load_smass(SMASS2_DIR)
    dev, _held_out = smass.development_split(data.group)
    d = smass.data.subset(data, dev)  # the 20 % held out is never touched below
    x, g, b = d.features, d.group, d.bus
    m = np.stack([mask_of(q) for q in d.quality])
    sigma = np.stack([smass.grid_sigma(s, v) for s, v in zip(d.spectra, x, strict=True)])
    (xp, mp), (xc, mc), _ = perturbed_copies(d)
    xi, mi = instrument_copies(d)
    xb, mb = instrument_copies(d, bump=0.03, seed_offset=2)
    s1 = [r for r in load_smass1(min_coverage=0.6) if r["group"] and r["values"] is not None]
    x1 = np.stack([r["values"] for r in s1]); m1 = np.stack([r["mask"] for r in s1])
    y1 = np.array([smass.GROUP_NAMES.index(r["group"]) for r in s1])
    dev_pos = {o: i for i, o in enumerate(d.objects)}
    from sklearn.model_selection import StratifiedKFold
    n = len(x)
    P = {k: np.zeros((n, 4), np.float32) for k in ("full", "perturbed", "cut", "instr", "instr_b")}
    PB = np.zeros((n, len(smass.BUS_CLASS_NAMES)), np.float32)
    p1 = np.zeros((len(s1), 4), np.float32); p1b = np.zeros((len(s1), len(smass.BUS_CLASS_NAMES)), np.float32)
    n1 = np.zeros(len(s1))
    fold_of = np.full(n, -1)
    for k, (tr, te) in enumerate(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(x, g)):
        fold_of[te] = k
        model = smass.train_model(cfg, x[tr], sigma[tr], g[tr], b[tr], seed=args.seed, threads=args.threads,
                                  label=f"{args.name} fold {k+1} ", log=lambda s: None, mask=m[tr])
        P["full"][te], PB[te] = smass.predict(model, x[te], m[te])
        P["perturbed"][te] = smass.predict(model, xp[te], mp[te])[0]
        P["cut"][te] = smass.predict(model, xc[te], mc[te])[0]
        P["instr"][te] = smass.predict(model, xi[te], mi[te])[0]
        P["instr_b"][te] = smass.predict(model, xb[te], mb[te])[0]
        # SMASS I: only asteroids whose SMASSII spectrum is not in this fold's training set
        te_objs = {d.objects[i] for i in te}
        use = np.array([(r["object"] in te_objs) or (r["object"] not in dev_pos) for r in s1])
        if use.any():
            pg, pb = smass.predict(model, x1[use], m1[use])
            p1[use] += pg; p1b[use] += pb; n1[use] += 1
        print(f"{args.name} fold {k+1}: F1 {weighted_f1(g[te], P['full'][te].argmax(1)):.4f} ({time.time()-t0:.0f} s)",
              flush=True)
    p1 /= n1[:, None]; p1b /= n1[:, None]
    pred1 = p1.argmax(1)
    s_other = int(np.sum((y1 == 1) & (pred1 == 3)))
    res = {"name": args.name, "config": dataclasses.asdict(cfg), "seed": args.seed, "folds": args.folds,
           "dev_f1": weighted_f1(g, P["full"].argmax(1)),
           "dev_perturbed_f1": weighted_f1(g, P["perturbed"].argmax(1)),
           "dev_cut_049_083_f1": weighted_f1(g, P["cut"].argmax(1)),
           "dev_instr_f1": weighted_f1(g, P["instr"].argmax(1)),
           "dev_instr_b_f1": weighted_f1(g, P["instr_b"].argmax(1)),
           "smass1_f1": weighted_f1(y1, pred1), "smass1_n": len(y1), "smass1_s_to_other": s_other,
           "smass1_ece_raw": ece(p1, y1), "dev_perturbed_ece_raw": ece(P["perturbed"], g),
           "seconds": round(time.time() - t0)}
    print(json.dumps(res), flush=True)
    OUT.mkdir(exist_ok=True)
    np.savez_compressed(OUT / f"{args.name}_s{args.seed}.npz", g=g, b=b, fold=fold_of, p_full=P["full"], p_bus=PB,
                        p_perturbed=P["perturbed"], p_cut=P["cut"], p_instr=P["instr"], p_instr_b=P["instr_b"], p1=p1, p1_bus=p1b, y1=y1,
                        objects1=np.array([r["object"] for r in s1]), bus1=np.array([r["bus"] for r in s1]),
                        objects=np.array(d.objects))
    with open(OUT / "summary.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
