"""Reading TESS light-curve FITS files (SPOC, tess-data-alerts, TESS-SPOC and QLP HLSPs).

Every reader of a light curve goes through ``read_lightcurve``: the stream, ``skystream score``,
the tests and the benchmarks. It returns valid cadences only (finite time and flux, quality flags
cleared), flux normalised to a median of 1, time in BTJD (BJD - 2457000), and the star's TIC
parameters from the primary header. Anything that is not a usable light curve raises
``Rejected`` with a stable reason code.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from stream.errors import Rejected

__all__ = [
    "DEFAULT_QUALITY_BITMASK",
    "LightCurve",
    "looks_like_lightcurve",
    "read_lightcurve",
    "stitch",
]

# The "default" bitmask of the TESS Science Data Products Description (and lightkurve): attitude
# tweak, safe mode, coarse point, Earth point, Argabrightening, desaturation, manual exclude,
# impulsive outlier, bad calibration. Scattered-light flags are kept: they cost whole orbits.
DEFAULT_QUALITY_BITMASK = 1 | 2 | 4 | 8 | 16 | 32 | 128 | 512 | 16384

# Flux columns in order of preference when none is asked for: SPOC/TESS-SPOC systematics-corrected
# flux, QLP's detrended flux, then raw aperture flux.
_AUTO_FLUX_COLUMNS = ("PDCSAP_FLUX", "KSPSAP_FLUX", "SAP_FLUX")
FLUX_ALIASES = {"pdcsap": "PDCSAP_FLUX", "sap": "SAP_FLUX", "kspsap": "KSPSAP_FLUX"}

MIN_VALID_POINTS = 200  # about 7 h of 2-min or 4 days of 30-min cadences: less cannot hold a search
MIN_BASELINE_DAYS = 2.0
# BTJD 1000..20000 spans 2015..2067; TESS started at BTJD 1325. Outside means a wrong time system.
_BTJD_RANGE = (1000.0, 20000.0)
# One file holds one sector (~27 d; multi-sector products up to a year): a longer span is garbage, and
# the period grid (and the search's time) grows with the span.
MAX_SPAN_DAYS = 400.0
# TIME increases strictly in every TESS product; a few backward steps may be glitches, more is garbage.
MAX_BACKWARD_FRACTION = 0.01
# Dimensions a header may declare: 20-s cadences for 3 years are 4.7 M rows; a TESS light curve has ~20 k.
MAX_TABLE_ROWS = 5_000_000
MAX_HDU_BYTES = 2**30
_BITPIX = {8, 16, 32, 64, -32, -64}

# Plausible ranges for TIC stellar parameters; a header outside them is corrupt, not a strange star.
_STAR_RANGES = {
    "TESSMAG": (-3.0, 25.0),
    "TEFF": (500.0, 100_000.0),
    "RADIUS": (0.01, 2000.0),
    "LOGG": (-2.0, 10.0),
    "RA_OBJ": (0.0, 360.0),
    "DEC_OBJ": (-90.0, 90.0),
}
BTJD_OFFSET = 2457000.0  # BTJD = BJD_TDB - 2457000 (TESS Science Data Products Description)


@dataclass(frozen=True)
class LightCurve:
    """Valid cadences of one TESS light curve (or several sectors stitched)."""

    time: np.ndarray  # BTJD, float64, ascending
    flux: np.ndarray  # normalised to median 1 (per sector), float64
    flux_err: np.ndarray  # same units as flux; NaN when the file has no error column
    tic_id: int
    sector: int | None
    tmag: float | None = None
    teff_k: float | None = None
    radius_rsun: float | None = None
    logg: float | None = None
    ra_deg: float | None = None  # header RA_OBJ/DEC_OBJ: ICRS, degrees
    dec_deg: float | None = None
    flux_column: str = "PDCSAP_FLUX"
    n_cadences: int = 0  # rows in the file(s), valid or not
    cadence_days: float = 2.0 / 1440.0
    sectors: tuple[int, ...] = field(default_factory=tuple)
    # Per-cadence index into ``sectors`` for stitched light curves (None: one sector).
    segment: np.ndarray | None = None

    @property
    def n_valid(self) -> int:
        """Number of valid cadences kept."""
        return int(self.time.size)

    @property
    def baseline_days(self) -> float:
        """Days between the first and last valid cadence (0 when there are none)."""
        return float(self.time[-1] - self.time[0]) if self.time.size else 0.0

    @property
    def object(self) -> str:
        """The object name, ``TIC <id>``."""
        return f"TIC {self.tic_id}"


def btjd_to_utc_iso(btjd: float | None) -> str | None:
    """ISO 8601 UTC ("...Z", milliseconds) of a BTJD time; None stays None.

    The TDB -> UTC scale change is exact; the time stays barycentric (the light-travel time to
    the spacecraft, up to ~8 min, is not undone): right for telling when a light curve was taken.
    """
    if btjd is None:
        return None
    from astropy.time import Time  # lazily: astropy.time loads its leap-second table

    return Time(btjd + BTJD_OFFSET, format="jd", scale="tdb").utc.isot + "Z"


# -- sniffing ------------------------------------------------------------------------------------
def _header_cards(block: bytes) -> dict[str, str]:
    """Keyword -> raw value text of the 80-character cards in ``block``, up to END."""
    cards: dict[str, str] = {}
    for i in range(0, len(block) - 79, 80):
        card = block[i : i + 80].decode("ascii", errors="replace")
        key = card[:8].strip()
        if key == "END":
            break
        if card[8:10] == "= " and key not in cards:
            value = card[10:].split("/")[0].strip() if not card[10:].lstrip().startswith("'") else None
            if value is None:  # quoted string: take what is between the quotes
                text = card[10:].lstrip()[1:]
                value = text.split("'")[0].strip()
            cards[key] = value
    return cards


def _header_end(head: bytes, start: int) -> int | None:
    """Offset just past the 2880-byte block holding the END card of the header at ``start``."""
    for i in range(start, len(head) - 79, 80):
        if head[i : i + 8] == b"END     ":
            return start + ((i - start) // 2880 + 1) * 2880
    return None


def looks_like_lightcurve(head: bytes) -> bool:
    """Whether the first bytes (~10-16 KB) of a file are those of a TESS light-curve FITS file.

    Content sniffing for the watcher: a FITS primary header from TESS that is not a target pixel
    file or an image, and whose first extension (when it is within ``head``) is a binary table with
    a TIME column or named LIGHTCURVE. Never raises.
    """
    try:
        if not head.startswith(b"SIMPLE  ="):
            return False
        primary = _header_cards(head[:28800])
        if primary.get("TELESCOP", "").upper() != "TESS":
            return False
        creator = primary.get("CREATOR", "").lower()
        if "targetpixel" in creator or "ffi" in creator or primary.get("NAXIS", "0") not in ("0", ""):
            return False
        end = _header_end(head, 0)
        if end is not None and len(head) >= end + 80:
            ext = _header_cards(head[end : end + 28800])
            if ext.get("XTENSION", "").upper() != "BINTABLE":
                return False
            if ext.get("EXTNAME", "").upper() == "LIGHTCURVE":
                return True
            names = {v.upper() for k, v in ext.items() if k.startswith("TTYPE")}
            if names:
                return "TIME" in names and bool(names & set(_AUTO_FLUX_COLUMNS))
        # The table header is beyond ``head``: trust the primary header's producer and target.
        return "TICID" in primary or "lightcurve" in creator or "QLP" in primary.get("ORIGIN", "").upper()
    except Exception:  # sniffing must never break the watcher
        return False


# -- reading -------------------------------------------------------------------------------------
def _header_int(cards: dict[str, str], key: str, default: int | None = None) -> int:
    raw = cards.get(key)
    if raw is None and default is not None:
        return default
    try:
        return int(str(raw).strip())
    except ValueError:
        raise Rejected("absurd-dimensions", f"header {key}={raw!r} is not an integer") from None


def check_dimensions(data: bytes) -> None:
    """Rejected('absurd-dimensions') when a header of the FITS file in ``data`` declares data no light
    curve has (a billion rows, a gigabyte image, an invalid BITPIX), judged from the headers alone,
    before astropy reads (and allocates for) any data. Headers cut short are left to the reader."""
    offset = 0
    while offset + 2880 <= len(data):
        end = _header_end(data, offset)
        if end is None:
            return
        cards = _header_cards(data[offset:end])
        bitpix = _header_int(cards, "BITPIX")
        naxis = _header_int(cards, "NAXIS")
        if bitpix not in _BITPIX or not 0 <= naxis <= 999:
            raise Rejected("absurd-dimensions", f"BITPIX={bitpix}, NAXIS={naxis}: not a valid FITS header")
        axes = [_header_int(cards, f"NAXIS{i}") for i in range(1, naxis + 1)]
        if any(n < 0 for n in axes):
            raise Rejected("absurd-dimensions", f"negative axis length in NAXISn={axes}")
        pcount, gcount = _header_int(cards, "PCOUNT", 0), _header_int(cards, "GCOUNT", 1)
        size = abs(bitpix) // 8 * max(gcount, 0) * (max(pcount, 0) + (math.prod(axes) if axes else 0))
        if cards.get("XTENSION", "").upper() == "BINTABLE" and naxis >= 2 and axes[1] > MAX_TABLE_ROWS:
            raise Rejected("absurd-dimensions", f"a table of {axes[1]} rows (NAXIS2); a light curve has at most "
                                                f"{MAX_TABLE_ROWS}")
        if size > MAX_HDU_BYTES:
            raise Rejected("absurd-dimensions", f"a header declares {size} bytes of data (NAXISn={axes}, "
                                                f"BITPIX={bitpix}); at most {MAX_HDU_BYTES} are read")
        offset = end + -(-size // 2880) * 2880


def _check_time(time: np.ndarray) -> None:
    """Rejected when the finite TIME values go backwards (garbage, not a light curve)."""
    finite = time[np.isfinite(time)]
    backward = int(np.count_nonzero(np.diff(finite) <= 0))
    if backward > MAX_BACKWARD_FRACTION * max(finite.size - 1, 1):
        raise Rejected("unsorted-time", f"TIME goes backwards (or repeats) at {backward} of {finite.size} cadences")



def _finite_or_none(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _star_param(header: fits.Header, key: str) -> float | None:
    if key not in header:
        return None
    raw = header[key]
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", "NaN", "nan", "null")):
        return None  # unknown in the TIC: common, not an error
    value = _finite_or_none(raw)
    lo, hi = _STAR_RANGES[key]
    if value is None or not lo <= value <= hi:
        raise Rejected("absurd-header", f"header {key}={raw!r} is outside [{lo}, {hi}]")
    return value


def _tic_id(primary: fits.Header) -> int:
    raw = primary.get("TICID", primary.get("TICID".lower()))
    if raw is None and str(primary.get("OBJECT", "")).upper().startswith("TIC"):
        raw = str(primary["OBJECT"])[3:].strip()
    if raw is None:
        raise Rejected("missing-header", "the primary header has no TICID (nor OBJECT 'TIC n')")
    try:
        tic = int(str(raw).strip())
    except ValueError:
        raise Rejected("absurd-header", f"TICID={raw!r} is not an integer") from None
    if not 0 < tic < 10**11:
        raise Rejected("absurd-header", f"TICID={tic} is not a TIC identifier")
    return tic


def _sector(primary: fits.Header) -> int | None:
    raw = primary.get("SECTOR")
    if raw is None:
        return None
    try:
        sector = int(raw)
    except (TypeError, ValueError):
        raise Rejected("absurd-header", f"SECTOR={raw!r} is not an integer") from None
    if not 0 < sector < 1000:
        raise Rejected("absurd-header", f"SECTOR={sector} is not a TESS sector")
    return sector


def _lightcurve_hdu(hdul: fits.HDUList) -> fits.BinTableHDU:
    primary = hdul[0].header
    creator = str(primary.get("CREATOR", "")).lower()
    names = [h.name.upper() for h in hdul]
    if "targetpixel" in creator or "PIXELS" in names:
        raise Rejected("target-pixel-file", "a TESS target pixel file, not a light curve")
    if "ffi" in creator:
        raise Rejected("full-frame-image", "a TESS full-frame image, not a light curve")
    if str(primary.get("TELESCOP", "")).strip().upper() != "TESS":
        raise Rejected("not-tess", f"TELESCOP={primary.get('TELESCOP')!r}: only TESS light curves are read")
    if "LIGHTCURVE" in names:
        hdu = hdul["LIGHTCURVE"]
        if isinstance(hdu, fits.BinTableHDU):
            return hdu
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.BinTableHDU) and "TIME" in [c.upper() for c in hdu.columns.names]:
            return hdu
    # A full-frame image (2048 x 2048 science pixels) or a cut-out of one; an aperture mask is ~11 x 11.
    if any(isinstance(h, fits.ImageHDU | fits.PrimaryHDU) and h.header.get("NAXIS", 0) >= 2
           and min(h.header.get("NAXIS1", 0), h.header.get("NAXIS2", 0)) >= 64 for h in hdul):
        raise Rejected("full-frame-image", "a FITS image, not a light-curve table")
    raise Rejected("not-a-lightcurve", "no binary table with a TIME column (no LIGHTCURVE extension)")


def _check_complete(hdul: fits.HDUList, caught: list[warnings.WarningMessage]) -> None:
    """Rejected when astropy noticed the file ends before its headers say it should."""
    messages = [str(w.message) for w in caught]
    if any("truncated" in m for m in messages):
        raise Rejected("truncated-fits", "the file ends before its light-curve table does (truncated)")
    if len(hdul) == 1 and any("Header size" in m or "validating header" in m for m in messages):
        raise Rejected("truncated-fits", "the file ends inside an extension header (truncated)")
    # FITS headers are printable ASCII; anything else is damage (overwritten or zeroed blocks).
    if any("header keyword is invalid" in m and not m.split("\n", 1)[-1].isprintable() for m in messages):
        raise Rejected("corrupt-fits", "a FITS header holds non-ASCII bytes (damaged file)")


def _choose_flux_column(columns: list[str], flux_column: str | None) -> str:
    upper = [c.upper() for c in columns]
    if flux_column:
        wanted = FLUX_ALIASES.get(flux_column.lower(), flux_column.upper())
        if wanted not in upper:
            raise Rejected("missing-columns", f"the light-curve table has no {wanted} column")
        return wanted
    for name in _AUTO_FLUX_COLUMNS:
        if name in upper:
            return name
    raise Rejected("missing-columns", f"no flux column ({', '.join(_AUTO_FLUX_COLUMNS)}) in the table")


# Binary-table column formats (FITS standard 4.0, Table 18) that are plain big-endian numbers.
_PLAIN_FORMATS = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def _column_names(header: fits.Header) -> list[str]:
    """TTYPEn of a binary-table header, in order."""
    return [str(header.get(f"TTYPE{i}", "")).strip() for i in range(1, int(header.get("TFIELDS", 0)) + 1)]


def _table_rows(hdu: fits.BinTableHDU, data: bytes) -> np.ndarray | None:
    """The rows of binary table ``hdu`` (read from ``data``): a record array viewed in place.

    astropy has parsed the headers and located the table. A table whose columns are all single,
    unscaled numbers (every TESS light curve) is one big-endian record array on disk, so it is
    viewed as such from TFORMn: astropy's column machinery (ColDefs, FITS_rec) costs more than the
    rest of the reading. Any other table goes through ``hdu.data``.
    """
    header = hdu.header
    fields = []
    for i, name in enumerate(_column_names(header), start=1):
        code = str(header.get(f"TFORM{i}", "")).strip().upper()
        code = code[1:] if code.startswith("1") else code
        if code not in _PLAIN_FORMATS or f"TSCAL{i}" in header or f"TZERO{i}" in header:
            return hdu.data
        fields.append((name, _PLAIN_FORMATS[code]))
    info = hdu.fileinfo()
    try:
        dtype = np.dtype(fields)
    except (TypeError, ValueError):  # duplicate or empty column names
        return hdu.data
    rows, width = int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0))
    if info is None or dtype.itemsize != width:
        return hdu.data
    start = int(info["datLoc"])
    if start + rows * width > len(data):
        raise Rejected("truncated-fits", "the file ends before its light-curve table does (truncated)")
    return np.frombuffer(data, dtype=dtype, count=rows, offset=start)


def read_lightcurve(
    data: bytes,
    *,
    flux_column: str | None = None,
    quality_bitmask: int = DEFAULT_QUALITY_BITMASK,
) -> LightCurve:
    """Parse one light-curve FITS file from its bytes.

    ``flux_column``: None picks PDCSAP_FLUX (else QLP's KSPSAP_FLUX, else SAP_FLUX); "sap" or
    "pdcsap" force one. Cadences with any bit of ``quality_bitmask`` set in QUALITY are dropped
    (QLP files: any non-zero QUALITY, since their bits mean something else).
    """
    if not data.startswith(b"SIMPLE  ="):
        raise Rejected("not-fits", "the file does not start with a FITS primary header")
    if len(data) < 2880 * 2:
        raise Rejected("truncated-fits", f"only {len(data)} bytes: shorter than a FITS header and table")
    check_dimensions(data)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # astropy warns (rather than fails) on truncated files and bad headers: we judge ourselves.
            warnings.simplefilter("always")
            with fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False) as hdul:
                primary = hdul[0].header  # parsed in memory (memmap=False): valid after closing
                _check_complete(hdul, caught)
                hdu = _lightcurve_hdu(hdul)
                columns = _column_names(hdu.header)
                upper = [c.upper() for c in columns]
                if "TIME" not in upper:
                    raise Rejected("missing-columns", "the light-curve table has no TIME column")
                column = _choose_flux_column(columns, flux_column)
                table = _table_rows(hdu, data)
                _check_complete(hdul, caught)
                if table is None or len(table) == 0:
                    raise Rejected("too-few-points", "the light-curve table is empty")
                col = dict(zip(upper, columns, strict=True))
                time = np.array(table[col["TIME"]], dtype=np.float64)
                flux = np.array(table[col[column]], dtype=np.float64)
                err_name = col.get(column + "_ERR")
                flux_err = (
                    np.array(table[err_name], dtype=np.float64) if err_name else np.full_like(flux, np.nan)
                )
                quality = np.array(table[col["QUALITY"]], dtype=np.int64) if "QUALITY" in col else None
                tunit = str(hdu.header.get(f"TUNIT{upper.index('TIME') + 1}", ""))
    except Rejected:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError) as exc:
        raise Rejected("corrupt-fits", f"cannot read the FITS file: {exc}") from None

    tic = _tic_id(primary)
    sector = _sector(primary)
    star = {k: _star_param(primary, k) for k in _STAR_RANGES}
    n_cadences = int(time.size)
    _check_time(time)

    is_qlp = "QLP" in str(primary.get("ORIGIN", "")).upper() or column == "KSPSAP_FLUX"
    good = np.isfinite(time) & np.isfinite(flux)
    if quality is not None:
        good &= (quality == 0) if is_qlp else (quality & quality_bitmask) == 0
    if not np.isfinite(flux).any():
        raise Rejected("all-nan-flux", f"every {column} value is NaN")
    if good.sum() < MIN_VALID_POINTS:
        raise Rejected(
            "too-few-points", f"{int(good.sum())} valid cadences; at least {MIN_VALID_POINTS} are needed"
        )
    time, flux, flux_err = time[good], flux[good], flux_err[good]
    order = np.argsort(time, kind="stable")
    time, flux, flux_err = time[order], flux[order], flux_err[order]
    if tunit and "BJD" not in tunit.upper() and "BTJD" not in tunit.upper() and "DAY" not in tunit.upper():
        raise Rejected("absurd-header", f"TIME unit {tunit!r} is not BTJD days")
    if time[0] < _BTJD_RANGE[0] or time[-1] > _BTJD_RANGE[1]:
        raise Rejected(
            "absurd-header", f"TIME spans {time[0]:.1f}..{time[-1]:.1f}: not BTJD (BJD - 2457000) of TESS"
        )
    if time[-1] - time[0] > MAX_SPAN_DAYS:
        raise Rejected(
            "absurd-time-span", f"TIME spans {time[-1] - time[0]:.0f} d; one light-curve file spans at most "
            f"{MAX_SPAN_DAYS:.0f} d"
        )
    if time[-1] - time[0] < MIN_BASELINE_DAYS:
        raise Rejected(
            "too-few-points", f"the valid data span {time[-1] - time[0]:.2f} d; at least {MIN_BASELINE_DAYS} d"
        )
    median = float(np.median(flux))
    if not median > 0:
        raise Rejected("bad-flux", f"median {column} is {median:g}: not a positive flux")
    cadence = float(np.median(np.diff(time)))
    if not 0 < cadence < 0.1:
        raise Rejected("absurd-header", f"median cadence {cadence * 1440:.1f} min is not a TESS cadence")
    return LightCurve(
        time=time,
        flux=flux / median,
        flux_err=flux_err / median,
        tic_id=tic,
        sector=sector,
        tmag=star["TESSMAG"],
        teff_k=star["TEFF"],
        radius_rsun=star["RADIUS"],
        logg=star["LOGG"],
        ra_deg=star["RA_OBJ"],
        dec_deg=star["DEC_OBJ"],
        flux_column=column,
        n_cadences=n_cadences,
        cadence_days=cadence,
        sectors=(sector,) if sector is not None else (),
    )


def stitch(curves: list[LightCurve]) -> LightCurve:
    """Several sectors of one star as one light curve (each already normalised to median 1)."""
    if not curves:
        raise ValueError("nothing to stitch")
    tics = {c.tic_id for c in curves}
    if len(tics) != 1:
        raise Rejected("mixed-targets", f"cannot stitch light curves of different stars: {sorted(tics)}")
    curves = sorted(curves, key=lambda c: c.time[0])
    first = curves[0]
    time = np.concatenate([c.time for c in curves])
    order = np.argsort(time, kind="stable")
    sectors = tuple(s for c in curves for s in c.sectors)
    segment = np.concatenate([np.full(c.time.size, i) for i, c in enumerate(curves)])[order]
    return LightCurve(
        time=time[order],
        flux=np.concatenate([c.flux for c in curves])[order],
        flux_err=np.concatenate([c.flux_err for c in curves])[order],
        tic_id=first.tic_id,
        sector=first.sector,
        tmag=first.tmag,
        teff_k=first.teff_k,
        radius_rsun=first.radius_rsun,
        logg=first.logg,
        ra_deg=first.ra_deg,
        dec_deg=first.dec_deg,
        flux_column=first.flux_column,
        n_cadences=sum(c.n_cadences for c in curves),
        cadence_days=min(c.cadence_days for c in curves),
        sectors=sectors,
        segment=segment,
    )
