# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Calibration + border flag for one exp.py run, the rule fixed in advance:

- temperature T fitted (NLL) on the dev out-of-fold predictions of a simulated-instrument copy of SMASSII
  (``--t-from p_instr``: slope N(0,0.12), curvature N(0,0.03), random crop; or p_instr_b: plus local bumps);
- border flag: the top-two main groups are S/Other or C/X and (calibrated margin < 0.2 or the Bus head's
  top class lies in the runner-up group), or — for C/X — the spectrum's least-squares slope lies within
  ±0.10/µm (the typical instrument slope difference) of the C|X slope boundary (the midpoint of the C and X
  median slopes of the dev split).
cd . && PYTHONPATH=.:scratch13 python recipe_eval.py NAME_sSEED [--t-from p_instr]
"""
import argparse
import json
import sys
import numpy as np
sys.path.insert(0, "scratch13")
from calib import PAIRS, G, M, fit_t, temper, R  # noqa: E402
from s1common import GRID, SMASS2_DIR, ece, load_smass1, weighted_f1  # noqa: E402
from training import smass  # noqa: E402

SLOPE_BAND = 0.10


def slopes(x):
    a = np.vstack([np.ones_like(GRID), GRID - 0.55]).T
    coef = np.linalg.lstsq(a, x.T, rcond=None)[0]
    return coef[1] / coef[0]


def flags(p, pb, slope, cx_boundary, margin=0.2):
    order = np.argsort(-p, 1); top, sec = order[:, 0], order[:, 1]
    bus_group = (pb @ M).argmax(1)
    out = np.zeros(len(p), bool)
    for i in range(len(p)):
        pair = {G[top[i]], G[sec[i]]}
        if pair in PAIRS:
            out[i] = (p[i, top[i]] - p[i, sec[i]] < margin) or bus_group[i] == sec[i]
            if pair == {"C", "X"} and abs(slope[i] - cx_boundary) < SLOPE_BAND:
                out[i] = True
    return out


def conf_wrong(p, y, fl, thr=0.9):
    w = (p.argmax(1) != y) & (p.max(1) > thr)
    cross = np.array([{G[a], G[b]} in PAIRS for a, b in zip(p.argmax(1), y)])
    return int(np.sum(w & cross)), int(np.sum(w & cross & ~fl)), int(np.sum(w & ~fl))


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("name"); ap.add_argument("--t-from", default="p_instr")
    a = ap.parse_args()
    z = np.load(R / f"{a.name}.npz")
    data = smass.load_smass(SMASS2_DIR)
    dev, _ = smass.development_split(data.group)
    xd = data.features[dev]; assert list(np.array(data.objects)[dev]) == list(z["objects"])
    sd = slopes(xd)
    cx = 0.5 * (np.median(sd[z["g"] == 0]) + np.median(sd[z["g"] == 2]))
    s1 = {r["object"]: r for r in load_smass1(min_coverage=0.6) if r["group"] and r["values"] is not None}
    x1 = np.stack([s1[o]["values"] for o in z["objects1"]]); sl1 = slopes(x1)
    t = fit_t(z[a.t_from], z["g"])
    pd, p1 = temper(z["p_full"], t), temper(z["p1"], t)
    pdi = temper(z[a.t_from], t)
    fd, fdi, f1 = flags(pd, z["p_bus"], sd, cx), flags(pdi, z["p_bus"], sd, cx), flags(p1, z["p1_bus"], sl1, cx)
    y1, g = z["y1"], z["g"]
    res = {"name": a.name, "t_from": a.t_from, "T": t, "cx_slope_boundary": float(cx),
           "dev_f1": weighted_f1(g, pd.argmax(1)), "smass1_f1": weighted_f1(y1, p1.argmax(1)),
           "smass1_ece_raw": ece(z["p1"], y1), "smass1_ece_T": ece(p1, y1),
           "dev_ece_T": ece(pd, g), "dev_sim_instrument_ece_T(in-sample)": ece(pdi, g),
           "dev_flagged": float(fd.mean()), "dev_conf_wrong": conf_wrong(pd, g, fd),
           "dev_sim_instrument_flagged": float(fdi.mean()), "dev_sim_instrument_conf_wrong": conf_wrong(pdi, g, fdi),
           "smass1_flagged": float(f1.mean()), "smass1_conf_wrong(across,unflagged,any_unflagged)": conf_wrong(p1, y1, f1),
           "smass1_error_rate_flagged": float(np.mean(p1.argmax(1)[f1] != y1[f1])),
           "smass1_error_rate_unflagged": float(np.mean(p1.argmax(1)[~f1] != y1[~f1])),
           "smass1_wrong": [(str(z["objects1"][i]), str(z["bus1"][i]), G[int(p1[i].argmax())], round(float(p1[i].max()), 3),
                             bool(f1[i])) for i in np.flatnonzero(p1.argmax(1) != y1)]}
    print(json.dumps(res))
    with open(R / "recipe_eval.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
