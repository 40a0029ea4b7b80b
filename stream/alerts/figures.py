"""The diagnostic figure of a transit alert: what an astronomer looks at before trusting a candidate.

Four panels from the light curve's own bytes and the signal of the prediction: the detrended
light curve with the signal's transits marked, the BLS periodogram, and the folded global and
local views (the model's very inputs) titled with the model's scores. Rendered with matplotlib's
Agg backend (no display, thread-safe through its own Figure objects), small enough to travel
inline in an alert (typically 30-60 KB).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stream.features import transits
from stream.features.lightcurves import read_lightcurve

__all__ = ["diagnostic_png"]


def diagnostic_png(
    data: bytes,
    signal: dict[str, Any],
    *,
    triage_probability: float | None = None,
    planet_probability: float | None = None,
    title: str | None = None,
    dpi: int = 72,
) -> bytes:
    """PNG bytes of the diagnostic figure for one signal of a light-curve FITS file.

    ``signal`` is a SignalPrediction (or TransitSignal) record: period_days, epoch_btjd,
    duration_hours, depth_ppm, snr and, when present, triage_probability/planet_probability
    (the keyword arguments override them).
    """
    lc = read_lightcurve(data)
    flat, _, config = transits.adaptive_detrend(lc)
    periods, power = transits.periodogram(lc, config)
    period, epoch = float(signal["period_days"]), float(signal["epoch_btjd"])
    duration = float(signal["duration_hours"]) / 24.0
    p_triage = triage_probability if triage_probability is not None else signal.get("triage_probability")
    p_planet = planet_probability if planet_probability is not None else signal.get("planet_probability")

    fig = Figure(figsize=(8.0, 6.0), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2, height_ratios=(1.0, 0.8, 1.0))
    ax_lc = fig.add_subplot(grid[0, :])
    t_bin, y_bin, _ = transits.bin_means(lc.time, flat, 30.0 / 1440.0)
    ax_lc.plot(t_bin, (y_bin - 1.0) * 1e6, ".", ms=2, color="0.2")
    first = epoch + np.ceil((lc.time[0] - epoch) / period) * period
    for t in np.arange(first, lc.time[-1] + duration, period):
        ax_lc.axvline(t, color="tab:red", alpha=0.35, lw=1)
    ax_lc.set_xlabel("time (BTJD)")
    ax_lc.set_ylabel("flux (ppm)")
    ax_lc.set_title(title or f"{lc.object} sector {lc.sector}: detrended {lc.flux_column} (30-min bins)",
                    fontsize=9)

    ax_pg = fig.add_subplot(grid[1, :])
    ax_pg.plot(periods, power, lw=0.6, color="0.2")
    ax_pg.axvline(period, color="tab:red", alpha=0.6, lw=1)
    ax_pg.set_xscale("log")
    ax_pg.set_xlabel("period (d)")
    ax_pg.set_ylabel("BLS SNR")
    ax_pg.set_title(f"P = {period:.5f} d, T0 = {epoch:.4f} BTJD, duration {duration * 24:.2f} h, "
                    f"depth {signal['depth_ppm']:.0f} ppm, SNR {signal['snr']:.1f}", fontsize=9)

    scores = ""
    if p_planet is not None and p_triage is not None:
        scores = f"P(planet) = {p_planet:.3f}, P(astrophysical) = {p_triage:.3f}"
    g = transits.global_view(lc.time, flat, period, epoch)
    loc = transits.local_view(lc.time, flat, period, epoch, duration)
    ax_g = fig.add_subplot(grid[2, 0])
    ax_g.plot(np.linspace(-0.5, 0.5, g.size), g, ".-", ms=2, lw=0.5, color="tab:blue")
    ax_g.set_xlabel("phase")
    ax_g.set_title(f"global view ({g.size} bins)  {scores}", fontsize=8)
    ax_l = fig.add_subplot(grid[2, 1])
    half = min(period / 2, 2 * duration) * 24
    ax_l.plot(np.linspace(-half, half, loc.size), loc, ".-", ms=3, lw=0.5, color="tab:blue")
    ax_l.set_xlabel("hours from mid-transit")
    ax_l.set_title(f"local view ({loc.size} bins)", fontsize=8)
    for ax in (ax_g, ax_l):
        ax.set_ylim(min(-1.3, float(np.min(g)) - 0.1, float(np.min(loc)) - 0.1), 0.6)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
