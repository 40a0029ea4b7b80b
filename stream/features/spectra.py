"""Asteroid reflectance spectra: read a table, clean it, resample it to the model grid, normalise at 0.55 µm.

This is the ONE implementation of spectrum preprocessing: the stream calls ``spectrum_features`` and
training (training/smass/) calls the same functions, so the two cannot drift apart.

Input: a text table of two or three columns (wavelength, reflectance[, 1-sigma error]), separated by
whitespace, tabs, commas or semicolons, with optional header and comment lines (# % !). SMASSII
files (``a000001.[2]``, ``au1996UK.[2]``: µm, reflectance, error) are the reference case; tables from
other surveys (Å or nm, narrower range, two columns) go through the same path.

Policy (each failure raises ``Rejected(reason, message)``):

- empty-file: no bytes, or only whitespace. binary-content: NUL or many control bytes.
- not-a-table: no numeric row within the first ``_MAX_HEADER_LINES`` lines, or a non-numeric row
  inside the table. wrong-columns: a table with
  fewer than 2 or more than 3 columns, or rows with differing column counts (which column would be
  the reflectance is then a guess). Exception: a short last line without a line end is a file cut
  mid-write; that row is dropped.
- Rows with a non-finite or non-positive wavelength or reflectance are dropped (reflectance is a
  ratio of fluxes: zero or negative values are padding or failed reductions; SMASSII pads two files
  with ``0 0 0`` rows). all-nan: every row has a NaN/inf wavelength or reflectance.
- Units from the magnitude of the wavelengths (the middle valid row): < 10 → µm, < 3000 → nm,
  else Å (visible and near-IR spectra cannot be confused across these ranges).
- Unsorted wavelengths are sorted; duplicated wavelengths are averaged (their errors combined as the
  error of the mean). Dropped and merged rows are counted in ``quality.dropped_fraction``.
- too-few-points: fewer than ``MIN_POINTS`` distinct valid samples remain.
- Errors that are missing, non-finite or non-positive are unknown (NaN), never a reason to drop data.
- Resampling: each grid value is the mean of the piecewise-linear spectrum over the grid cell
  (width ``GRID_STEP_UM``): a box average that suppresses noise when the input is finer than the grid
  and interpolates when it is coarser (Gaia-like 16-band spectra work).
- Coverage: a grid point is covered when it lies inside [min, max] of the data.
  insufficient-coverage: the data miss 0.55 µm (normalisation is undefined) or cover less than
  ``MIN_COVERAGE`` of the grid. Uncovered grid points at either end are filled by holding the
  nearest covered value (no extrapolated slope, which can run away on noisy edges); the fraction
  covered is recorded in ``quality.coverage_fraction`` so consumers can discount such answers.
- Normalisation: divide by the mean reflectance over 0.54–0.56 µm (0.55 µm ± one SMASS resolution
  element; a single sample at 0.55 would carry its noise into every grid point).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, NoReturn
from urllib.parse import unquote

import numpy as np
from astropy import units as u

from stream.errors import Rejected

__all__ = [
    "Spectrum",
    "MIN_COVERAGE",
    "MIN_COVERAGE_MASKED",
    "asteroid_id",
    "coverage_mask",
    "looks_like_spectrum",
    "object_name",
    "read_spectrum",
    "resample",
    "spectrum_features",
]

# The model grid: 0.44–0.92 µm, the range of the Bus (1999) / Bus & Binzel (2002) classification
# (its spline fits, the .spfit files, are sampled on 0.44–0.92 step 0.01). 98 % of SMASSII spectra
# cover it entirely, all of them at least 97 %. The step is half the Bus step: SMASSII resolution
# elements are ~0.01 µm wide, so 0.005 keeps every resolved feature while averaging two raw
# 0.0025 µm samples per cell.
GRID_START_UM = 0.44
GRID_STOP_UM = 0.92
GRID_STEP_UM = 0.005
WAVELENGTH_GRID_UM: np.ndarray = np.round(
    GRID_START_UM + GRID_STEP_UM * np.arange(round((GRID_STOP_UM - GRID_START_UM) / GRID_STEP_UM) + 1), 6
)
WAVELENGTH_GRID_UM.setflags(write=False)

NORMALISATION_UM = 0.55
NORMALISATION_HALF_WIDTH_UM = 0.01
MIN_POINTS = 10
# 0.75 of the grid = 0.36 µm of the 0.48 µm span, e.g. 0.49–0.92 µm (S3OS2) is 0.90 covered.
# Accuracy versus coverage is measured by `skystream train smass` (truncated held-out spectra).
MIN_COVERAGE = 0.75
# For models with a coverage-mask input (training.smass.ModelConfig.coverage_mask, issue 13): a spectrum
# covering 0.50–0.82 µm (65 of 97 grid points = 0.67; 0.49–0.83 µm files are 0.71) is scored, with the
# uncovered points flagged by ``coverage_mask`` instead of being taken as data. The stream's features use
# this threshold; the predictor applies MIN_COVERAGE itself to models without a coverage input.
MIN_COVERAGE_MASKED = 0.66

PREPROCESSING_VERSION = (
    f"spectra/1 grid={GRID_START_UM}-{GRID_STOP_UM}um/{GRID_STEP_UM} box-mean "
    f"norm={NORMALISATION_UM}+-{NORMALISATION_HALF_WIDTH_UM}um edge=hold min-coverage={MIN_COVERAGE}"
)

_COMMENTS = ("#", "%", "!")
# Bytes that do not occur in text files (TAB, LF, VT, FF, CR excepted).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13))
_SPLIT = re.compile(r"[,;\s]+")
_HEAD_SNIFF_ROWS = 8
_MAX_HEADER_LINES = 200
# Scale factors to µm, from astropy's unit definitions rather than typed-in constants.
_TO_UM = {unit: float((1 * getattr(u, unit)).to_value(u.um)) for unit in ("um", "nm", "AA")}


@dataclass(frozen=True)
class Spectrum:
    """A cleaned spectrum: wavelengths in µm, strictly increasing; reflectance > 0; error (NaN = unknown)."""

    wavelength_um: np.ndarray
    reflectance: np.ndarray
    error: np.ndarray | None
    n_rows: int  # data rows in the input, before cleaning
    unit: str = "um"  # the unit detected in the input

    @property
    def dropped_fraction(self) -> float:
        """Fraction of the file's rows dropped as invalid."""
        return 1.0 - len(self.wavelength_um) / self.n_rows if self.n_rows else 0.0


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def looks_like_spectrum(head: bytes) -> bool:
    """Whether the first bytes of a file look like a numeric 2–3 column table with positive first column.

    Cheap content sniffing for the watcher; ``read_spectrum`` makes the real decision.
    """
    if not head or b"\x00" in head:
        return False
    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(lines) > 1 and not head.endswith((b"\n", b"\r")):
        lines = lines[:-1]  # the head may end in the middle of a line
    n_data = 0
    n_cols = 0
    for i, line in enumerate(lines):
        tokens = _tokens(line)
        if tokens is None:
            continue
        values = _floats(tokens)
        if values is None:
            if n_data or i >= _MAX_HEADER_LINES:
                return False
            continue  # header line
        if len(values) not in (2, 3) or (n_cols and len(values) != n_cols):
            return False
        n_cols = len(values)
        if not values[0] > 0:
            return False
        n_data += 1
        if n_data >= _HEAD_SNIFF_ROWS:
            return True
    return n_data >= 3


def read_spectrum(data: bytes, name: str = "") -> Spectrum:
    """Parse and clean a reflectance table (policy in the module docstring); ``name`` is for messages."""
    label = name or "input"
    if not data or not data.strip():
        raise Rejected("empty-file", f"{label}: the file is empty")
    if _is_binary(data):
        raise Rejected("binary-content", f"{label}: binary content, not a text table")
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")  # a BOM would hide row 1
    if "\r" in text:  # Windows and old Mac line ends: loadtxt and the header scan count "\n" lines
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    first, n_cols, delimiter = _find_table(text, label)
    truncated = 0
    if not text.endswith("\n"):
        # A last line with too few fields and no line end is a file cut mid-write: drop that row.
        cut = text.rfind("\n")
        tail = _tokens(text[cut + 1 :])
        if cut >= 0 and tail is not None and len(tail) < n_cols:
            text, truncated = text[: cut + 1], 1
    # Only the comment markers present: each extra marker slows numpy's parser down.
    comments = [c for c in _COMMENTS if c in text] or None
    try:
        # numpy's C parser: ~0.15 ms for a 190-row SMASS file, faster than splitting in Python.
        table = np.loadtxt(
            io.StringIO(text), delimiter=delimiter, comments=comments, skiprows=first, ndmin=2, dtype=np.float64
        )
    except ValueError:
        _diagnose(text, first, n_cols, label)
    if table.shape[1] != n_cols:  # defensive: the first data row decided the column count
        raise Rejected("wrong-columns", f"{label}: expected {n_cols} columns, found {table.shape[1]}")
    return _clean(table, label, truncated)


def _diagnose(text: str, first: int, n_cols: int, label: str) -> NoReturn:
    """Find the row numpy refused (slow path, only for bad files) and raise the precise reason."""
    for i, line in enumerate(text.split("\n")[first:], start=first + 1):
        tokens = _tokens(line)
        if tokens is None:
            continue
        if _floats(tokens) is None:
            raise Rejected("not-a-table", f"{label}: line {i} is not numeric: {line.strip()[:60]!r}")
        if len(tokens) != n_cols:
            raise Rejected("wrong-columns", f"{label}: line {i} has {len(tokens)} columns, the table {n_cols}")
    raise Rejected("not-a-table", f"{label}: the table could not be parsed")


def _is_binary(data: bytes) -> bool:
    sample = data[:4096]
    if b"\x00" in data:
        return True
    control = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return control > 0.01 * len(sample)


def _tokens(line: str) -> list[str] | None:
    """The fields of a line without its comment; None for blank and comment-only lines."""
    for c in _COMMENTS:
        cut = line.find(c)
        if cut >= 0:
            line = line[:cut]
    line = line.strip()
    if not line:
        return None
    return _SPLIT.split(line)


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _find_table(text: str, label: str) -> tuple[int, int, str | None]:
    """(index of the first data line, number of columns, delimiter for loadtxt)."""
    for i, line in enumerate(text.split("\n", _MAX_HEADER_LINES + 1)[: _MAX_HEADER_LINES + 1]):
        tokens = _tokens(line)
        if tokens is None:
            continue
        values = _floats(tokens)
        if values is None:
            continue  # header line before the table
        if len(values) not in (2, 3):
            raise Rejected(
                "wrong-columns",
                f"{label}: {len(values)} column(s); expected wavelength, reflectance and optionally error",
            )
        stripped = line.split("#", 1)[0]
        delimiter = "," if "," in stripped else ";" if ";" in stripped else None
        return i, len(values), delimiter
    raise Rejected("not-a-table", f"{label}: no numeric table of wavelength and reflectance found")


def _clean(table: np.ndarray, label: str, truncated: int = 0) -> Spectrum:
    n_rows = len(table) + truncated
    w, r = table[:, 0], table[:, 1]
    e = table[:, 2] if table.shape[1] == 3 else None
    finite = np.isfinite(w) & np.isfinite(r)
    if not finite.any():
        raise Rejected("all-nan", f"{label}: every row has a NaN or infinite wavelength or reflectance")
    valid = finite & (w > 0) & (r > 0)
    w, r = w[valid], r[valid]
    if len(w) < MIN_POINTS:
        raise Rejected(
            "too-few-points",
            f"{label}: {len(w)} valid samples (positive, finite wavelength and reflectance); need {MIN_POINTS}",
        )
    unit = _detect_unit(float(w[len(w) // 2]))  # any valid row tells the magnitude; a median costs 0.1 ms
    w = w * _TO_UM[unit]
    if e is not None:
        e = np.where(np.isfinite(e[valid]) & (e[valid] > 0), e[valid], np.nan)
    if np.any(np.diff(w) <= 0):
        order = np.argsort(w, kind="stable")
        w, r = w[order], r[order]
        e = e[order] if e is not None else None
        uniq, inverse, counts = np.unique(w, return_inverse=True, return_counts=True)
        if len(uniq) < len(w):  # average duplicated wavelengths
            r = np.bincount(inverse, weights=r) / counts
            if e is not None:
                e = np.sqrt(np.bincount(inverse, weights=e * e)) / counts  # NaN stays NaN: unknown
            w = uniq
    if len(w) < MIN_POINTS:
        raise Rejected("too-few-points", f"{label}: {len(w)} distinct wavelengths; need {MIN_POINTS}")
    return Spectrum(w, r, e, n_rows, unit)


def _detect_unit(median_wavelength: float) -> str:
    if median_wavelength < 10:
        return "um"
    if median_wavelength < 3000:
        return "nm"
    return "AA"


# --------------------------------------------------------------------------------------------
# Resampling to the model grid
# --------------------------------------------------------------------------------------------
def _integral(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Integral of the piecewise-linear (x, y) from x[0] to each t (t inside [x[0], x[-1]])."""
    cumulative = np.empty(len(x))
    cumulative[0] = 0.0
    np.cumsum(0.5 * (x[1:] - x[:-1]) * (y[1:] + y[:-1]), out=cumulative[1:])
    k = np.searchsorted(x, t, side="right") - 1
    k = np.minimum(np.maximum(k, 0), len(x) - 2)
    dx = t - x[k]
    yt = y[k] + dx * (y[k + 1] - y[k]) / (x[k + 1] - x[k])
    return cumulative[k] + 0.5 * dx * (y[k] + yt)


def coverage_mask(quality: dict[str, Any]) -> np.ndarray:
    """(grid,) float32: 1 where the grid point lies inside the data's [min_um, max_um] (``resample``'s quality).

    The quality travels as Avro floats: 0.49 comes back as 0.49000001, so the ends are compared to float32
    precision (1e-6 µm, far below the 0.005 µm grid step), or a covered edge point would read as uncovered.
    """
    grid = WAVELENGTH_GRID_UM
    return ((grid >= quality["min_um"] - 1e-6) & (grid <= quality["max_um"] + 1e-6)).astype(np.float32)


def resample(spectrum: Spectrum, min_coverage: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """(normalised reflectance on WAVELENGTH_GRID_UM as float32, quality dict for SpectrumFeatures).

    ``min_coverage``: the insufficient-coverage threshold (default ``MIN_COVERAGE``; ``MIN_COVERAGE_MASKED``
    for models that take the coverage mask).
    """
    min_coverage = MIN_COVERAGE if min_coverage is None else min_coverage
    x, y = spectrum.wavelength_um, spectrum.reflectance
    x0, x1 = float(x[0]), float(x[-1])
    grid = WAVELENGTH_GRID_UM
    if not x0 <= NORMALISATION_UM <= x1:
        raise Rejected(
            "insufficient-coverage",
            f"data cover {x0:.4f}–{x1:.4f} µm, not the normalisation wavelength {NORMALISATION_UM} µm",
        )
    covered = (grid >= x0 - 1e-9) & (grid <= x1 + 1e-9)
    n_covered = int(np.count_nonzero(covered))
    coverage = n_covered / len(grid)
    if coverage < min_coverage:
        raise Rejected(
            "insufficient-coverage",
            f"data cover {x0:.4f}–{x1:.4f} µm = {coverage:.0%} of the model grid "
            f"{GRID_START_UM}–{GRID_STOP_UM} µm; need {min_coverage:.0%}",
        )
    # One integral evaluation for every cell edge (clipped to the data) and the normalisation window.
    centres = grid[covered]
    half = 0.5 * GRID_STEP_UM
    edges = np.concatenate(
        (
            centres - half,
            centres + half,
            [NORMALISATION_UM - NORMALISATION_HALF_WIDTH_UM, NORMALISATION_UM + NORMALISATION_HALF_WIDTH_UM],
        )
    )
    edges = np.minimum(np.maximum(edges, x0), x1)
    integral = _integral(x, y, edges)
    widths = edges[n_covered : 2 * n_covered] - edges[:n_covered]
    values = np.empty(len(grid))
    values[covered] = (integral[n_covered : 2 * n_covered] - integral[:n_covered]) / widths
    first = int(np.argmax(covered))
    last = first + n_covered - 1
    values[:first] = values[first]
    values[last + 1 :] = values[last]
    norm = (integral[-1] - integral[-2]) / (edges[-1] - edges[-2])
    quality = {
        "n_points": len(x),
        "min_um": x0,
        "max_um": x1,
        "coverage_fraction": coverage,
        "dropped_fraction": spectrum.dropped_fraction,
        "median_snr": _median_snr(spectrum),
    }
    return (values / norm).astype(np.float32), quality


def _median_snr(spectrum: Spectrum) -> float | None:
    if spectrum.error is None:
        return None
    known = np.isfinite(spectrum.error)
    if not known.any():
        return None
    snr = np.sort(spectrum.reflectance[known] / spectrum.error[known])  # np.median's overhead is 10x this
    return float(0.5 * (snr[(len(snr) - 1) // 2] + snr[len(snr) // 2]))


# --------------------------------------------------------------------------------------------
# Names and the features record
# --------------------------------------------------------------------------------------------
_NUMBERED = re.compile(r"a(\d{6,7})")
_PROVISIONAL = re.compile(r"au(\d{4})([A-Z]{2}\d*)")


def object_name(uri_or_name: str) -> str:
    """The asteroid from a SMASS file name: a000001 → "1", au1996UK → "1996 UK"; else the file stem."""
    base = unquote(PurePosixPath(uri_or_name.split("?", 1)[0]).name)
    # SMASS phase suffixes: .[2] SMASSII, .[1] SMASS I (Xu et al. 1995), same naming otherwise.
    stem = re.sub(r"\.\[\d\]$", "", base).removesuffix(".spfit")
    if m := _NUMBERED.fullmatch(stem):
        return str(int(m.group(1)))
    if m := _PROVISIONAL.fullmatch(stem):
        return f"{m.group(1)} {m.group(2)}"
    if stem == base:
        stem = PurePosixPath(base).stem
    return stem or "unknown"


def asteroid_id(uri_or_name: str) -> tuple[int | None, str | None]:
    """(number, provisional designation) from a SMASS file name, None for what it does not give.

    a000001 → (1, None); au1996UK → (None, "1996 UK"); any other name → (None, None).
    """
    name = object_name(uri_or_name)
    if name.isdigit():
        return int(name), None
    if _PROVISIONAL.fullmatch("au" + name.replace(" ", "", 1)):
        return None, name
    return None, None


def spectrum_features(data: bytes, *, uri: str, file_id: str, detected_at_ms: int) -> dict[str, Any]:
    """A SpectrumFeatures record (schemas/avro/spectrum_features.avsc) for one file's bytes."""
    spectrum = read_spectrum(data, name=uri)
    try:
        # One set of features for every model: a model without a coverage input still rejects a spectrum
        # below MIN_COVERAGE, in the predictor (stream/scoring/spectrum_predictor.py).
        values, quality = resample(spectrum, min_coverage=MIN_COVERAGE_MASKED)
    except Rejected as exc:
        raise Rejected(exc.reason, f"{uri}: {exc}") from None
    return {
        "file_id": file_id,
        "uri": uri,
        "object": object_name(uri),
        "detected_at_ms": int(detected_at_ms),
        "wavelength_um": WAVELENGTH_GRID_UM.tolist(),
        "reflectance": values.tolist(),
        "quality": quality,
        "preprocessing": PREPROCESSING_VERSION,
    }
