# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
"""Diagnostic: depth of TOI-186.01's sector-4 transit (1421.54) in SAP vs PDCSAP with a local fit masking the
transit (oracle: uses the ephemeris), and b's BLS SNR under per-orbit noise weights."""
import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np
from astropy.io import fits
from astropy.timeseries import BoxLeastSquares
from variants import *
d = fits.open(LC_DIR / "tic279741379_s04_lc.fits")[1].data
t = np.array(d["TIME"]); q = np.array(d["QUALITY"])
mid, half = 1421.5397, 0.0732
for col in ("SAP_FLUX", "PDCSAP_FLUX"):
    f = np.array(d[col]); ok = np.isfinite(t) & np.isfinite(f) & ((q & 0b100001010111111) == 0)
    for lo, hi, deg in ((1421.30, 1421.85, 2), (1421.40, 1421.75, 1), (1421.45, 1422.0, 2)):
        oot = ok & (t > lo) & (t < hi) & (np.abs(t - mid) > half * 1.1)
        c = np.polyfit(t[oot] - mid, f[oot], deg)
        it = ok & (np.abs(t - mid) < half * 0.8)
        print(f"{col} fit {lo}-{hi} deg{deg}: depth {(1 - np.mean(f[it] / np.polyval(c, t[it] - mid))) * 1e6:.0f} ppm "
              f"(oot rms {np.std(f[oot] / np.polyval(c, t[oot] - mid)) * 1e6:.0f} ppm/2min)")
# b's BLS SNR with the per-orbit noise weights, vs the search's best
P1, E1, D1 = 35.6134391, 3202.210988, 3.512 / 24
paths = star_files(279741379)
for label, v in (("today", BASE), ("dump0.25", Variant("x", dump_after=0.25))):
    lc = stitch([load(p, v) for p in paths])
    r = patched_search2(lc, None, 0.5)
    t2, y2, dy2 = make_segment_series(0.5)(lc.time, r.flat, BIN_DAYS)
    bls = BoxLeastSquares(t2, y2, dy=dy2)
    rb = bls.power([P1], D1 * np.array([0.9, 1.0, 1.1]), objective="snr", oversample=20)
    print(f"segnoise {label}: b BLS SNR {float(rb.depth_snr[0]):.1f} vs best {r.signals[0].bls_snr:.1f} ({r.signals[0].period_days:.3f} d)")
