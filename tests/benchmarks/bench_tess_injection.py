"""Injection-recovery benchmark for the transit search (a script, not a test).

Transits (trapezoids, 10 % ingress/egress) are injected into the real light curves of the four
non-TOI stars in ../shared/data/tess/lc over a grid of depth and period (random epoch); each
injected curve goes through the stream's own search (stream.transits.search) and, when a model is
available, the shipped model and alert policy (stream.scoring.transit_predictor).

Reported:
- recall against the injected signal-to-noise (depth / per-cadence scatter * sqrt(in-transit
  cadences)): recovered = some reported signal has the injected period within 1 % (or, counted
  separately, a 1/2x or 2x alias) and a transit within half a duration of an injected one;
- recall of alerts (the policy fired for the recovered signal) when the model is there;
- false alarms on the uninjected curves: signals above the detection threshold and alerts.

    .venv/bin/python tests/benchmarks/bench_tess_injection.py [--per-cell 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import trapezoid  # noqa: E402

from stream.features import transits  # noqa: E402
from stream.features.lightcurves import read_lightcurve  # noqa: E402

LC_DIR = ROOT.parent / "shared" / "data" / "tess" / "lc"
NON_TOI = ["tic260161111_s07_lc.fits", "tic382575718_s08_lc.fits", "tic188172563_s09_lc.fits",
           "tic1629601_s10_lc.fits"]
DEPTHS_PPM = [150, 300, 600, 1200, 2400, 4800]
PERIODS_D = [0.9, 1.7, 3.3, 6.1, 11.0]
SNR_BINS = [0, 5, 7.5, 10, 15, 20, 40, 1e9]


def injected_snr(clean: transits.SearchResult, period: float, epoch: float, duration: float, depth: float) -> float:
    """Depth over the scatter of duration-long averages of the uninjected detrended flux, times
    sqrt(transits with data): white noise and the star's own correlated noise both count."""
    t, y, counts = transits.bin_means(clean.time, clean.flat, duration)
    full = counts >= 0.5 * np.median(counts)
    sigma = transits.robust_std(y[full])
    x = transits.fold(clean.time, period, epoch)
    number = np.round((clean.time - epoch) / period).astype(int)
    inside = np.abs(x) < 0.5 * duration
    n_transits = len(np.unique(number[inside]))
    return float(depth / sigma * np.sqrt(n_transits)) if n_transits else 0.0


def match(signals: list[dict], period: float, epoch: float, duration: float) -> tuple[int | None, str]:
    """Index of the reported signal that recovers the injection, and how (exact or alias)."""
    for kind, factors in (("exact", (1.0,)), ("alias", (0.5, 2.0))):
        for i, s in enumerate(signals):
            for f in factors:
                if abs(s["period_days"] - period * f) <= 0.01 * period * f:
                    dt = (s["epoch_btjd"] - epoch + 0.5 * period) % period - 0.5 * period
                    if abs(dt) < max(0.5 * duration, s["duration_hours"] / 48.0) or f == 0.5:
                        return i, kind
    return None, "missed"


def load_scorer():
    """(model, scorer) from the shipped registry, or (None, None) without a model."""
    try:
        from stream.models.registry import BUNDLED, LocalRegistry
        from stream.scoring import transit_predictor as transit_model
        from stream.scoring.onnx_model import OnnxModel

        model = OnnxModel(LocalRegistry(BUNDLED, seed_from=None).load("tess"))
        return model, transit_model
    except Exception as exc:  # the benchmark still measures the search without a model
        print(f"(no model: {exc}; reporting detection only)")
        return None, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-cell", type=int, default=2, help="random epochs per (star, depth, period)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--detect-snr", type=float, default=7.1, help="a signal counts as a detection above this")
    ap.add_argument("--show-misses", action="store_true", help="list missed injections with SNR >= 10")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a SearchConfig field (tuning), e.g. --set coarse_bin_minutes=30")
    args = ap.parse_args()
    config = transits.DEFAULT_CONFIG
    for item in args.set:
        key, value = item.split("=", 1)
        config = dataclasses.replace(config, **{key: ast.literal_eval(value)})
    rng = np.random.default_rng(args.seed)
    model, scorer = load_scorer()

    rows = []
    false_alarms = []
    t_start = time.perf_counter()
    for name in NON_TOI:
        base = read_lightcurve((LC_DIR / name).read_bytes())
        clean = transits.search(base, config)
        feats = transits.features_from_lightcurve(base, uri=name, file_id=name, detected_at_ms=0, config=config)
        strong = [s for s in feats["signals"] if s["snr"] >= args.detect_snr]
        alerts = []
        if model is not None:
            alerts = scorer.transit_alerts(scorer.predict_transits(model, [feats], None)[0])
        false_alarms.append((name, len(feats["signals"]), len(strong), len(alerts), clean.robust_rms))
        star_r = base.radius_rsun or 1.0
        for depth_ppm in DEPTHS_PPM:
            for period in PERIODS_D:
                duration = 13.0 / 24.0 * (period / 365.25) ** (1 / 3) * star_r
                for _ in range(args.per_cell):
                    epoch = base.time[0] + rng.uniform(0, period)
                    flux = base.flux * trapezoid(base.time, period, epoch, duration, depth_ppm * 1e-6)
                    lc = dataclasses.replace(base, flux=flux)
                    snr = injected_snr(clean, period, epoch, duration, depth_ppm * 1e-6)
                    feats = transits.features_from_lightcurve(lc, uri=name, file_id=name, detected_at_ms=0,
                                                              config=config)
                    index, how = match(feats["signals"], period, epoch, duration)
                    alerted = None
                    if model is not None and index is not None:
                        fired = scorer.transit_alerts(scorer.predict_transits(model, [feats], None)[0])
                        alerted = any(a["signal_index"] == index for a in fired)
                    rows.append((name, depth_ppm, period, snr, how, index, alerted))
                    if args.show_misses and how == "missed" and snr >= 10:
                        found = ", ".join(f"P={s['period_days']:.3f} snr={s['snr']:.1f}" for s in feats["signals"])
                        print(f"  missed {name} depth={depth_ppm} P={period} snr={snr:.1f}: {found}")
    elapsed = time.perf_counter() - t_start

    snrs = np.array([r[3] for r in rows])
    print(f"config: {config.describe()}")
    print(f"{len(rows)} injections into {len(NON_TOI)} non-TOI light curves, {elapsed:.0f} s")
    print(f"{'injected SNR':>14} {'n':>4} {'recall':>7} {'+alias':>7} {'alerted':>8}")
    for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:], strict=True):
        sel = [r for r, s in zip(rows, snrs, strict=True) if lo <= s < hi]
        if not sel:
            continue
        exact = np.mean([r[4] == "exact" for r in sel])
        alias = np.mean([r[4] != "missed" for r in sel])
        alert_txt = f"{np.mean([bool(r[6]) for r in sel]):8.2f}" if model is not None else "     n/a"
        label = f"{lo:g}-{hi:g}" if hi < 1e8 else f">={lo:g}"
        print(f"{label:>14} {len(sel):4d} {exact:7.2f} {alias:7.2f} {alert_txt}")
    high = [r for r, s in zip(rows, snrs, strict=True) if s >= 10]
    print(f"recall at injected SNR >= 10: {np.mean([r[4] == 'exact' for r in high]):.3f} exact, "
          f"{np.mean([r[4] != 'missed' for r in high]):.3f} with aliases (n={len(high)})")
    if model is not None:
        print(f"alert recall at injected SNR >= 10: {np.mean([bool(r[6]) for r in high]):.3f}")
    print("uninjected curves (false alarms):")
    for name, n_sig, n_strong, n_alerts, rms in false_alarms:
        print(f"  {name}: rms {rms * 1e6:.0f} ppm, {n_sig} signals reported, {n_strong} with SNR >= "
              f"{args.detect_snr:g}, {n_alerts} alerts")
    n_curves = len(false_alarms)
    print(f"false-alarm rate: {sum(f[2] > 0 for f in false_alarms)}/{n_curves} curves with a detection, "
          f"{sum(f[3] > 0 for f in false_alarms)}/{n_curves} with an alert")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
