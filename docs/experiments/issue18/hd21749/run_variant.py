# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
"""Run cleaning variants: HD 21749 stitched (S1-4), every single file, WASP-126 S1+S6 stitched.

    python run_variant.py NAME [NAME ...]     (names in VARIANTS below; 'all' for every one)
"""
import sys, json, time as _time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np
from astropy.timeseries import BoxLeastSquares
from variants import *

SPLIT = {}  # variant name -> split_gap for segment-wise detrending
SEGNOISE = {}  # variant name -> gap (d) splitting stretches for per-stretch BLS noise
VARIANTS = {
    "today": BASE,
    "dump0.1": Variant("dump0.1", dump_after=0.1),
    "dump0.25": Variant("dump0.25", dump_after=0.25),
    "dump0.5": Variant("dump0.5", dump_after=0.5),
    "gap0.5": Variant("gap0.5", gap_trim=0.5),
    "gap1.0": Variant("gap1.0", gap_trim=1.0),
    "dump0.25+gap0.5": Variant("dump0.25+gap0.5", dump_after=0.25, gap_trim=0.5),
    "dump0.5+gap1.0": Variant("dump0.5+gap1.0", dump_after=0.5, gap_trim=1.0),
    "clip3": Variant("clip3", clip_upper=3.0),
    "split": Variant("split"),                       # detrend each stretch between gaps > 10 min separately
    "split+dump0.25": Variant("split+dump0.25", dump_after=0.25),
    "split+gap0.5": Variant("split+gap0.5", gap_trim=0.5),
}
SPLIT.update({"split": 0.0105, "split+dump0.25": 0.0105, "split+gap0.5": 0.0105})
for _n, _v in [("segnoise", Variant("segnoise")), ("segnoise+dump0.1", Variant("x", dump_after=0.1)),
               ("segnoise+dump0.25", Variant("x", dump_after=0.25)), ("segnoise+dump0.5", Variant("x", dump_after=0.5)),
               ("segnoise+gap0.25", Variant("x", gap_trim=0.25)), ("segnoise+gap0.5", Variant("x", gap_trim=0.5)),
               ("segnoise+dump0.25+gap0.25", Variant("x", dump_after=0.25, gap_trim=0.25)),
               ("segnoise+clip3", Variant("x", clip_upper=3.0))]:
    VARIANTS[_n] = dataclasses.replace(_v, name=_n); SEGNOISE[_n] = 0.5
ITER = {}
for _n, _v, _sn in [("iter3", BASE, None), ("iter3+segnoise", BASE, 0.5), ("iter3+dump0.25", Variant("x", dump_after=0.25), None),
                     ("iter3+dump0.25+segnoise", Variant("x", dump_after=0.25), 0.5), ("iter3+dump0.25+gap0.25+segnoise", Variant("x", dump_after=0.25, gap_trim=0.25), 0.5)]:
    VARIANTS[_n] = dataclasses.replace(_v, name=_n); ITER[_n] = 3.0
    if _sn: SEGNOISE[_n] = _sn
VARIANTS["gap0.25"] = Variant("gap0.25", gap_trim=0.25)
VARIANTS["dump0.25+gap0.25"] = Variant("dump0.25+gap0.25", dump_after=0.25, gap_trim=0.25)
P1, E1, D1 = 35.6134391, 3202.210988, 3.512 / 24
P2, E2, D2 = 7.7897726, 3201.824941, 2.376 / 24
HD, WASP = 279741379, 25155310


def near(p, ref, tol=0.02):
    return any(abs(p / (ref * k) - 1) < tol for k in (1, 2, 0.5))


def run(name):
    v = VARIANTS[name]; split = SPLIT.get(name)
    out = {"variant": name, "params": dataclasses.asdict(v) | {"split_gap": split, "seg_noise_gap": SEGNOISE.get(name), "iter_sigma": ITER.get(name)}}
    paths = star_files(HD)
    lc = stitch([load(p, v) for p in paths])
    r = patched_search3(lc, split, SEGNOISE.get(name), ITER.get(name))
    out["hd_signals"] = [sig_str(s) for s in r.signals]
    out["hd_best_is_b"] = bool(r.signals and near(r.signals[0].period_days, P1))
    out["hd_b_any"] = [i for i, s in enumerate(r.signals) if near(s.period_days, P1)]
    out["hd_c_any"] = [i for i, s in enumerate(r.signals) if near(s.period_days, P2)]
    t, y, dy = transits._series(lc.time, r.flat, BIN_DAYS)
    bls = BoxLeastSquares(t, y, dy=dy)
    rb = bls.power([P1], D1 * np.array([0.9, 1.0, 1.1]), objective="snr", oversample=20)
    rc = bls.power([P2], D2 * np.array([0.9, 1.0, 1.1]), objective="snr", oversample=20)
    out["bls_snr_b"] = round(float(rb.depth_snr[0]), 1); out["bls_snr_c"] = round(float(rc.depth_snr[0]), 1)
    out["best_bls"] = round(r.signals[0].bls_snr, 1) if r.signals else None
    out["b_transits"] = describe(transit_depths(t, y, P1, E1, D1))
    out["n_valid"] = int(lc.n_valid)
    if r.signals:
        s = r.signals[0]
        out["best_transits"] = describe(transit_depths(t, y, s.period_days, s.epoch_btjd, s.duration_days))
    singles = {}
    for p in sorted(LC_DIR.glob("*.fits")):
        one = load(p, v)
        rs = patched_search3(one, split, SEGNOISE.get(name), ITER.get(name))
        singles[f"{one.tic_id}-s{one.sector}"] = [(round(s.period_days, 3), round(s.snr, 1)) for s in rs.signals]
    out["singles"] = singles
    w = stitch([load(p, v) for p in star_files(WASP)])
    rw = patched_search3(w, split, SEGNOISE.get(name), ITER.get(name))
    out["wasp126"] = [(round(s.period_days, 3), round(s.snr, 1)) for s in rw.signals]
    return out


if __name__ == "__main__":
    names = list(VARIANTS) if sys.argv[1:] == ["all"] else sys.argv[1:]
    for n in names:
        t0 = _time.time()
        o = run(n)
        o["seconds"] = round(_time.time() - t0, 1)
        print(json.dumps(o), flush=True)
