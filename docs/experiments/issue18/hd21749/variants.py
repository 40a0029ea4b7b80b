# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
"""Scratch: cleaning variants for read_lightcurve + transits.search (repo untouched; imports it)."""
from __future__ import annotations
import dataclasses, sys
from pathlib import Path
import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from stream.features import transits  # noqa: E402
from stream.features.lightcurves import LightCurve, read_lightcurve, stitch  # noqa: E402

LC_DIR = Path(__file__).resolve().parents[5] / "shared" / "data" / "tess" / "lc"
BIN_DAYS = 10.0 / 1440.0


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    dump_after: float = 0.0      # days dropped after each momentum dump (QUALITY bit 32, 'Desat')
    dump_before: float = 0.0     # days dropped before each momentum dump
    dump_bits: int = 32          # bits marking a dump event (32 desat; 32|1024 for later sectors)
    gap_trim: float = 0.0        # days dropped at the start of each segment (sector start / after a gap)
    gap_trim_end: float = 0.0    # days dropped at the end of each segment (before a gap / sector end)
    gap_min: float = 0.5         # a gap in the valid cadences longer than this starts a new segment
    clip_upper: float | None = None  # sigma-clip positive outliers (cadence level, vs. running median)


BASE = Variant("today")


def _raw(path: Path):
    with fits.open(path, memmap=False) as h:
        d = h[1].data
        return np.array(d["TIME"], float), np.array(d["QUALITY"], np.int64)


def event_times(time: np.ndarray, quality: np.ndarray, bits: int) -> np.ndarray:
    """Times of events (contiguous runs of flagged cadences -> last flagged time of each run)."""
    flagged = ((quality & bits) != 0) & np.isfinite(time)
    t = time[flagged]
    if t.size == 0:
        return t
    runs = np.split(t, np.flatnonzero(np.diff(t) > 0.02) + 1)
    return np.array([r[-1] for r in runs])


def extra_mask(lc: LightCurve, raw_time: np.ndarray, raw_q: np.ndarray, v: Variant) -> np.ndarray:
    """True for cadences of ``lc`` the variant keeps."""
    t = lc.time
    keep = np.ones(t.size, bool)
    if v.dump_after > 0 or v.dump_before > 0:
        for e in event_times(raw_time, raw_q, v.dump_bits):
            keep &= ~((t >= e - v.dump_before) & (t <= e + v.dump_after))
    if v.gap_trim > 0 or v.gap_trim_end > 0:
        # segments of the valid cadences separated by gaps > gap_min (the sector start/end are edges too)
        brk = np.flatnonzero(np.diff(t) > v.gap_min)
        starts = np.r_[t[0], t[brk + 1]]
        ends = np.r_[t[brk], t[-1]]
        for s, e in zip(starts, ends):
            if v.gap_trim > 0:
                keep &= ~((t >= s) & (t < s + v.gap_trim))
            if v.gap_trim_end > 0:
                keep &= ~((t <= e) & (t > e - v.gap_trim_end))
    return keep


def clip_upper(lc: LightCurve, sigma: float) -> np.ndarray:
    flat, _ = transits.detrend(lc)
    r = flat - 1.0
    return r < sigma * transits.robust_std(r)


def load(path: Path, v: Variant = BASE) -> LightCurve:
    lc = read_lightcurve(path.read_bytes())
    if v == BASE or (v.dump_after == v.dump_before == v.gap_trim == v.gap_trim_end == 0 and v.clip_upper is None):
        return lc
    rt, rq = _raw(path)
    keep = extra_mask(lc, rt, rq, v)
    lc = dataclasses.replace(lc, time=lc.time[keep], flux=lc.flux[keep], flux_err=lc.flux_err[keep])
    if v.clip_upper is not None:
        keep = clip_upper(lc, v.clip_upper)
        lc = dataclasses.replace(lc, time=lc.time[keep], flux=lc.flux[keep], flux_err=lc.flux_err[keep])
    med = float(np.median(lc.flux))  # read_lightcurve normalises the kept cadences to median 1
    return dataclasses.replace(lc, flux=lc.flux / med, flux_err=lc.flux_err / med)


def star_files(tic: int) -> list[Path]:
    out = []
    for p in sorted(LC_DIR.glob("*.fits")):
        if read_lightcurve(p.read_bytes()).tic_id == tic:
            out.append(p)
    return out


def transit_depths(t, y, period, epoch, duration):
    first = epoch + np.ceil((t[0] - duration - epoch) / period) * period
    rows = []
    for mid in np.arange(first, t[-1] + duration, period):
        inside = np.abs(t - mid) < duration / 2
        rows.append((float(mid), int(inside.sum()), float((1 - y[inside].mean()) * 1e6) if inside.any() else None))
    return rows


def describe(rows):
    seen = [f"{mid:.2f} ({n}b, {depth:.0f})" for mid, n, depth in rows if depth is not None]
    gaps = sum(depth is None for _, _, depth in rows)
    return ", ".join(seen) + (f"; {gaps} in gaps" if gaps else "")


def sig_str(s):
    return f"{s.period_days:.3f} d SNR {s.snr:.1f} (bls {s.bls_snr:.1f}) {s.depth*1e6:.0f} ppm ep {s.epoch_btjd:.2f} n{s.n_transits}"


# -- segment-wise detrending (lightkurve flatten's break_tolerance convention) ---------------------
_ORIG_DETREND = transits.detrend


def make_split_detrend(split_gap: float, min_seg_days: float = 0.0):
    """transits.detrend, run separately on each stretch between gaps > split_gap days."""
    def detrend(lc, config=transits.DEFAULT_CONFIG):
        t = lc.time
        brk = np.flatnonzero(np.diff(t) > split_gap) + 1
        bounds = np.r_[0, brk, t.size]
        flat, trend = np.empty_like(lc.flux), np.empty_like(lc.flux)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b - a < 5:
                trend[a:b] = np.median(lc.flux[a:b]); flat[a:b] = lc.flux[a:b] / trend[a:b]
                continue
            sub = dataclasses.replace(lc, time=t[a:b], flux=lc.flux[a:b], flux_err=lc.flux_err[a:b], segment=None)
            flat[a:b], trend[a:b] = _ORIG_DETREND(sub, config)
        return flat, trend
    return detrend


def patched_search(lc, split_gap=None):
    if split_gap is None:
        return transits.search(lc)
    transits.detrend = make_split_detrend(split_gap)
    try:
        return transits.search(lc)
    finally:
        transits.detrend = _ORIG_DETREND


# -- per-segment noise for the BLS weights ---------------------------------------------------------
_ORIG_SERIES = transits._series


def make_segment_series(seg_gap: float = 0.5, min_full: int = 50):
    """transits._series, but the bin uncertainty is the robust scatter of full bins *per stretch between
    gaps > seg_gap days* (orbits; a sector-4 anomaly gap), not one scatter for the whole light curve."""
    def _series(time, flat, width):
        t, y, counts = transits.bin_means(time, flat, width)
        full = int(np.median(counts))
        glob = transits.robust_std(y[counts == full]) if (counts == full).sum() > min_full else transits.robust_std(y)
        brk = np.flatnonzero(np.diff(t) > seg_gap) + 1
        sigma = np.empty(t.size)
        for s in np.split(np.arange(t.size), brk):
            ys, cs = y[s], counts[s]
            ok = cs == full
            if ok.sum() >= 20:
                sigma[s] = transits.robust_std(ys[ok])
            elif s.size >= 20:
                sigma[s] = transits.robust_std(ys)
            else:
                sigma[s] = glob
        sigma = np.maximum(sigma, 0.5 * glob)  # never weight a stretch more than 4x the whole
        dy = sigma * np.sqrt(full / counts)
        keep = y < 1.0 + 5.0 * dy
        return t[keep], y[keep], dy[keep]
    return _series


def patched_search2(lc, split_gap=None, seg_noise=None):
    """transits.search with optional segment-wise detrending and/or per-segment BLS noise."""
    if split_gap is not None:
        transits.detrend = make_split_detrend(split_gap)
    if seg_noise is not None:
        transits._series = make_segment_series(seg_noise)
    try:
        return transits.search(lc)
    finally:
        transits.detrend = _ORIG_DETREND
        transits._series = _ORIG_SERIES


# -- iterative detrending: outliers (both sides) excluded from the trend, as lightkurve's flatten(sigma, niters)
def make_iter_detrend(sigma: float = 3.0, niters: int = 3, inner=None):
    base = inner or _ORIG_DETREND
    def detrend(lc, config=transits.DEFAULT_CONFIG):
        use = np.ones(lc.time.size, bool)
        flat, trend = base(lc, config)
        for _ in range(niters):
            # judge outliers on 30-min means (a 2-min cadence's noise hides a 1000-ppm dip)
            step = 30 / 1440
            idx = np.floor((lc.time - lc.time[0]) / step).astype(int)
            cnt = np.bincount(idx); mean = np.bincount(idx, flat) / np.maximum(cnt, 1)
            s = transits.robust_std(mean[cnt > 0.8 * np.median(cnt[cnt > 0])] - 1)
            new = np.abs(mean[idx] - 1) < sigma * s
            if (new == use).all() or new.sum() < 0.5 * new.size:
                break
            use = new
            sub = dataclasses.replace(lc, time=lc.time[use], flux=lc.flux[use], flux_err=lc.flux_err[use], segment=None)
            _, tr = base(sub, config)
            trend = np.interp(lc.time, sub.time, tr)
            flat = lc.flux / trend
        return flat, trend
    return detrend


def patched_search3(lc, split_gap=None, seg_noise=None, iterate=None):
    if iterate is not None:
        inner = make_split_detrend(split_gap) if split_gap is not None else None
        transits.detrend = make_iter_detrend(iterate, 3, inner)
    elif split_gap is not None:
        transits.detrend = make_split_detrend(split_gap)
    if seg_noise is not None:
        transits._series = make_segment_series(seg_noise)
    try:
        return transits.search(lc)
    finally:
        transits.detrend = _ORIG_DETREND
        transits._series = _ORIG_SERIES
