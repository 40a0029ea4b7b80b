"""Per-light-curve speed of the stream's TESS work against reference lightkurve pipelines (a script).

All run on the same files in the same process, one after the other per file, so machine load
affects them alike (on a shared machine, compare the ratios, and repeat):

- ours: stream.lightcurves.read_lightcurve -> stream.transits.features_from_lightcurve (detrend,
  multi-signal BLS search, views) -> stream.transit_model.predict_transits (ONNX), i.e. what a
  worker does per file;
- "tutorial", the pipeline of lightkurve's own tutorial "Identifying transiting exoplanet signals
  in a light curve", as users copy it: ``lk.read`` (default quality bitmask) ->
  ``remove_nans().normalize().flatten(window_length=901).remove_outliers()`` ->
  ``to_periodogram("bls", period=np.linspace(1, 20, 10000), frequency_factor=500)`` -> ``fold``
  at the best period;
- "lean", the same with lightkurve's default period grid (autoperiod, frequency_factor 10) over
  0.5 d to half the baseline: a user who knows BLS costs grow with the grid.

It checks that they find the same period (a reference's best against any of our signals) and
which known planets each recovers (within 0.5 %), then prints a summary (median seconds per
light curve for ours and each reference, wall clock and CPU time of this process, the speed
ratios, known periods recovered by each) and where our time goes (cProfile; the profiler
inflates Python-heavy code such as astropy's FITS headers relative to C loops such as BLS).

    deploy/local/bench-env.sh   # once: .venv-bench, the serving side plus a pinned lightkurve
    .venv-bench/bin/python tests/benchmarks/bench_tess_speed.py [--repeat 3]

lightkurve is kept out of the project's .venv (docs/benchmarks.md says why).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stream.features import transits  # noqa: E402
from stream.features.lightcurves import read_lightcurve  # noqa: E402
from stream.scoring import transit_predictor as transit_model  # noqa: E402

LC_DIR = ROOT.parent / "shared" / "data" / "tess" / "lc"
# Known periods (d) per TIC from the TOI catalogue (toi_2025-10-04.csv); TOI-216 b's period in its
# 2018 data is 17.09 d (its transits at BTJD 1325.33 and 1342.43), the catalogue lists 17.389 d.
KNOWN = {25155310: [3.2887898], 55652896: [34.5059318, 17.3890454, 17.09], 279741379: [35.6134391, 7.7897726],
         388106759: [28.3057042]}


def ours(path: Path, model) -> tuple[float, float, list[float]]:
    """(wall s, CPU s, periods of our signals) for one file."""
    t0, c0 = time.perf_counter(), time.process_time()
    data = path.read_bytes()
    lc = read_lightcurve(data)
    feats = transits.features_from_lightcurve(lc, uri=str(path), file_id=path.name, detected_at_ms=0)
    if model is not None:
        transit_model.predict_transits(model, [feats], None)
    return time.perf_counter() - t0, time.process_time() - c0, [s["period_days"] for s in feats["signals"]]


def reference(path: Path, variant: str) -> tuple[float, float, float, dict[str, float]]:
    """(wall s, CPU s, best period, wall s per step) of a lightkurve pipeline for one file."""
    import lightkurve as lk

    t0, c0 = time.perf_counter(), time.process_time()
    lc = lk.read(str(path)).remove_nans().normalize()
    t1 = time.perf_counter()
    if variant == "tutorial":
        flat = lc.flatten(window_length=901).remove_outliers()
        t2 = time.perf_counter()
        pg = flat.to_periodogram("bls", period=np.linspace(1, 20, 10000), frequency_factor=500)
    else:
        flat = lc.flatten(window_length=721)
        t2 = time.perf_counter()
        baseline = float(flat.time.value[-1] - flat.time.value[0])
        pg = flat.to_periodogram("bls", minimum_period=0.5, maximum_period=baseline / 2)
    t3 = time.perf_counter()
    period = float(pg.period_at_max_power.value)
    flat.fold(period=period, epoch_time=pg.transit_time_at_max_power)
    t4 = time.perf_counter()
    return t4 - t0, time.process_time() - c0, period, {"read": t1 - t0, "flatten": t2 - t1, "bls": t3 - t2,
                                                      "fold": t4 - t3}


def recovered(periods: list[float], known: list[float]) -> list[float]:
    return [k for k in known if any(abs(p / k - 1) <= 0.005 for p in periods)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1, help="time each pipeline this many times per file (min)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # lightkurve's deprecation chatter
    try:
        import lightkurve  # noqa: F401
    except ImportError:
        raise SystemExit("lightkurve is needed for the reference pipelines and lives in its own environment:\n"
                         "  deploy/local/bench-env.sh\n"
                         f"  .venv-bench/bin/python {Path(__file__).relative_to(ROOT)} {' '.join(sys.argv[1:])}"
                         ) from None
    try:
        from stream.models.registry import BUNDLED, LocalRegistry
        from stream.scoring.onnx_model import OnnxModel

        model = OnnxModel(LocalRegistry(BUNDLED, seed_from=None).load("tess"))
    except Exception as exc:
        print(f"(no shipped model: {exc}; timing without scoring)")
        model = None

    files = sorted(LC_DIR.glob("*.fits"))
    variants = ("tutorial", "lean")
    ours(files[0], model), [reference(files[0], v) for v in variants]  # warm-up: imports, caches
    rows = []
    for path in files:  # per file: ours, then each reference, `repeat` times each (min kept)
        runs = [ours(path, model) for _ in range(args.repeat)]
        mine = (min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2])
        refs = {}
        for v in variants:
            ref_runs = [reference(path, v) for _ in range(args.repeat)]
            refs[v] = (min(r[0] for r in ref_runs), min(r[1] for r in ref_runs), ref_runs[0][2], ref_runs[0][3])
        tic = read_lightcurve(path.read_bytes()).tic_id
        rows.append((path.name, mine, refs, KNOWN.get(tic, [])))

    n_known = sum(len(r[3]) for r in rows)
    rec_ours = sum(len(recovered(r[1][2], r[3])) for r in rows)
    for v in variants:
        print(f"\n== reference: {v}")
        print(f"{'file':44} {'ours s':>7} {'lk s':>7} {'x':>6}  same  periods (lk | ours)   known recovered ours / lk")
        for name, (t_o, _, periods), refs, known in rows:
            t_r, _, ref_p, _ = refs[v]
            same = any(abs(p / ref_p - 1) <= 0.01 for p in periods)
            rec_o, rec_r = recovered(periods, known), recovered([ref_p], known)
            known_txt = f"{len(rec_o)}/{len(known)} / {len(rec_r)}/{len(known)}" if known else "-"
            print(f"{name[:44]:44} {t_o:7.3f} {t_r:7.3f} {t_r / t_o:6.1f}  {'yes' if same else 'no ':>4}  "
                  f"{ref_p:8.4f} | {', '.join(f'{p:.4f}' for p in periods)}   {known_txt}")
        parts = {k: np.median([r[2][v][3][k] for r in rows]) for k in rows[0][2][v][3]}
        print("lightkurve median seconds: " + ", ".join(f"{k} {val:.3f}" for k, val in parts.items()))

    wall_o = np.array([r[1][0] for r in rows])
    cpu_o = np.array([r[1][1] for r in rows])
    print(f"\n== summary over {len(rows)} light curves (min of {args.repeat} run(s) per file; CPU = this process)")
    print(f"{'pipeline':10} {'median wall s':>14} {'median CPU s':>13} {'ratio wall':>11} {'ratio CPU':>10} "
          f"{'per-file wall ratio (median, min)':>34}  known periods recovered (0.5 %)")
    print(f"{'ours':10} {np.median(wall_o):14.3f} {np.median(cpu_o):13.3f} {'':>11} {'':>10} {'':>34}  "
          f"{rec_ours}/{n_known}")
    for v in variants:
        wall_r = np.array([r[2][v][0] for r in rows])
        cpu_r = np.array([r[2][v][1] for r in rows])
        rec_r = sum(len(recovered([r[2][v][2]], r[3])) for r in rows)
        per_file = wall_r / wall_o
        print(f"{v:10} {np.median(wall_r):14.3f} {np.median(cpu_r):13.3f} "
              f"{np.median(wall_r) / np.median(wall_o):10.1f}x {np.median(cpu_r) / np.median(cpu_o):9.1f}x "
              f"{f'{np.median(per_file):.1f}x, {per_file.min():.1f}x':>34}  {rec_r}/{n_known}")
    print("(ratio = the reference's median time over ours: how many times faster ours is per light curve)")

    profile = cProfile.Profile()
    profile.enable()
    for path in files:
        ours(path, model)
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = stats.total_tt
    groups = {  # label -> functions (not nested in each other) whose cumulative time it sums
        "read FITS (astropy)": ["read_lightcurve"],
        "detrend (running median)": ["adaptive_detrend"],
        "BLS scan + full grid at peaks": ["_scanned_power"],
        "BLS peak refinement": ["_refine"],
        "transit count, SNR": ["_assess"],
        "views": ["global_view", "local_view"],
        "ONNX scoring": ["predict_transits"],
    }
    print(f"\nwhere our time goes ({len(files)} files, {total:.2f} s under the profiler):")
    grouped = 0.0
    for label, names in groups.items():
        cum = sum(v[3] for k, v in stats.stats.items() if k[2] in names and "stream" in k[0])
        grouped += cum
        print(f"  {label:30} {cum:7.3f} s  {100 * cum / total:5.1f} %")
    print(f"  {'other (spectra, peaks, masks)':30} {total - grouped:7.3f} s  {100 * (total - grouped) / total:5.1f} %")
    stats.sort_stats("tottime").print_stats(12)
    print("\n".join(out.getvalue().splitlines()[-22:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
