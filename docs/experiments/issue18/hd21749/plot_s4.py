# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np, matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
from variants import *
from variants import _raw
p = LC_DIR / "tic279741379_s04_lc.fits"
lc = load(p); rt, rq = _raw(p)
res = transits.search(lc)
fig, axes = plt.subplots(3, 1, figsize=(16, 10))
for ax, (a, b) in zip(axes, [(1410.5, 1419), (1421, 1429), (1429, 1437)]):
    m = (lc.time > a) & (lc.time < b)
    t, y, _ = transits.bin_means(lc.time[m], lc.flux[m], BIN_DAYS)
    ax.plot(t, (y - 1) * 1e6, ".", ms=3)
    ax.plot(lc.time[m], (res.trend[m] - 1) * 1e6, "k-", lw=1)
    for e in event_times(rt, rq, 32): ax.axvline(e, color="r", lw=0.7)
    for m1 in 3202.210988 + np.arange(-60, 5) * 35.6134391: ax.axvline(m1, color="g", lw=2, alpha=0.4)
    ax.set_xlim(a, b); ax.set_ylim(-4000, 3000)
fig.tight_layout(); fig.savefig(str(__import__("pathlib").Path(__file__).resolve().parent / "s4_raw.png"), dpi=70)
