# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
"""Diagnostics (not candidate fixes): what HD 21749's stitched search finds without sector 4 / parts of it."""
import sys, dataclasses
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np
from astropy.timeseries import BoxLeastSquares
from variants import *
P1, E1, D1 = 35.6134391, 3202.210988, 3.512 / 24

def show(label, curves, seg=None, split=None):
    lc = stitch(curves)
    r = patched_search2(lc, split, seg)
    t, y, dy = transits._series(lc.time, r.flat, BIN_DAYS)
    bls = BoxLeastSquares(t, y, dy=dy)
    rb = bls.power([P1], D1 * np.array([0.9, 1.0, 1.1]), objective="snr", oversample=20)
    print(f"{label}: " + " | ".join(sig_str(s) for s in r.signals))
    print(f"    BLS SNR at 35.61: {float(rb.depth_snr[0]):.1f}; b transits: {describe(transit_depths(t, y, P1, E1, D1))}")

paths = star_files(279741379)
v = Variant("d", dump_after=0.25)
show("S1-3 only", [load(p) for p in paths[:3]])
show("S1-3 only, segnoise", [load(p) for p in paths[:3]], seg=0.5)
s4 = load(paths[3], v); keep = s4.time > 1413.27
s4c = dataclasses.replace(s4, time=s4.time[keep], flux=s4.flux[keep], flux_err=s4.flux_err[keep])
show("S1-4, s4 from 1413.27, dump0.25", [load(p, v) for p in paths[:3]] + [s4c])
show("S1-4, s4 from 1413.27, dump0.25, segnoise", [load(p, v) for p in paths[:3]] + [s4c], seg=0.5)
show("S1-4 dump0.25, segnoise split at every >10-min gap (per dump interval)", [load(p, v) for p in paths], seg=0.0105)
show("S1-4 today, segnoise per dump interval", [load(p) for p in paths], seg=0.0105)
show("S1-4 dump0.5+gap0.5, segnoise per dump interval", [load(p, Variant('x', dump_after=0.5, gap_trim=0.5)) for p in paths], seg=0.0105)
