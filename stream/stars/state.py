"""A star's state between its sectors (the StarState table value) and the StarSector messages it is built of."""

from __future__ import annotations

import functools
from typing import Any

import schemas
from stream.errors import Rejected
from stream.features.lightcurves import LightCurve, stitch
from stream.features.transits import lightcurve_from_bins

__all__ = ["MAX_SECTORS", "Sector", "add_sector", "empty_state", "sector_message", "sectors_of", "stitched"]

# A year of TESS sectors: ~47 KB each keeps a state within a Kafka message's default limit (1 MB).
MAX_SECTORS = 13


class Sector:
    """One decoded StarSector: the sector's features record (decoded on first use: its bins are most of
    a state's bytes) and its alerts by signal index."""

    def __init__(self, message: bytes) -> None:
        _, record = schemas.decode(message, expect="StarSector")
        self.message = message
        self.sector: int = record["sector"]
        self.file_id: str = record["file_id"]
        self.alerts: dict[int, str] = {a["signal_index"]: a["alert_id"] for a in record["alerts"]}
        self._features: bytes = record["features"]

    @functools.cached_property
    def features(self) -> dict[str, Any]:
        """The sector's LightCurveFeatures record."""
        return schemas.decode(self._features, expect="LightCurveFeatures")[1]

    def lightcurve(self) -> LightCurve:
        """The sector's binned light curve (what its features message kept)."""
        f = self.features
        star = f.get("star") or {}
        return lightcurve_from_bins(f["bins"], tic_id=int(f["tic_id"]), sector=self.sector, **{
            k: star.get(k) for k in ("tmag", "teff_k", "radius_rsun", "logg", "ra_deg", "dec_deg")})


def sector_message(prediction: dict[str, Any], features: bytes, alerts: list[dict[str, Any]]) -> bytes | None:
    """The StarSector message of a scored one-sector light curve (``features``: the message it was scored
    from, not decoded again); None without a sector number."""
    if prediction.get("sector") is None or prediction.get("sectors"):
        return None
    index = {(s["period_days"], s["epoch_btjd"]): i for i, s in enumerate(prediction.get("signals") or [])}
    found = [{"signal_index": index[a["period_days"], a["epoch_btjd"]], "alert_id": a["alert_id"]}
             for a in alerts if (a.get("period_days"), a.get("epoch_btjd")) in index]
    return schemas.encode("StarSector", {
        "tic_id": int(prediction["tic_id"]), "sector": int(prediction["sector"]), "file_id": prediction["file_id"],
        "prediction_id": prediction["prediction_id"], "features": features, "alerts": found})


def empty_state(tic_id: int) -> dict[str, Any]:
    """The StarState of a star not seen before."""
    return {"tic_id": int(tic_id), "sectors": [], "signals": []}


def add_sector(state: dict[str, Any], message: bytes) -> tuple[dict[str, Any], bool]:
    """(state with the sector in it, whether it changed). A sector seen before with other data replaces
    the old one; the same light curve again (a replay, the same file under another name, a re-scored
    file) changes nothing, so it does not search the star again. The newest ``MAX_SECTORS`` are kept."""
    if message in state["sectors"]:
        return state, False
    new = Sector(message)
    if not new.features.get("bins"):
        raise Rejected("no-bins", f"sector {new.sector} of TIC {state['tic_id']}: its features were written "
                                  "before they kept the binned light curve; stream the file again")
    earlier = sectors_of(state)
    if any(s.sector == new.sector and s.features["bins"] == new.features["bins"] for s in earlier):
        return state, False
    kept = [(s.sector, s.message) for s in earlier if s.sector != new.sector]
    ordered = sorted([*kept, (new.sector, message)])
    return {**state, "sectors": [m for _, m in ordered][-MAX_SECTORS:]}, True


def sectors_of(state: dict[str, Any]) -> list[Sector]:
    """The state's sectors, decoded, ascending by sector."""
    return [Sector(m) for m in state["sectors"]]


def stitched(sectors: list[Sector]) -> LightCurve:
    """The sectors' binned light curves as one (each keeps its own normalisation; the search detrends
    each on its own)."""
    return stitch([s.lightcurve() for s in sectors])
