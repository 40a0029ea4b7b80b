# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Border-flag thresholds: chosen on dev out-of-fold (temperature-scaled with T from the perturbed dev copies),
then counted on SMASS I. cd . && PYTHONPATH=... python flag_sweep.py NAME_sSEED [T_KEY]"""
import sys
import numpy as np
sys.path.insert(0, "scratch13")
from calib import border_flag, confident_wrong, fit_t, temper, R

name = sys.argv[1]; key = sys.argv[2] if len(sys.argv) > 2 else "p_instr"
z = np.load(R / f"{name}.npz")
t = fit_t(z[key], z["g"])
pd, p1 = temper(z["p_full"], t), temper(z["p1"], t)
pdi = temper(z[key], t)
print(f"{name}: T={t:.2f} (fitted on {key})")
print("margin mass | dev flagged  dev conf>0.9 wrong unflagged (full / perturbed) | SMASS I flagged  conf>0.9 wrong across border / unflagged / any unflagged")
for margin in (0.2, 0.3, 0.5):
    for mass in (0.05, 0.1, 0.2, 1.01):
        fd = border_flag(pd, z["p_bus"], margin, mass); fdi = border_flag(pdi, z["p_bus"], margin, mass)
        f1 = border_flag(p1, z["p1_bus"], margin, mass)
        _, cud, aud = confident_wrong(pd, z["g"], fd); _, cui, aui = confident_wrong(pdi, z["g"], fdi)
        c1, cu1, au1 = confident_wrong(p1, z["y1"], f1)
        print(f"{margin:.1f} {mass:.2f} | {fd.mean():.3f}  {aud} / {aui} | {f1.mean():.3f}  {c1} / {cu1} / {au1}")
