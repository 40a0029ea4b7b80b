# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Mean SMASS I / SMASSII ratio per grid point (after removing each object's LS slope): systematic shape differences."""
import json, sys
import numpy as np
sys.path.insert(0, "scratch13")
from s1common import GRID, SMASS2_DIR, load_smass1, ls_slope
from training import smass
s1 = load_smass1(); s2 = smass.load_smass(SMASS2_DIR)
by = dict(zip(s2.objects, s2.features))
sh = json.load(open("scratch13/results/shipped_smass1.json"))
wrong_s = {"6","14","18","28","29","116","169","196","230","354","416","456","519","737"}
R, Rw, Rraw = [], [], []
for r in s1:
    if r["values"] is None or r["object"] not in by or not r["group"]: continue
    q = r["quality"]; sel = (GRID >= max(q["min_um"], 0.44)) & (GRID <= min(q["max_um"], 0.92))
    ratio = np.full(len(GRID), np.nan); ratio[sel] = r["values"][sel] / by[r["object"]][sel]
    s = ls_slope(GRID[sel], ratio[sel]); lin = 1 + s * (GRID - 0.55)
    Rraw.append(ratio); R.append(ratio / lin)
    if r["object"] in wrong_s: Rw.append(ratio / lin)
R, Rw, Rraw = map(np.array, (R, Rw, Rraw))
print(" um    raw_mean  detr_mean  detr_sd  wrongS_detr_mean  n_cov")
for i in range(0, len(GRID), 4):
    print(f"{GRID[i]:.3f}  {np.nanmean(Rraw[:, i]):.3f}    {np.nanmean(R[:, i]):.3f}     {np.nanstd(R[:, i]):.3f}    {np.nanmean(Rw[:, i]):.3f}   {np.sum(np.isfinite(R[:, i]))}")
