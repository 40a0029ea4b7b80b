"""Matching transit signals against the TESS Objects of Interest (TOI) catalogue.

The catalogue is the NASA Exoplanet Archive's TOI table (CSV with '#' comment lines; ``tid`` is
the TIC id, ``pl_orbper`` the period in days, ``pl_tranmid`` a transit mid-time in BJD,
``pl_trandurh`` the duration in hours). A signal matches a TOI of the same star when:

- its period is within ``PERIOD_TOLERANCE`` (2 %, relative) of the TOI's, reported as ``TOI-123.01``;
- or it is a 2x or 1/2x alias of it (BLS locks onto those when every other transit falls in a
  gap, or for an eclipsing binary with equal eclipses) within 1 % and the TOI's ephemeris has a
  transit at the signal's epoch, reported as ``TOI-123.01 (2x alias)``;
- or, for a lone transit (the period is then only a lower bound), the TOI's period is at least
  that bound and the TOI's ephemeris puts a transit at the signal's epoch, reported as
  ``TOI-123.01 (single transit)``.

Origin of the default table: https://exoplanetarchive.ipac.caltech.edu (TOI table, CSV download).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from stream.settings import shared_data

__all__ = ["PERIOD_TOLERANCE", "TOI", "TOICatalog", "load_default"]

# One sector measures a period to ~0.1-0.5 %; catalogue periods are long-baseline means, which in
# resonant systems with transit-timing variations (TOI-216) differ from a 2018 sector by ~2 %.
# No two planets of one star have periods within 2 %, so the match stays unambiguous.
PERIOD_TOLERANCE = 0.02
ALIAS_TOLERANCE = 0.01  # and an alias must also share the TOI's transit times
ALIASES = ((2.0, "2x alias"), (0.5, "1/2x alias"))
BTJD_OFFSET = 2457000.0
DEFAULT_DIR = shared_data() / "tess" / "catalogs"
log = logging.getLogger(__name__)
_COLUMNS = ["toi", "tid", "tfopwg_disp", "pl_orbper", "pl_orbpererr1", "pl_tranmid", "pl_tranmiderr1",
            "pl_trandurh", "pl_trandep"]


@dataclass(frozen=True)
class TOI:
    """One TESS Object of Interest: its disposition and transit ephemeris."""
    name: str  # "TOI-114.01"
    tic_id: int
    disposition: str  # CP, KP, PC, APC, FP, FA
    period_days: float | None
    period_err: float
    epoch_btjd: float | None
    epoch_err: float
    duration_hours: float | None
    depth_ppm: float | None


def _value(x: object) -> float | None:
    if x is None or np.ma.is_masked(x):
        return None
    v = float(x)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None


class TOICatalog:
    """TOIs by TIC id, with the matching rules of this module."""

    def __init__(self, tois: list[TOI], source: str = "") -> None:
        self.source = source
        self.by_tic: dict[int, list[TOI]] = {}
        for t in tois:
            self.by_tic.setdefault(t.tic_id, []).append(t)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_tic.values())

    @classmethod
    def from_csv(cls, path: str | Path) -> TOICatalog:
        """Read the TOI table CSV (see the module doc), skipping rows without a TIC id."""
        table = Table.read(str(path), format="ascii.csv", comment="#", include_names=_COLUMNS)
        tois = []
        for row in table:
            tic = _value(row["tid"])
            if tic is None:
                continue
            epoch = _value(row["pl_tranmid"])
            tois.append(TOI(
                name=f"TOI-{float(row['toi']):.2f}",
                tic_id=int(tic),
                disposition=str(row["tfopwg_disp"]) if not np.ma.is_masked(row["tfopwg_disp"]) else "",
                period_days=_value(row["pl_orbper"]),
                period_err=abs(_value(row["pl_orbpererr1"]) or 0.0),
                epoch_btjd=epoch - BTJD_OFFSET if epoch is not None else None,
                epoch_err=abs(_value(row["pl_tranmiderr1"]) or 0.0),
                duration_hours=_value(row["pl_trandurh"]),
                depth_ppm=_value(row["pl_trandep"]),
            ))
        return cls(tois, source=str(path))

    def match(self, tic_id: int, period_days: float, epoch_btjd: float, duration_hours: float,
              n_transits: int = 2) -> str | None:
        """The designation of the TOI this signal is (with how it matched), or None when new."""
        candidates = self.by_tic.get(int(tic_id), [])
        best: tuple[float, str] | None = None
        for toi in candidates:
            if toi.period_days is None or toi.period_days <= 0:
                continue
            if n_transits <= 1:
                if period_days <= toi.period_days * (1 + PERIOD_TOLERANCE) and self._transit_at(
                        toi, epoch_btjd, duration_hours):
                    return f"{toi.name} (single transit)"
                continue
            error = abs(period_days / toi.period_days - 1.0)
            if error <= PERIOD_TOLERANCE and (best is None or error < best[0]):
                best = (error, toi.name)
            for factor, label in ALIASES:
                error = abs(period_days / (toi.period_days * factor) - 1.0)
                if (error <= ALIAS_TOLERANCE and (best is None or error < best[0])
                        and self._transit_at(toi, epoch_btjd, duration_hours, min(period_days, toi.period_days))):
                    best = (error, f"{toi.name} ({label})")
        return best[1] if best else None

    @staticmethod
    def _transit_at(toi: TOI, epoch_btjd: float, duration_hours: float, period: float | None = None) -> bool:
        """Whether the TOI's linear ephemeris (folded at ``period``, default its own) has a transit
        near ``epoch_btjd``.

        Tolerance: two durations (transit-timing variations of hours are common in resonant
        systems such as TOI-216) plus three times the ephemeris uncertainty propagated to the epoch.
        """
        if toi.epoch_btjd is None or toi.period_days is None:
            return False
        step = period or toi.period_days
        cycles = round((epoch_btjd - toi.epoch_btjd) / toi.period_days)
        predicted = toi.epoch_btjd + cycles * toi.period_days
        predicted += round((epoch_btjd - predicted) / step) * step if step < toi.period_days else 0.0
        spread = abs(cycles) * toi.period_err + toi.epoch_err
        tolerance = 2.0 * max(duration_hours, toi.duration_hours or 0.0) / 24.0 + 3.0 * spread
        return abs(epoch_btjd - predicted) <= tolerance


def load_default(path: str | None = None) -> TOICatalog | None:
    """The configured TOI table (a CSV file, or a directory: its newest ``toi_*.csv``), else the newest
    ``toi_*.csv`` in ../shared/data/tess/catalogs, else None with a warning."""
    if path and not Path(path).is_dir():
        return TOICatalog.from_csv(path)
    where = Path(path) if path else DEFAULT_DIR
    found = sorted(where.glob("toi_*.csv")) if where.is_dir() else []
    if found:
        return TOICatalog.from_csv(found[-1])
    # Loud: without the table every signal of a known planet is alerted as a new candidate.
    log.warning("NO TOI TABLE: no toi_*.csv in %s; every known TOI will be alerted as NEW. "
                "Set SKYSTREAM_TOI_TABLE to the NASA Exoplanet Archive TOI CSV (or a directory holding it).", where)
    return None
