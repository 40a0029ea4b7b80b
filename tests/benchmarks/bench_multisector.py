"""What a search over a star's stitched sectors finds, against the TOI catalogue (a diagnostic script).

For every star with two or more sectors in ../shared/data/tess/lc (HD 21749 = TIC 279741379, sectors
1-4; WASP-126 = TIC 25155310, sectors 1 and 6), this stitches its sectors (each normalised and
detrended on its own: stream.features.lightcurves.stitch, stream.features.transits.search) and prints:

- the signals of each sector searched alone, and of the stitched search;
- for each TOI of the star (../shared/data/tess/catalogs): every transit its ephemeris puts inside
  the data's span, with the cadences there and the depth measured (mean detrended flux within half
  a duration of mid-transit, 10-minute bins), so a transit in a gap, at a sector's edge or in a
  systematics ramp shows as such;
- the BLS SNR of a box at the TOI's period (durations 0.9-1.1x the TOI's) next to that of the
  stitched search's strongest signal, and the depth of each transit of that signal;
- what the shipped TESS model and alert policy make of the stitched signals (P(planet), TOI match,
  whether it would alert), as a multi-sector stage would score them.

    .venv/bin/python tests/benchmarks/bench_multisector.py [--tic 279741379]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from astropy.timeseries import BoxLeastSquares

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stream.features import transits  # noqa: E402
from stream.features.lightcurves import LightCurve, read_lightcurve, stitch  # noqa: E402
from stream.scoring import toi as toi_catalog  # noqa: E402
from stream.scoring.scorer import scorer_for  # noqa: E402
from stream.scoring.transit_predictor import transit_alerts  # noqa: E402
from stream.settings import Settings  # noqa: E402

LIGHT_CURVES = ROOT.parent / "shared" / "data" / "tess" / "lc"
BIN_DAYS = 10.0 / 1440.0


def stars() -> dict[int, list[LightCurve]]:
    """TIC id -> its light curves (sector order), for every star with two or more."""
    by_tic: dict[int, list[LightCurve]] = defaultdict(list)
    for path in sorted(LIGHT_CURVES.glob("*.fits")):
        lc = read_lightcurve(path.read_bytes())
        by_tic[lc.tic_id].append(lc)
    return {tic: sorted(lcs, key=lambda c: c.time[0]) for tic, lcs in by_tic.items() if len(lcs) > 1}


def transit_depths(t: np.ndarray, y: np.ndarray, period: float, epoch: float, duration: float
                   ) -> list[tuple[float, int, float | None]]:
    """(mid-time, binned points within half a duration, mean depth in ppm) of each transit in the span."""
    first = epoch + np.ceil((t[0] - duration - epoch) / period) * period
    rows = []
    for mid in np.arange(first, t[-1] + duration, period):
        inside = np.abs(t - mid) < duration / 2
        rows.append((float(mid), int(inside.sum()), float((1 - y[inside].mean()) * 1e6) if inside.any() else None))
    return rows


def describe(rows: list[tuple[float, int, float | None]]) -> str:
    """The transits with data, and how many fell in gaps."""
    seen = [f"{mid:.2f} ({n} bins, {depth:.0f} ppm)" for mid, n, depth in rows if depth is not None]
    gaps = sum(depth is None for _, _, depth in rows)
    return ", ".join(seen) + (f"; {gaps} in gaps" if gaps else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tic", type=int, default=None, help="only this star")
    args = ap.parse_args()
    catalog = toi_catalog.load_default()
    scorer = scorer_for(Settings())
    for tic, curves in stars().items():
        if args.tic and tic != args.tic:
            continue
        print(f"== TIC {tic}: sectors {', '.join(str(c.sector) for c in curves)}")
        for c in curves:
            found = transits.search(c).signals
            print(f"  sector {c.sector} alone: " + "; ".join(f"{s.period_days:.3f} d (SNR {s.snr:.1f}, "
                                                           f"{s.n_transits} transits)" for s in found))
        lc = stitch(curves)
        result = transits.search(lc)
        print("  stitched: " + "; ".join(f"{s.period_days:.3f} d (SNR {s.snr:.1f}, {s.n_transits} transits, "
                                         f"epoch {s.epoch_btjd:.3f})" for s in result.signals))
        record = transits.features_from_lightcurve(lc, uri=f"stitched/TIC{tic}", file_id=f"stitched-{tic}",
                                                   detected_at_ms=1)
        [scored] = scorer.score("lightcurve", [record])
        alerted = {a["signal_index"] for a in transit_alerts(scored)}
        for i, s in enumerate(scored["signals"]):
            print(f"    scored: {s['period_days']:.3f} d, P(planet) {s['planet_probability']:.2f}, "
                  f"TOI {s['known_toi'] or 'none'}, {'ALERTS' if i in alerted else 'no alert'}")
        t, y, dy = transits._series(lc.time, result.flat, BIN_DAYS)
        bls = BoxLeastSquares(t, y, dy=dy)
        best = result.signals[0] if result.signals else None
        if best is not None:
            rows = transit_depths(t, y, best.period_days, best.epoch_btjd, best.duration_days)
            print(f"    its transits: {describe(rows)}")
        for known in (catalog.by_tic.get(tic, []) if catalog else []):
            if not (known.period_days and known.epoch_btjd and known.duration_hours):
                continue
            duration = known.duration_hours / 24.0
            r = bls.power([known.period_days], duration * np.array([0.9, 1.0, 1.1]), objective="snr", oversample=20)
            # Only the phase grid is searched here: a box at the catalogue's period, the best epoch.
            print(f"  {known.name} ({known.disposition}) P = {known.period_days:.4f} d, {known.duration_hours:.2f} h, "
                  f"{known.depth_ppm or 0:.0f} ppm: BLS SNR {float(r.depth_snr[0]):.1f} at its period "
                  f"(the stitched search's best: {best.bls_snr if best else float('nan'):.1f})")
            rows = transit_depths(t, y, known.period_days, known.epoch_btjd, duration)
            print(f"    its transits in the data's span: {describe(rows)}")


if __name__ == "__main__":
    main()
