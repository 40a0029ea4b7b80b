# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""The SMASS I S-types the shipped model calls Other: detrended SMASS I/SMASSII ratio and band features."""
import sys
import numpy as np
sys.path.insert(0, "scratch13")
from s1common import GRID, SMASS2_DIR, load_smass1, ls_slope
from training import smass
s1 = load_smass1(); s2 = smass.load_smass(SMASS2_DIR); by = dict(zip(s2.objects, s2.features))
wrong = ["6","14","18","28","29","116","169","196","230","354","416","456","519","737"]
idx = lambda um: int(round((um - 0.44) / 0.005))
print("obj  bus  start  slope_diff  ratio@.46 .50 .60 .70 .75 .80 .86 .90 | R(.75)/R(.90) s1 vs s2 | R(.60)/R(.50)")
for r in s1:
    if r["object"] not in wrong or r["object"] not in by: continue
    v1, v2 = r["values"], by[r["object"]]; q = r["quality"]
    sel = GRID >= q["min_um"]
    s = ls_slope(GRID[sel], v1[sel] / v2[sel]); rat = v1 / v2 / (1 + s * (GRID - 0.55))
    print(f"{r['object']:>4} {r['bus']:3} {q['min_um']:.3f} {s:+.3f}  " + " ".join(f"{rat[idx(u)]:.3f}" for u in (0.46, .5, .6, .7, .75, .8, .86, .9))
          + f" | {v1[idx(.75)]/v1[idx(.9)]:.3f} {v2[idx(.75)]/v2[idx(.9)]:.3f} | {v1[idx(.6)]/v1[idx(.5)]:.3f} {v2[idx(.6)]/v2[idx(.5)]:.3f}")
