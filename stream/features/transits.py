"""Transit search in a TESS light curve: detrending, box least squares, and Astronet-Triage views.

One pipeline, used by the stream (``lightcurve_features``), ``skystream score``, training checks
and the benchmarks:

1. ``detrend``: the light curve is averaged into short bins and divided by a running median in
   time whose window is three times the longest transit searched, so a transit cannot pull the
   trend down with it. A star whose residuals stay red on hour scales (spots, pulsations) is
   detrended again with a shorter window, and then only transits up to a third of it are searched.
2. ``search``: astropy's ``BoxLeastSquares`` over a period grid uniform in frequency^(1/3)
   (transit durations grow as P^(1/3), so the needed frequency step grows with frequency; Ofir
   2014) that adapts to the baseline (one sector or several), with durations plausible at each
   period. The grid runs on coarse bins, in full only around the strongest peaks of a sparser
   scan of it (most of the speed); the few strongest peaks are refined on finer bins and
   ranked by a signal-to-noise that counts correlated noise (scatter of the flux averaged over a
   transit duration). The best becomes a signal, its transits are masked, and the search repeats
   for further planets.
3. ``global_view`` / ``local_view``: phase-folded, median-binned views in the Astronet-Triage
   convention (Shallue & Vanderburg 2018 Sect. 3.3; Yu et al. 2019): 201 bins of width 1.2 P/201
   over [-P/2, P/2) and 61 bins of width 0.16 duration over +-2 durations, empty bins
   interpolated, each view shifted to median 0 and scaled so its minimum is -1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from astropy.timeseries import BoxLeastSquares
from numpy.lib.stride_tricks import sliding_window_view

from stream.errors import Rejected
from stream.features.lightcurves import LightCurve, read_lightcurve

__all__ = [
    "DEFAULT_CONFIG",
    "GLOBAL_BINS",
    "LOCAL_BINS",
    "SearchConfig",
    "SearchResult",
    "Signal",
    "adaptive_detrend",
    "detrend",
    "features_from_lightcurve",
    "fold",
    "global_view",
    "in_transit",
    "lightcurve_features",
    "lightcurve_from_bins",
    "local_view",
    "period_grid",
    "periodogram",
    "search",
    "sector_bins",
]

GLOBAL_BINS = 201
LOCAL_BINS = 61
SECTOR_BIN_MINUTES = 10.0  # what a star's state keeps of each sector (sector_bins)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that decides what the search finds; ``describe()`` goes into each record."""

    min_period_days: float = 0.5
    # None: the baseline, so a lone transit is still found (its period is then a lower bound).
    max_period_days: float | None = None
    durations_hours: tuple[float, ...] = (0.75, 1.0, 1.4, 2.0, 2.8, 4.0, 5.5, 7.5, 10.0)
    # Frequency step: a transit lasting duration_1d_days * P^(1/3) drifts by at most
    # 1/period_oversample of its duration over the baseline. 0.04 d: a 1-hour transit at P = 1 d.
    duration_1d_days: float = 0.04
    period_oversample: float = 1.5
    # Durations tried at period P: within [low, high] x the central-transit duration of a
    # Sun-like star, 13 h (P / 365 d)^(1/3); denser stars and grazing transits are shorter,
    # giants longer. Plausible durations only, per chunk of the period grid, is most of the speed.
    duration_range_sun: tuple[float, float] = (0.3, 2.5)
    period_chunks: int = 4
    coarse_bin_minutes: float = 30.0  # the full period grid runs on bins this wide
    bin_minutes: float = 10.0  # peaks are refined on bins this wide
    bls_oversample: int = 2  # phase bins per shortest duration on the coarse grid
    # The grid above is computed in full only where it matters: a scan with scan_density x its
    # periods and every other duration, on scan_bin_minutes bins, finds the scan_peaks highest
    # peaks of the raw and of the detrended scan spectrum, and the full grid runs within
    # +-scan_zoom_steps scan steps of each. A transit loses some power on the sparser scan, but
    # only has to rank among the top scan_peaks there, not first. With these values the injection
    # benchmark (tests/benchmarks/bench_tess_injection.py) recovers what the full grid does at
    # injected SNR >= 10, within an injection or two below, and the known planets in
    # ../shared/data/tess/lc likewise; sparser scans (density 0.25-0.36, 45-60-min bins) lose
    # narrow peaks. About 3x fewer BLS operations than the full grid. scan_density 1: the full grid.
    scan_density: float = 0.4
    scan_peaks: int = 10
    scan_zoom_steps: float = 0.75
    scan_bin_minutes: float = 40.0
    # Peaks refined per signal: the highest of the raw BLS SNR spectrum (a lone or few deep
    # transits: a plateau at long periods) and of the spectrum above its running level (SDE).
    candidates: int = 1
    trend_bin_minutes: float = 30.0  # the running median runs on bins this wide, then is interpolated
    window_factor: float = 3.0  # running-median window = window_factor * longest duration searched
    # Red-noise fallback: when hour-binned residuals scatter more than red_noise_limit times what
    # white noise would give, detrend with this shorter longest duration instead.
    red_noise_limit: float = 1.5
    short_max_duration_hours: float = 4.0
    max_signals: int = 3
    min_snr: float = 7.0  # a further signal is reported only at or above this SNR
    mask_factor: float = 1.0  # a found transit masks +-mask_factor durations around each centre

    @property
    def window_days(self) -> float:
        """Width of the running-median detrending window, in days."""
        return self.window_factor * max(self.durations_hours) / 24.0

    def shortened(self) -> SearchConfig:
        """This configuration for a star with strong short-term variability."""
        durations = tuple(d for d in self.durations_hours if d <= self.short_max_duration_hours)
        return dataclasses.replace(self, durations_hours=durations, red_noise_limit=math.inf)

    def describe(self) -> str:
        """One-line description of the search settings, recorded with each result."""
        return (
            f"transits-v1: running median {self.window_days:.2f} d "
            f"(red noise: {self.window_factor * self.short_max_duration_hours / 24:.2f} d); "
            f"BLS P {self.min_period_days:g}-{self.max_period_days or 'baseline'} d on "
            f"{self.coarse_bin_minutes:g}/{self.bin_minutes:g}-min bins "
            f"(scan: {self.scan_density:g}x the periods on {self.scan_bin_minutes:g}-min bins, full grid around "
            f"its {self.scan_peaks} + {self.scan_peaks} peaks), "
            f"durations {min(self.durations_hours):g}-{max(self.durations_hours):g} h, "
            f"<= {self.max_signals} signals, SNR >= {self.min_snr:g} after the first; "
            f"views {GLOBAL_BINS}/{LOCAL_BINS} bins (Astronet-Triage)"
        )


DEFAULT_CONFIG = SearchConfig()


@dataclass
class Signal:
    """One transit-like signal."""

    period_days: float
    epoch_btjd: float  # centre of the first transit that has data
    duration_days: float
    depth: float  # fractional
    snr: float  # depth over the scatter of duration-long averages, times sqrt(transits)
    bls_snr: float  # BLS depth / depth error (white noise)
    significance: float  # periodogram peak in robust standard deviations (SDE-like)
    n_transits: int  # transits with data (1: a lone transit; the period is then a lower bound)
    global_view: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(GLOBAL_BINS))
    local_view: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(LOCAL_BINS))

    def record(self) -> dict:
        """The TransitSignal part of a LightCurveFeatures message."""
        return {
            "period_days": float(self.period_days),
            "epoch_btjd": float(self.epoch_btjd),
            "duration_hours": float(self.duration_days * 24.0),
            "depth_ppm": float(self.depth * 1e6),
            "snr": float(self.snr),
            "significance": float(self.significance),
            "n_transits": int(self.n_transits),
            "global_view": [float(v) for v in self.global_view],
            "local_view": [float(v) for v in self.local_view],
        }


@dataclass
class SearchResult:
    """What a transit search found, with the detrended series and periodogram for figures."""
    signals: list[Signal]
    time: np.ndarray  # full-cadence time of the light curve
    flat: np.ndarray  # full-cadence detrended flux (median 1)
    trend: np.ndarray
    periods: np.ndarray  # the first search's periodogram, for figures
    power: np.ndarray
    robust_rms: float  # per-cadence scatter of the detrended flux
    config: SearchConfig  # what actually ran (the shortened one for a variable star)


# -- detrending ----------------------------------------------------------------------------------
def bin_means(time: np.ndarray, flux: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean time and flux in consecutive bins of ``width`` days, and the count per bin (empty bins dropped)."""
    index = np.floor((time - time[0]) / width).astype(np.int64)
    counts = np.bincount(index)
    keep = counts > 0
    t = np.bincount(index, weights=time)[keep] / counts[keep]
    y = np.bincount(index, weights=flux)[keep] / counts[keep]
    return t, y, counts[keep]


def running_median(time: np.ndarray, values: np.ndarray, window: float, step: float) -> np.ndarray:
    """Median of ``values`` within +-window/2 in time of each point, windows shrinking at edges and gaps.

    ``time`` lies on (a subset of) a grid of spacing ``step``: the points are laid on that grid
    with NaN in the holes, so a fixed-size NaN-aware window is a window in time.
    """
    slot = np.rint((time - time[0]) / step).astype(np.int64)
    half = max(1, int(round(window / (2 * step))))
    grid = np.full(slot[-1] + 1 + 2 * half, np.nan)
    grid[slot + half] = values
    windows = np.sort(sliding_window_view(grid, 2 * half + 1)[slot], axis=1)  # NaN sort last
    # The median of each window's values (np.nanmedian, without its slow masked-array path).
    count = np.count_nonzero(~np.isnan(windows), axis=1)
    rows = np.arange(slot.size)
    return 0.5 * (windows[rows, (count - 1) // 2] + windows[rows, count // 2])


def robust_std(values: np.ndarray) -> float:
    """Standard deviation estimated from the median absolute deviation of the finite values (NaN if none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def detrend(lc: LightCurve, config: SearchConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
    """(detrended flux, trend) at every cadence of ``lc``; the trend is a running median in time."""
    step = max(config.trend_bin_minutes / 1440.0, lc.cadence_days)
    t_bin, y_bin, _ = bin_means(lc.time, lc.flux, step)
    trend_bin = running_median(t_bin, y_bin, config.window_days, step)
    trend = np.interp(lc.time, t_bin, trend_bin)
    return lc.flux / trend, trend


def red_noise_ratio(time: np.ndarray, flat: np.ndarray, cadence: float) -> float:
    """Scatter of 1-hour averages over what white noise of the per-cadence scatter would give."""
    t, y, counts = bin_means(time, flat, max(1.0 / 24.0, cadence))
    full = counts >= 0.8 * np.median(counts)
    white = robust_std(flat) / math.sqrt(float(np.median(counts)))
    return robust_std(y[full]) / white if white > 0 and full.sum() > 20 else 1.0


# -- period search -------------------------------------------------------------------------------
def period_grid(baseline_days: float, config: SearchConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Trial periods (ascending), uniform in frequency^(1/3), sized for the baseline."""
    p_max = min(config.max_period_days or baseline_days, baseline_days)
    p_min = config.min_period_days
    if p_max <= p_min:
        raise Rejected("too-few-points", f"a {baseline_days:.2f}-day light curve is too short to search")
    step = config.duration_1d_days / (3.0 * baseline_days * config.period_oversample)
    x = np.arange((1.0 / p_max) ** (1 / 3), (1.0 / p_min) ** (1 / 3), step)
    return np.sort(1.0 / x**3)


def _sun_duration(period: float) -> float:
    """Central-transit duration (days) of a planet at ``period`` days around a Sun-like star."""
    return 13.0 / 24.0 * (period / 365.25) ** (1 / 3)


def _duration_plan(periods: np.ndarray, config: SearchConfig) -> list[tuple[slice, np.ndarray]]:
    """The period grid in chunks (equal in log P), each with the durations plausible there."""
    all_durations = np.array(sorted(config.durations_hours)) / 24.0
    bounds = np.geomspace(periods[0], periods[-1], config.period_chunks + 1)
    edges = np.unique(np.searchsorted(periods, bounds))
    edges[-1] = periods.size
    low, high = config.duration_range_sun
    plan = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        usable = all_durations[all_durations < periods[a]]
        lo, hi = low * _sun_duration(periods[a]), high * _sun_duration(periods[b - 1])
        chosen = usable[(usable >= lo) & (usable <= hi)]
        if chosen.size < 3:  # keep a few around the plausible range at the grid's ends
            centre = int(np.argmin(np.abs(np.log(usable / _sun_duration(periods[(a + b) // 2])))))
            chosen = usable[max(0, centre - 1) : centre + 2]
        plan.append((slice(a, b), chosen))
    return plan


def _coarse_power(
    bls: BoxLeastSquares, periods: np.ndarray, plan: list[tuple[slice, np.ndarray]], oversample: int
) -> tuple[np.ndarray, np.ndarray]:
    """BLS SNR (0 where the best box is not a dip) and best duration at each trial period."""
    snr = np.zeros(periods.size)
    duration = np.zeros(periods.size)
    for chunk, durations in plan:
        r = bls.power(periods[chunk], durations, objective="snr", oversample=oversample)
        snr[chunk] = np.where(np.asarray(r.depth) > 0, np.asarray(r.depth_snr, dtype=np.float64), 0.0)
        duration[chunk] = r.duration
    return snr, duration


def _scan_plan(plan: list[tuple[slice, np.ndarray]], periods: np.ndarray, scan: np.ndarray
               ) -> list[tuple[slice, np.ndarray]]:
    """The full grid's duration plan on the scan periods, with every other duration (from the longest)."""
    bounds = [periods[chunk][0] for chunk, _ in plan[1:]]
    edges = [0, *np.searchsorted(scan, bounds).tolist(), scan.size]
    return [(slice(a, b), durations[::-1][::2][::-1] if durations.size > 2 else durations)
            for (_, durations), a, b in zip(plan, edges[:-1], edges[1:], strict=True) if b > a]


def _scanned_power(bls: BoxLeastSquares, scan_bls: BoxLeastSquares, periods: np.ndarray,
                   plan: list[tuple[slice, np.ndarray]], config: SearchConfig) -> tuple[np.ndarray, np.ndarray]:
    """``_coarse_power`` over ``periods``, computed in full only around the scan's strongest peaks.

    Elsewhere the spectrum is the scan's, interpolated: lower than the full grid would give, so
    the peaks a search takes are those of the regions computed in full.
    """
    x = periods ** (-1 / 3)  # the grid is uniform in x, descending
    step = abs(x[0] - x[-1]) / max(periods.size - 1, 1) / config.scan_density
    scan = np.sort(np.arange(x[-1], x[0] + step, step) ** -3)
    scan = scan[(scan >= periods[0]) & (scan <= periods[-1])]
    if config.scan_density >= 1.0 or scan.size < 10 * config.scan_peaks:
        return _coarse_power(bls, periods, plan, config.bls_oversample)
    scan_power, scan_duration = _coarse_power(scan_bls, scan, _scan_plan(plan, periods, scan), config.bls_oversample)
    power = np.interp(periods, scan, scan_power)
    duration = scan_duration[np.clip(np.searchsorted(scan, periods), 0, scan.size - 1)]
    raw = _peaks(scan_power, scan, config.scan_peaks)
    picks = scan[raw + _peaks(_detrended_spectrum(scan_power), scan, config.scan_peaks, taken=raw)] ** (-1 / 3)
    reach = config.scan_zoom_steps * step
    near = np.zeros(periods.size, dtype=bool)
    for lo, hi in zip(np.searchsorted(-x, -(picks + reach)), np.searchsorted(-x, -(picks - reach), side="right"),
                      strict=True):
        near[lo:hi] = True
    for chunk, durations in plan:
        index = np.flatnonzero(near[chunk]) + chunk.start
        if index.size:
            p, d = _coarse_power(bls, periods[index], [(slice(0, index.size), durations)], config.bls_oversample)
            power[index], duration[index] = p, d
    return power, duration


def _detrended_spectrum(power: np.ndarray) -> np.ndarray:
    """The periodogram minus its running level (medians of 2 % blocks, interpolated).

    The BLS SNR spectrum rises towards long periods (fewer transits, so noise averages less);
    peaks are chosen, and their significance measured, above that level, as SDE-based pipelines do.
    """
    block = max(5, power.size // 50)
    count = max(1, power.size // block)
    # np.array_split's blocks: the first ``long`` hold one value more; each group is one reshape.
    size, long = divmod(power.size, count)
    split = long * (size + 1)
    medians = np.concatenate([np.median(power[:split].reshape(long, size + 1), axis=1),
                              np.median(power[split:].reshape(count - long, size), axis=1)])
    sizes = np.full(count, size)
    sizes[:long] += 1
    centres = np.cumsum(sizes) - sizes / 2.0
    return power - np.interp(np.arange(power.size), centres, medians)


def _peaks(score: np.ndarray, periods: np.ndarray, count: int, taken: list[int] | None = None) -> list[int]:
    """Indices of the ``count`` highest peaks of ``score``, each > 2 % in period from the others."""
    order = np.argsort(score)[::-1][: max(2000, count * 50)]
    free = np.ones(periods.size, dtype=bool)  # not within 2 % of a peak already chosen
    for j in taken or []:
        free &= np.abs(periods / periods[j] - 1.0) > 0.02
    found: list[int] = []
    while len(found) < count:
        left = order[free[order]]
        if left.size == 0:
            break
        k = int(left[0])
        found.append(k)
        free &= np.abs(periods / periods[k] - 1.0) > 0.02
    return found


def in_transit(time: np.ndarray, period: float, epoch: float, duration: float,
               config: SearchConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Whether each time lies within a found signal's transits as the search masks them before looking
    for the next signal (+-mask_factor durations, at least an hour)."""
    half_width = max(config.mask_factor * duration, 1.0 / 24.0)
    return np.abs(fold(time, period, epoch)) < half_width


@dataclass
class _Candidate:
    period: float
    duration: float
    transit_time: float
    depth: float
    bls_snr: float
    snr: float = 0.0
    n_transits: int = 0


def _refine(t: np.ndarray, y: np.ndarray, dy: np.ndarray, period: float, duration: float,
            step: float, max_duration: float) -> _Candidate:
    """Best period, duration and transit time near a coarse peak, on finer bins.

    Periods within +-2 coarse steps are tried at 1/8 step, in two rounds: every 1/4 step with a
    coarser phase grid, then every 1/8 step around the best (a peak is wider than 1/4 step), for
    half the cost of trying them all.
    """
    durations = np.geomspace(max(0.6 * duration, 0.5 / 24), min(1.6 * duration, max_duration), 9)
    bls = BoxLeastSquares(t, y, dy=dy)
    centre = period
    for half_width, count, oversample in ((2.0 * step, 17, 5), (0.25 * step, 5, 10)):
        periods = np.linspace(centre - half_width, centre + half_width, count)
        periods = periods[periods > 2 * duration]
        tried = durations[durations < 0.9 * periods[0]]
        r = bls.power(periods, tried, objective="snr", oversample=oversample)
        snr = np.where(np.asarray(r.depth) > 0, np.asarray(r.depth_snr), 0.0)
        k = int(np.argmax(snr))
        centre = float(r.period[k])
    return _Candidate(float(r.period[k]), float(r.duration[k]), float(r.transit_time[k]), float(r.depth[k]),
                      float(snr[k]))


def _assess(cand: _Candidate, t: np.ndarray, y: np.ndarray, bin_days: float) -> None:
    """Fill in the candidate's transit count and its correlated-noise SNR.

    A transit counts when at least half its expected bins have data (not a gap's fringe). The
    noise is the robust scatter of out-of-transit flux averaged over one duration, as a
    duration-matched CDPP; SNR = depth / that * sqrt(transits).
    """
    phase = fold(t, cand.period, cand.transit_time)
    inside = np.abs(phase) < 0.5 * cand.duration
    number = np.round((t - cand.transit_time) / cand.period).astype(np.int64)
    per_transit = np.bincount(number[inside] - number.min()) if inside.any() else np.zeros(1)
    expected = cand.duration / bin_days
    covered = np.flatnonzero(per_transit >= max(1.0, 0.5 * expected))
    cand.n_transits = int(covered.size)
    if covered.size:  # the epoch reported is the first transit that has data
        cand.transit_time += float((covered[0] + number.min()) * cand.period)
    out = ~(np.abs(phase) < cand.duration)
    _, y_d, counts = bin_means(t[out], y[out], cand.duration)
    full = counts >= 0.5 * expected
    sigma = robust_std(y_d[full]) if full.sum() >= 5 else robust_std(y[out]) / math.sqrt(max(expected, 1.0))
    cand.snr = cand.depth / sigma * math.sqrt(max(cand.n_transits, 1)) if sigma > 0 else 0.0


def _series(time: np.ndarray, flat: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned (time, flux, uncertainty) for BLS, upward outliers (flares, cosmic rays) removed.

    The uncertainty is the robust scatter of full bins, scaled up for bins with fewer cadences.
    """
    t, y, counts = bin_means(time, flat, width)
    full = int(np.median(counts))
    sigma = robust_std(y[counts == full]) if (counts == full).sum() > 50 else robust_std(y)
    dy = sigma * np.sqrt(full / counts)
    keep = y < 1.0 + 5.0 * dy  # a transit only ever goes down
    return t[keep], y[keep], dy[keep]


Series = tuple[np.ndarray, np.ndarray, np.ndarray]


def _coarse_and_scan_series(lc: LightCurve, flat: np.ndarray, config: SearchConfig) -> tuple[Series, Series]:
    """The binned series the full period grid and its sparser scan run on; the same tuple twice when the
    scan's bins are no wider than the coarse ones."""
    coarse_days = max(config.coarse_bin_minutes / 1440.0, lc.cadence_days)
    coarse = _series(lc.time, flat, coarse_days)
    scan_days = max(config.scan_bin_minutes / 1440.0, coarse_days)
    return coarse, (_series(lc.time, flat, scan_days) if scan_days > coarse_days else coarse)


def adaptive_detrend(lc: LightCurve, config: SearchConfig = DEFAULT_CONFIG
                     ) -> tuple[np.ndarray, np.ndarray, SearchConfig]:
    """(detrended flux, trend, configuration used): the shorter window for a star with red residuals.

    Stitched sectors are judged one by one (a star can be quiet in one sector and spotted in the
    next); the search then uses the short durations only if most of the data needed them.
    """
    if lc.segment is None or len(lc.sectors) < 2:
        flat, trend = detrend(lc, config)
        if red_noise_ratio(lc.time, flat, lc.cadence_days) > config.red_noise_limit:
            config = config.shortened()
            flat, trend = detrend(lc, config)
        return flat, trend, config
    flat, trend = np.empty_like(lc.flux), np.empty_like(lc.flux)
    shortened = 0
    for k in range(len(lc.sectors)):
        part = lc.segment == k
        if part.sum() < 10:
            flat[part], trend[part] = 1.0, lc.flux[part]
            continue
        sub = dataclasses.replace(lc, time=lc.time[part], flux=lc.flux[part], flux_err=lc.flux_err[part],
                                  segment=None, sectors=lc.sectors[k:k + 1])
        flat[part], trend[part], used = adaptive_detrend(sub, config)
        shortened += int(part.sum()) if used is not config else 0
    return flat, trend, config.shortened() if shortened > lc.time.size / 2 else config


def periodogram(lc: LightCurve, config: SearchConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
    """(periods, BLS SNR) of the first search, as the search saw it (``SearchResult.power``): in full
    around the scan's peaks, the scan's elsewhere. E.g. for a diagnostic figure."""
    flat, _, config = adaptive_detrend(lc, config)
    coarse, scan = _coarse_and_scan_series(lc, flat, config)
    bls = BoxLeastSquares(*coarse)
    scan_bls = BoxLeastSquares(*scan) if scan is not coarse else bls
    periods = period_grid(lc.baseline_days, config)
    power, _ = _scanned_power(bls, scan_bls, periods, _duration_plan(periods, config), config)
    return periods, power


def search(lc: LightCurve, config: SearchConfig = DEFAULT_CONFIG) -> SearchResult:
    """Detrend, then find up to ``config.max_signals`` transit signals, strongest first."""
    flat, trend, config = adaptive_detrend(lc, config)
    rms = robust_std(flat)
    fine_days = max(config.bin_minutes / 1440.0, lc.cadence_days)
    (t_c, y_c, dy_c), (t_s, y_s, dy_s) = _coarse_and_scan_series(lc, flat, config)
    t_f, y_f, dy_f = _series(lc.time, flat, fine_days)

    periods = period_grid(lc.baseline_days, config)
    plan = _duration_plan(periods, config)
    t_start, t_end = float(lc.time[0]), float(lc.time[-1])

    signals: list[Signal] = []
    first_power = np.zeros_like(periods)
    on_c = np.ones(t_c.size, dtype=bool)
    on_f = np.ones(t_f.size, dtype=bool)
    on_s = np.ones(t_s.size, dtype=bool)
    on_full = np.ones(lc.time.size, dtype=bool)
    for i in range(config.max_signals):
        if on_c.sum() < 50 or on_f.sum() < 100:
            break
        bls = BoxLeastSquares(t_c[on_c], y_c[on_c], dy=dy_c[on_c])
        scan_bls = BoxLeastSquares(t_s[on_s], y_s[on_s], dy=dy_s[on_s]) if t_s is not t_c else bls
        power, best_duration = _scanned_power(bls, scan_bls, periods, plan, config)
        if i == 0:
            first_power = power
        residual = _detrended_spectrum(power)
        scatter = robust_std(residual)
        raw_peaks = _peaks(power, periods, config.candidates)
        candidates = []
        for k in raw_peaks + _peaks(residual, periods, config.candidates, taken=raw_peaks):
            step = float(np.abs(np.diff(periods[max(0, k - 1) : k + 2])).max())
            cand = _refine(t_f[on_f], y_f[on_f], dy_f[on_f], float(periods[k]), float(best_duration[k]), step,
                           max(config.durations_hours) / 24.0)
            candidates.append((cand, float(residual[k] / scatter) if scatter > 0 else 0.0))
        if not candidates:
            break
        # The refined BLS SNR picks the peak; the correlated-noise SNR decides whether it counts.
        cand, sde = max(candidates, key=lambda c: c[0].bls_snr)
        _assess(cand, t_f[on_f], y_f[on_f], fine_days)
        if cand.n_transits == 0 or (signals and cand.snr < config.min_snr):
            break  # boxes only in gaps, or nothing convincing left
        epoch = cand.transit_time
        period = cand.period
        if cand.n_transits <= 1:
            # A lone transit: report the shortest period that shows only this one transit.
            period = max(epoch - t_start, t_end - epoch) + cand.duration
        signal = Signal(
            period_days=period,
            epoch_btjd=epoch,
            duration_days=cand.duration,
            depth=cand.depth,
            snr=cand.snr,
            bls_snr=cand.bls_snr,
            significance=sde,
            n_transits=cand.n_transits,
        )
        # Views from the cadences outside earlier signals' transits.
        signal.global_view = global_view(lc.time[on_full], flat[on_full], period, epoch)
        signal.local_view = local_view(lc.time[on_full], flat[on_full], period, epoch, cand.duration)
        signals.append(signal)
        if cand.snr < config.min_snr:
            break  # nothing convincing even at the top: no further search
        on_c &= ~in_transit(t_c, period, epoch, cand.duration, config)
        on_f &= ~in_transit(t_f, period, epoch, cand.duration, config)
        on_s &= ~in_transit(t_s, period, epoch, cand.duration, config)
        on_full &= ~in_transit(lc.time, period, epoch, cand.duration, config)
    return SearchResult(signals, lc.time, flat, trend, periods, first_power, rms, config)


# -- views ---------------------------------------------------------------------------------------
def fold(time: np.ndarray, period: float, epoch: float) -> np.ndarray:
    """Time from the nearest transit centre, in [-P/2, P/2)."""
    return (time - epoch + 0.5 * period) % period - 0.5 * period


def binned_median(
    x: np.ndarray, y: np.ndarray, num_bins: int, bin_width: float, x_min: float, x_max: float
) -> np.ndarray:
    """Median of y in ``num_bins`` bins of ``bin_width`` spread evenly over [x_min, x_max).

    Bins overlap when bin_width exceeds their spacing. Empty bins are interpolated linearly
    between neighbours (held constant beyond the outermost filled bins); all empty gives NaN.
    """
    spacing = (x_max - x_min - bin_width) / (num_bins - 1)
    lo = x_min + spacing * np.arange(num_bins)
    inside = (x >= lo[0]) & (x < lo[-1] + bin_width)  # e.g. the local view's few durations
    x, y = x[inside], y[inside]
    order = np.argsort(x, kind="stable")  # fast on folded time: a few sorted runs
    x, y = x[order], y[order]
    start = np.searchsorted(x, lo, side="left")
    stop = np.searchsorted(x, lo + bin_width, side="left")
    counts = np.maximum(stop - start, 0)
    # All bins at once (they overlap, so a point may sit in two): each bin's members, keyed by
    # (bin, rank of y), sorted in one go; the median is the middle one, or the mean of the two
    # middle ones, exactly as np.median per bin.
    first = np.cumsum(counts) - counts
    member = np.arange(counts.sum()) + np.repeat(start - first, counts)
    rank = np.empty(y.size, dtype=np.int64)
    by_value = np.argsort(y)
    rank[by_value] = np.arange(y.size)
    keys = np.sort(np.repeat(np.arange(num_bins, dtype=np.int64), counts) * max(y.size, 1) + rank[member])
    ordered = y[by_value][keys % max(y.size, 1)]
    filled = counts > 0
    view = np.full(num_bins, np.nan)
    view[filled] = 0.5 * (ordered[(first + (counts - 1) // 2)[filled]] + ordered[(first + counts // 2)[filled]])
    filled = np.isfinite(view)
    if filled.any() and not filled.all():
        view[~filled] = np.interp(np.flatnonzero(~filled), np.flatnonzero(filled), view[filled])
    return view


def normalise_view(view: np.ndarray) -> np.ndarray:
    """Median 0, minimum -1 (a view with nothing below its median is only shifted)."""
    view = view - np.median(view)
    lowest = np.min(view)
    return view / abs(lowest) if lowest < 0 else view


def _finite(view: np.ndarray) -> np.ndarray:
    # No cadence near the fold at all (possible after masking): a flat view says "nothing here".
    return np.where(np.isfinite(view), view, 0.0)


def global_view(time: np.ndarray, flux: np.ndarray, period: float, epoch: float) -> np.ndarray:
    """201 median bins of width 1.2 P / 201 over [-P/2, P/2), normalised."""
    phase = fold(time, period, epoch)
    view = binned_median(phase, flux, GLOBAL_BINS, 1.2 * period / GLOBAL_BINS, -period / 2, period / 2)
    return _finite(normalise_view(view))


def local_view(time: np.ndarray, flux: np.ndarray, period: float, epoch: float, duration: float) -> np.ndarray:
    """61 median bins of width 0.16 duration over +-2 durations (within +-P/2), normalised."""
    phase = fold(time, period, epoch)
    half = min(period / 2, 2.0 * duration)
    view = binned_median(phase, flux, LOCAL_BINS, 0.16 * duration, -half, half)
    return _finite(normalise_view(view))


# -- the stream's entry point --------------------------------------------------------------------
def features_from_lightcurve(
    lc: LightCurve, *, uri: str, file_id: str, detected_at_ms: int, config: SearchConfig = DEFAULT_CONFIG
) -> dict:
    """A LightCurveFeatures record for an already-read light curve."""
    result = search(lc, config)
    return {
        "file_id": file_id,
        "uri": uri,
        "object": lc.object,
        "tic_id": int(lc.tic_id),
        "sector": lc.sector,
        "detected_at_ms": int(detected_at_ms),
        "time_start_btjd": float(lc.time[0]),
        "time_end_btjd": float(lc.time[-1]),
        "star": {"ra_deg": lc.ra_deg, "dec_deg": lc.dec_deg, "tmag": lc.tmag, "teff_k": lc.teff_k,
                 "radius_rsun": lc.radius_rsun, "logg": lc.logg},
        "quality": {
            "n_cadences": int(lc.n_cadences),
            "n_valid": int(lc.n_valid),
            "baseline_days": float(lc.baseline_days),
            "flux_column": lc.flux_column,
            "robust_rms_ppm": float(result.robust_rms * 1e6),
        },
        "signals": [s.record() for s in result.signals],
        "preprocessing": result.config.describe(),
        # One sector: kept by the star's state for the search over all its sectors (stream/stars).
        "bins": sector_bins(lc) if len(lc.sectors) == 1 else None,
    }


def sector_bins(lc: LightCurve, minutes: float = SECTOR_BIN_MINUTES) -> dict:
    """A SectorBins record: ``lc``'s normalised flux (not detrended) averaged into ``minutes``-wide bins.

    The search refines its peaks on 10-minute bins anyway, so a star's earlier sectors kept this way
    cost it little of what it finds, at a tenth of the size of two-minute cadences (~47 KB a sector).
    """
    t, y, _ = bin_means(lc.time, lc.flux, minutes / 1440.0)
    return {"bin_minutes": float(minutes), "time_btjd": t.tolist(), "flux": y.astype(np.float32).tolist()}


def lightcurve_from_bins(bins: dict, **meta: object) -> LightCurve:
    """The LightCurve of one sector's SectorBins record (``meta``: tic_id, sector and the star's header values)."""
    minutes = float(bins["bin_minutes"])
    time = np.asarray(bins["time_btjd"], dtype=np.float64)
    sector = meta.pop("sector", None)
    return LightCurve(time=time, flux=np.asarray(bins["flux"], dtype=np.float64), flux_err=np.full(time.size, np.nan),
                      sector=sector, sectors=(sector,) if sector is not None else (), cadence_days=minutes / 1440.0,
                      n_cadences=int(time.size), **meta)


def lightcurve_features(
    data: bytes, *, uri: str, file_id: str, detected_at_ms: int, flux_column: str | None = None
) -> dict:
    """Read a TESS light-curve FITS file and search it: a record valid for "LightCurveFeatures".

    Raises ``Rejected`` for anything that is not a usable light curve (see stream.features.lightcurves).
    """
    lc = read_lightcurve(data, flux_column=flux_column)
    return features_from_lightcurve(lc, uri=uri, file_id=file_id, detected_at_ms=detected_at_ms)
