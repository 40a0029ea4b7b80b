# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Issue 13 step 3: calibration and the border flag, from the saved out-of-fold predictions of exp.py.

cd . && PYTHONPATH=.:scratch13 .venv/bin/python scratch13/calib.py NAME_sSEED [...]

Temperature T (p ∝ p_model^(1/T)) fitted by NLL on the dev-split out-of-fold predictions of the
instrument-PERTURBED SMASSII copies (slope N(0,0.12)/µm, random crop; exp.perturbed_copies): another
"instrument" simulated, no SMASS I data used. Reported: ECE (15 bins, top class) on SMASS I (99).
Also, for reference only, a cross-fit on halves of SMASS I (fit T on one half, ECE on the other, both ways).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

sys.path.insert(0, str(Path(__file__).parent))
from s1common import ece, weighted_f1  # noqa: E402
from training import smass  # noqa: E402

R = Path("scratch13/results")
G = smass.GROUP_NAMES
PAIRS = [{"S", "Other"}, {"C", "X"}]
M = smass.bus_to_group_matrix()


def temper(p, t):
    lp = np.log(np.clip(p, 1e-12, 1)) / t
    lp -= lp.max(1, keepdims=True)
    e = np.exp(lp)
    return e / e.sum(1, keepdims=True)


def fit_t(p, y):
    nll = lambda t: -np.mean(np.log(np.clip(temper(p, t)[np.arange(len(y)), y], 1e-12, 1)))
    return float(minimize_scalar(nll, bounds=(0.3, 10), method="bounded").x)


def border_flag(p, pb, margin=0.5, mass=0.05):
    """border: the top-two main groups are a border pair (S/Other, C/X) and either the main-group margin is
    below ``margin`` or the Bus head puts >= ``mass`` on the runner-up group (or its top class is in it)."""
    order = np.argsort(-p, 1)
    top, second = order[:, 0], order[:, 1]
    pg_bus = pb @ M
    flags = np.zeros(len(p), bool)
    for i in range(len(p)):
        if {G[top[i]], G[second[i]]} in PAIRS:
            marg = p[i, top[i]] - p[i, second[i]]
            flags[i] = marg < margin or pg_bus[i, second[i]] >= mass or pg_bus[i].argmax() == second[i]
    return flags


def confident_wrong(p, y, flags, thr=0.9):
    wrong = (p.argmax(1) != y) & (p.max(1) > thr)
    cross = np.array([{G[a], G[b]} in PAIRS for a, b in zip(p.argmax(1), y)])
    return int(np.sum(wrong & cross)), int(np.sum(wrong & cross & ~flags)), int(np.sum(wrong & ~flags))


def report(name):
    z = np.load(R / f"{name}.npz")
    g, y1, p1, p1b = z["g"], z["y1"], z["p1"], z["p1_bus"]
    pp, pf = z["p_perturbed"], z["p_full"]
    t_pert = fit_t(pp, g)
    t_full = fit_t(pf, g)
    # cross-fit on halves of SMASS I (reference: uses SMASS I labels)
    rng = np.random.default_rng(0)
    half = rng.permutation(len(y1)) % 2 == 0
    cross = np.zeros_like(p1)
    ts = []
    for h in (half, ~half):
        t = fit_t(p1[h], y1[h]); ts.append(t)
        cross[~h] = temper(p1[~h], t)
    if "p_instr" in z.files:  # second simulated instrument (slope + curvature + crop): the calibration set
        pi = z["p_instr"]
        t_instr = fit_t(pi, g)
        extra = {"T_instr_dev": t_instr, "ece_smass1_T_instr": ece(temper(p1, t_instr), y1),
                 "dev_instr_f1": weighted_f1(g, pi.argmax(1))}
    else:
        t_instr, extra = None, {}
    t_b = None
    if "p_instr_b" in z.files:  # instr + smooth local bumps near 0.70-0.92 µm
        t_b = fit_t(z["p_instr_b"], g)
        extra.update({"T_instr_b_dev": t_b, "ece_smass1_T_instr_b": ece(temper(p1, t_b), y1),
                      "dev_instr_b_f1": weighted_f1(g, z["p_instr_b"].argmax(1))})
    out = {"name": name, **extra, "smass1_f1": weighted_f1(y1, p1.argmax(1)), "T_perturbed_dev": t_pert, "T_dev_full": t_full,
           "ece_smass1_raw": ece(p1, y1),
           "ece_smass1_T_perturbed": ece(temper(p1, t_pert), y1),
           "ece_smass1_T_dev_full": ece(temper(p1, t_full), y1),
           "ece_smass1_crossfit_halves": ece(cross, y1), "T_halves": ts,
           "ece_dev_perturbed_T_perturbed(in-sample)": ece(temper(pp, t_pert), g)}
    variants = [("raw", p1), ("T_perturbed", temper(p1, t_pert))]
    if t_instr is not None:
        variants.append(("T_instr", temper(p1, t_instr)))
    if t_b is not None:
        variants.append(("T_instr_b", temper(p1, t_b)))
    for label, pc in variants:
        fl = border_flag(pc, p1b)
        c, cu, au = confident_wrong(pc, y1, fl)
        out[f"smass1_{label}_conf>0.9_wrong_across_border"] = c
        out[f"smass1_{label}_..._without_flag"] = cu
        out[f"smass1_{label}_any_conf_wrong_without_flag"] = au
        out[f"smass1_{label}_flagged_fraction"] = float(fl.mean())
    fl_dev = border_flag(temper(pf, t_pert), z["p_bus"])
    c, cu, au = confident_wrong(temper(pf, t_pert), g, fl_dev)
    out.update({"dev_conf_wrong_across_border": c, "dev_..._without_flag": cu, "dev_flagged_fraction": float(fl_dev.mean()),
                "dev_flagged_error_rate": float(np.mean(pf.argmax(1)[fl_dev] != g[fl_dev])),
                "dev_unflagged_error_rate": float(np.mean(pf.argmax(1)[~fl_dev] != g[~fl_dev]))})
    return out


if __name__ == "__main__":
    for name in sys.argv[1:]:
        r = report(name)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))
        with open(R / "calibration.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
