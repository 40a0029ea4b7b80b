# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Noise floor of 15-bin top-class ECE on n=99: outcomes drawn as Bernoulli(confidence) from a model's own
calibrated confidences (a perfectly calibrated model with the same confidence histogram)."""
import sys
import numpy as np
sys.path.insert(0, "scratch13")
from calib import fit_t, temper, R
from s1common import ece
for name, key in [("base_s0", "p_perturbed"), ("cropmask_curv03_bump03_s0", "p_instr_b")]:
    z = np.load(R / f"{name}.npz"); p = temper(z["p1"], fit_t(z[key], z["g"]))
    conf = p.max(1); rng = np.random.default_rng(0); vals = []
    for _ in range(2000):
        correct = rng.random(len(conf)) < conf
        y = np.where(correct, p.argmax(1), (p.argmax(1) + 1) % 4)
        vals.append(ece(p, y))
    print(f"{name}: mean confidence {conf.mean():.3f}; ECE of a perfectly calibrated model, n={len(conf)}: "
          f"median {np.median(vals):.3f}, 90th pct {np.percentile(vals, 90):.3f}")
