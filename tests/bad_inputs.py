"""A corpus of bad inputs built from real files (SMASSII spectra, TESS light curves), for tests/test_bad_inputs.py.

``build(directory, spectrum, lightcurve)`` writes every case under ``directory`` and returns, per case, the
path the dead letter names and the (stage, reason) it must get. The limits the cases are made against
are in ``LIMITS`` (Settings environment variables): small, so no case needs gigabytes.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

SPECTRUM_LIMIT = 4 * 2**20
LIMITS = {
    "SKYSTREAM_MAX_SPECTRUM_BYTES": str(SPECTRUM_LIMIT),
    "SKYSTREAM_MAX_SPECTRUM_MEMORY_MB": "8",  # a SMASS spectrum takes ~0 MB more, eats_memory.txt ~30 MB
    "SKYSTREAM_MAX_LIGHTCURVE_BYTES": str(24 * 2**20),
    # A bad light curve is refused in ~0.1 s; slow_search.fits's search took 3.9-5.1 s on a fast idle 2-core
    # machine, where a budget of 4 s let it finish now and then (a prediction, not the timeout dead letter).
    "SKYSTREAM_MAX_LIGHTCURVE_SECONDS": "1.5",
}


def _table(w: np.ndarray, r: np.ndarray, e: np.ndarray | None = None) -> bytes:
    e = np.full_like(w, 0.01) if e is None else e
    return "".join(f"{a:.6g}\t{b:.6g}\t{c:.4g}\n" for a, b, c in zip(w, r, e, strict=True)).encode()


def _spectrum_cases(real: bytes) -> dict[str, tuple[bytes, str, str]]:
    rows = np.loadtxt(io.BytesIO(real))
    w, r = rows[:, 0], rows[:, 1]
    n = len(w)
    dense = np.linspace(0.44, 0.92, 240_000)  # 3.8 MB of text: its parse takes ~30 MB
    return {
        "truncated.txt": (real[: len(real) // 5], "preprocess", "insufficient-coverage"),
        "cut_mid_row.txt": (real[:41], "watch", "unknown-kind"),
        "empty.txt": (b"", "watch", "empty-file"),
        "blank.txt": (b"\n \n\t\n", "watch", "unknown-kind"),
        "binary.dat": (np.random.default_rng(1).bytes(4096), "watch", "binary-content"),
        "nul_in_table.txt": (real[:200] + b"\x00" * 64 + real[264:], "watch", "binary-content"),
        "five_columns.txt": (b"".join(b"%.4f 1.0 0.01 5 6\n" % x for x in w), "watch", "unknown-kind"),
        "one_column.txt": (b"".join(b"%.4f\n" % x for x in w), "watch", "unknown-kind"),
        "ragged_columns.txt": (real.replace(b"\t0.0", b"", n // 2), "preprocess", "wrong-columns"),
        "all_nan.txt": (_table(w, np.full(n, np.nan)), "preprocess", "all-nan"),
        "all_inf.txt": (_table(w, np.full(n, np.inf)), "preprocess", "all-nan"),
        "inf_wavelengths.txt": (_table(np.full(n, np.inf), r), "preprocess", "all-nan"),
        "negative_reflectance.txt": (_table(w, -r), "preprocess", "too-few-points"),
        "one_wavelength_repeated.txt": (_table(np.full(n, 0.55), r), "preprocess", "too-few-points"),
        "metres.txt": (_table(w * 1e-6, r), "preprocess", "insufficient-coverage"),
        "kilometres_of_angstrom.txt": (_table(w * 1e7, r), "preprocess", "insufficient-coverage"),
        "text_in_table.txt": (real[:300] + b"reflectance here\n" + real[300:], "preprocess", "not-a-table"),
        "gzipped.txt.gz": (gzip.compress(real), "watch", "binary-content"),
        "gzip_bomb.gz": (gzip.compress(b"0.5 1.0 0.01\n" * 2_000_000), "watch", "binary-content"),
        "huge.txt": (real * (SPECTRUM_LIMIT // len(real) + 2), "watch", "too-large"),
        "eats_memory.txt": (_table(dense, np.ones_like(dense)), "preprocess", "out-of-memory"),
    }


def _lightcurve(primary: fits.Header, columns: dict[str, np.ndarray], table_header: fits.Header | None = None) -> bytes:
    cols = [fits.Column(name=k, format="D" if v.dtype.kind == "f" else "J", array=v) for k, v in columns.items()]
    table = fits.BinTableHDU.from_columns(cols, header=table_header, name="LIGHTCURVE")
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(header=primary), table]).writeto(out)
    return out.getvalue()


def _with_card(data: bytes, key: bytes, value: bytes, hdu: int = 1) -> bytes:
    """``data`` with the value of card ``key`` of header number ``hdu`` replaced (its data left as it is)."""
    start = 0
    for _ in range(hdu):
        start = data.index(b"XTENSION", start + 1)
    at = data.index(key.ljust(8) + b"= ", start)
    card = (key.ljust(8) + b"= " + value.rjust(20)).ljust(80)
    return data[:at] + card + data[at + 80:]


def _lightcurve_cases(real: bytes) -> dict[str, tuple[bytes, str, str]]:
    with fits.open(io.BytesIO(real)) as hdul:
        primary = hdul[0].header.copy()
        lc = hdul[1].data
        t = np.array(lc["TIME"], dtype=np.float64)
        f = np.array(lc["PDCSAP_FLUX"], dtype=np.float64)
        q = np.array(lc["QUALITY"], dtype=np.int32)
    ok = np.isfinite(t) & np.isfinite(f) & (q == 0)
    t, f, q = t[ok], f[ok], q[ok]
    rng = np.random.default_rng(7)
    # The sector observed again and again for a year: valid, but its period search takes seconds.
    span = float(t[-1] - t[0]) + 0.5
    year_t = (t[None, :] + span * np.arange(int(360 // span))[:, None]).ravel()
    year_f = np.tile(f, int(360 // span)) * (1 + rng.normal(0, 1e-4, year_t.size))
    # An image extension declaring 100000 x 100000 doubles (80 GB) after the table.
    huge_image = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", -64), ("NAXIS", 2), ("NAXIS1", 100_000),
                              ("NAXIS2", 100_000), ("PCOUNT", 0), ("GCOUNT", 1)])
    return {
        "truncated_lc.fits": (real[: len(real) // 3], "preprocess", "truncated-fits"),
        "header_only.fits": (real[:2880], "preprocess", "truncated-fits"),
        "billion_rows.fits": (_with_card(real, b"NAXIS2", b"1000000000"), "preprocess", "absurd-dimensions"),
        "huge_bitpix_image.fits": (real + huge_image.tostring().encode(), "preprocess", "absurd-dimensions"),
        "bad_bitpix.fits": (_with_card(real, b"BITPIX", b"7"), "preprocess", "absurd-dimensions"),
        "ten_year_span.fits": (_lightcurve(primary, {"TIME": np.linspace(1400, 1400 + 3650, t.size), "PDCSAP_FLUX": f,
                                                     "QUALITY": q}), "preprocess", "absurd-time-span"),
        "shuffled_times.fits": (_lightcurve(primary, {"TIME": rng.permutation(t), "PDCSAP_FLUX": f, "QUALITY": q}),
                                "preprocess", "unsorted-time"),
        "nan_flux.fits": (_lightcurve(primary, {"TIME": t, "PDCSAP_FLUX": np.full_like(f, np.nan), "QUALITY": q}),
                          "preprocess", "all-nan-flux"),
        "inf_times.fits": (_lightcurve(primary, {"TIME": np.full_like(t, np.inf), "PDCSAP_FLUX": f, "QUALITY": q}),
                           "preprocess", "too-few-points"),
        "julian_days.fits": (_lightcurve(primary, {"TIME": t + 2457000.0, "PDCSAP_FLUX": f, "QUALITY": q}),
                             "preprocess", "absurd-header"),
        "no_flux_column.fits": (_lightcurve(primary, {"TIME": t, "FLUX_OF_SOMETHING": f, "QUALITY": q}),
                                "preprocess", "missing-columns"),
        "slow_search.fits": (_lightcurve(primary, {"TIME": year_t, "PDCSAP_FLUX": year_f,
                                                   "QUALITY": np.zeros(year_t.size, np.int32)}),
                             "preprocess", "timeout"),
    }


def build(directory: Path, spectrum: Path, lightcurve: Path) -> dict[str, tuple[str, str]]:
    """Write the corpus under ``directory``; returns dead-letter URI -> (stage, reason) for each case."""
    expected: dict[str, tuple[str, str]] = {}
    cases = {**_spectrum_cases(spectrum.read_bytes()), **_lightcurve_cases(lightcurve.read_bytes())}
    for name, (content, stage, reason) in cases.items():
        (directory / name).write_bytes(content)
        expected[str(directory / name)] = (stage, reason)
    # Odd names: a valid name with spaces, quotes and a newline holds garbage; an undecodable one is refused unread.
    odd = directory / "odd 'name'\n\u00e9\u6f22.dat"
    odd.write_bytes(b"\x01\x02binary\x00" * 100)
    expected[str(odd)] = ("watch", "binary-content")
    undecodable = os.fsencode(directory) + b"/bad\xff\xfename.txt"
    with open(undecodable, "wb") as fh:
        fh.write(spectrum.read_bytes())
    expected[undecodable.decode("utf-8", "backslashreplace")] = ("watch", "bad-name")  # named, escaped
    # A link out of the root (its target is a good file: it must not be read) and a too-deep tree.
    outside = directory.parent / "outside.txt"
    outside.write_bytes(spectrum.read_bytes())
    (directory / "link_out.txt").symlink_to(outside)
    expected[str(directory / "link_out.txt")] = ("watch", "outside-root")
    deep = directory.joinpath(*["d"] * 33)
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_bytes(spectrum.read_bytes())
    expected[str(directory.joinpath(*["d"] * 33))] = ("watch", "too-deep")
    return expected
