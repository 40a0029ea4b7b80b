"""The diagnostic figure of a transit alert: what an astronomer looks at before trusting a candidate.

Four panels from the light curve's own bytes and the signal of the prediction: the detrended
light curve with the signal's transits marked, the BLS periodogram the search saw, and the folded
global and local views (the model's very inputs) titled with the model's scores. Rendered with
matplotlib's Agg backend (no display), small enough to travel inline in an alert (typically 30-60 KB).

A worker draws one figure per alert. Building a matplotlib figure (axes, ticks, their labels) costs
as much as drawing it, so each thread keeps one figure and only swaps its data, titles and limits
per alert (half the CPU of a new figure). Matplotlib figures are not thread-safe: the template is
per thread (alerts are drawn in the worker's thread pool).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import ScalarFormatter

from stream.features import transits
from stream.features.lightcurves import LightCurve, read_lightcurve, stitch
from stream.settings import Settings
from stream.stars import sectors_phrase

__all__ = ["diagnostic_png", "folded_views", "prediction_lightcurve", "signal_png", "source_bytes"]


def _observed(times: np.ndarray, cadences: np.ndarray, within: float) -> np.ndarray:
    """The ``times`` with a cadence within ``within`` days: transits in a gap (between a star's sectors,
    or in a sector's mid-sector gap) are not marked."""
    if times.size == 0 or cadences.size == 0:
        return times
    i = np.clip(np.searchsorted(cadences, times), 1, cadences.size - 1)
    nearest = np.minimum(np.abs(cadences[i] - times), np.abs(cadences[i - 1] - times))
    return times[nearest <= within]


def _markers(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one line drawing a full-height vertical mark at each of ``xs`` (y in axes units)."""
    x = np.repeat(np.asarray(xs, dtype=float), 3)
    y = np.tile([0.0, 1.0, np.nan], xs.size)
    x[2::3] = np.nan
    return x, y


class _Template:
    """One figure with its four panels and their artists, redrawn with new data for each alert."""

    def __init__(self, dpi: int) -> None:
        self.dpi = dpi
        self.fig = Figure(figsize=(8.0, 6.0), dpi=dpi)
        FigureCanvasAgg(self.fig)
        # Fixed margins: constrained layout measures every tick label first (40 % of a figure's CPU).
        grid = self.fig.add_gridspec(3, 2, height_ratios=(1.0, 0.8, 1.0), left=0.11, right=0.98, bottom=0.08,
                                     top=0.95, hspace=0.6, wspace=0.22)
        self.ax_lc = self.fig.add_subplot(grid[0, :])
        self.ax_pg = self.fig.add_subplot(grid[1, :])
        self.ax_g = self.fig.add_subplot(grid[2, 0])
        self.ax_l = self.fig.add_subplot(grid[2, 1])
        self.lc = self._line(self.ax_lc, ".", ms=2, color="0.2")
        self.transits = self._line(self.ax_lc, "-", color="tab:red", alpha=0.35, lw=1,
                                   transform=self.ax_lc.get_xaxis_transform())
        self.pg = self._line(self.ax_pg, "-", lw=0.6, color="0.2")
        self.pg_mark = self._line(self.ax_pg, "-", color="tab:red", alpha=0.6, lw=1,
                                  transform=self.ax_pg.get_xaxis_transform())
        self.g = self._line(self.ax_g, ".-", ms=2, lw=0.5, color="tab:blue")
        self.loc = self._line(self.ax_l, ".-", ms=3, lw=0.5, color="tab:blue")
        self.ax_lc.set_xlabel("time (BTJD)")
        self.ax_lc.set_ylabel("flux (ppm)")
        self.ax_pg.set_xscale("log")
        self.ax_pg.xaxis.set_major_formatter(ScalarFormatter())  # "1", "10" rather than 10^0, 10^1
        self.ax_pg.set_xlabel("period (d)")
        self.ax_pg.set_ylabel("BLS SNR")
        self.ax_g.set_xlabel("phase")
        self.ax_l.set_xlabel("hours from mid-transit")

    @staticmethod
    def _line(ax: Axes, fmt: str, **kwargs: Any) -> Line2D:
        (line,) = ax.plot([], [], fmt, **kwargs)
        return line

    def render(self, *, t_bin: np.ndarray, y_ppm: np.ndarray, transit_times: np.ndarray, periods: np.ndarray,
               power: np.ndarray, period: float, g: np.ndarray, loc: np.ndarray, half_hours: float,
               titles: tuple[str, str, str, str]) -> bytes:
        self.lc.set_data(t_bin, y_ppm)
        self.transits.set_data(*_markers(transit_times))
        self.pg.set_data(periods, power)
        self.pg_mark.set_data(*_markers(np.array([period])))
        self.g.set_data(np.linspace(-0.5, 0.5, g.size), g)
        self.loc.set_data(np.linspace(-half_hours, half_hours, loc.size), loc)
        for ax, title, size in zip((self.ax_lc, self.ax_pg, self.ax_g, self.ax_l), titles, (9, 9, 8, 8), strict=True):
            ax.set_title(title, fontsize=size)
            ax.relim(visible_only=True)
            ax.autoscale_view()
        low = min(-1.3, float(np.min(g)) - 0.1, float(np.min(loc)) - 0.1)
        for ax in (self.ax_g, self.ax_l):
            ax.set_ylim(low, 0.6)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()


_local = threading.local()


def _template(dpi: int) -> _Template:
    templates = _local.__dict__.setdefault("templates", {})
    if dpi not in templates:
        templates[dpi] = _Template(dpi)
    return templates[dpi]


def folded_views(time: np.ndarray, flat: np.ndarray, signal: dict[str, Any], earlier: Sequence[dict[str, Any]] = (),
                 config: transits.SearchConfig = transits.DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
    """(global view, local view) of ``signal`` in the detrended flux, the transits of the ``earlier``
    signals left out as the search leaves them out: the views the model read."""
    keep = np.ones(time.size, dtype=bool)
    for s in earlier:
        keep &= ~transits.in_transit(time, float(s["period_days"]), float(s["epoch_btjd"]),
                                     float(s["duration_hours"]) / 24.0, config)
    period, epoch = float(signal["period_days"]), float(signal["epoch_btjd"])
    return (transits.global_view(time[keep], flat[keep], period, epoch),
            transits.local_view(time[keep], flat[keep], period, epoch, float(signal["duration_hours"]) / 24.0))


def diagnostic_png(
    source: bytes | LightCurve,
    signal: dict[str, Any],
    *,
    triage_probability: float | None = None,
    planet_probability: float | None = None,
    title: str | None = None,
    earlier: Sequence[dict[str, Any]] = (),
    dpi: int = 72,
) -> bytes:
    """PNG bytes of the diagnostic figure for one signal of a light curve: a FITS file's bytes, or a
    light curve already read (e.g. a star's sectors stitched).

    ``signal`` is a SignalPrediction (or TransitSignal) record: period_days, epoch_btjd,
    duration_hours, depth_ppm, snr and, when present, triage_probability/planet_probability
    (the keyword arguments override them). ``earlier``: the signals found before it in the same
    search, whose transits are left out of its folded views, as they were of the views the model read.
    """
    lc = source if isinstance(source, LightCurve) else read_lightcurve(source)
    flat, _, config = transits.adaptive_detrend(lc)
    periods, power = transits.periodogram(lc, config)
    period, epoch = float(signal["period_days"]), float(signal["epoch_btjd"])
    duration = float(signal["duration_hours"]) / 24.0
    p_triage = triage_probability if triage_probability is not None else signal.get("triage_probability")
    p_planet = planet_probability if planet_probability is not None else signal.get("planet_probability")
    scores = ""
    if p_planet is not None and p_triage is not None:
        scores = f"P(planet) = {p_planet:.3f}, P(astrophysical) = {p_triage:.3f}"

    t_bin, y_bin, _ = transits.bin_means(lc.time, flat, 30.0 / 1440.0)
    first = epoch + np.ceil((lc.time[0] - epoch) / period) * period
    g, loc = folded_views(lc.time, flat, signal, earlier, config)
    where = sectors_phrase({"sectors": lc.sectors, "sector": lc.sector})
    titles = (
        title or f"{lc.object} {where}: detrended {lc.flux_column} (30-min bins)",
        f"P = {period:.5f} d, T0 = {epoch:.4f} BTJD, duration {duration * 24:.2f} h, "
        f"depth {signal['depth_ppm']:.0f} ppm, SNR {signal['snr']:.1f}",
        f"global view ({g.size} bins)  {scores}",
        f"local view ({loc.size} bins)",
    )
    transit_times = _observed(np.arange(first, lc.time[-1] + duration, period), lc.time, duration)
    return _template(dpi).render(
        t_bin=t_bin, y_ppm=(y_bin - 1.0) * 1e6, transit_times=transit_times,
        periods=periods, power=power, period=period, g=g, loc=loc,
        half_hours=min(period / 2, 2 * duration) * 24, titles=titles)


def source_bytes(prediction: dict[str, Any], settings: Settings) -> bytes:
    """The light-curve file a prediction was made from, read again (the claim check of the figures).

    The same allow-list as the worker's first read: a forged message or archive row names a URI too.
    Rejected('outside-sources') outside the configured sources, Rejected when the file is gone."""
    from stream.ingest import allowlist, storage

    allowlist.check_uri(prediction["source"], allowlist.configured_roots(settings))
    return storage.read_bytes(prediction["source"])


def prediction_lightcurve(prediction: dict[str, Any], settings: Settings) -> LightCurve:
    """The light curve a prediction was made from, read again from its file, or from each sector's file
    and stitched for a multi-sector prediction (``sources``)."""
    sources = prediction.get("sources") or [prediction["source"]]
    curves = [read_lightcurve(source_bytes({**prediction, "source": uri}, settings)) for uri in sources]
    return curves[0] if len(curves) == 1 else stitch(curves)


def signal_png(prediction: dict[str, Any], index: int, settings: Settings) -> bytes:
    """The diagnostic figure of signal ``index`` of an archived light-curve prediction, drawn from its file(s)."""
    signals = prediction.get("signals") or []
    if not 0 <= index < len(signals):
        raise LookupError(f"prediction {prediction['prediction_id'][:16]} has no signal {index}")
    signal = signals[index]
    title = (f"{prediction['object']} {sectors_phrase(prediction)}: signal {index + 1} of {len(signals)}, "
             f"P = {signal['period_days']:.4f} d" + (f" ({signal['known_toi']})" if signal.get("known_toi") else ""))
    return diagnostic_png(prediction_lightcurve(prediction, settings), signal, title=title, earlier=signals[:index])
