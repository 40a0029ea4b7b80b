"""Reading TESS light-curve FITS files: real SPOC and tess-data-alerts files, and everything that
must be refused (each with its own reason code, as the dead-letter topic reports it)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).parent))
from data_paths import require_data  # noqa: E402

from stream.errors import Rejected  # noqa: E402
from stream.features.lightcurves import (  # noqa: E402
    DEFAULT_QUALITY_BITMASK,
    looks_like_lightcurve,
    read_lightcurve,
    stitch,
)
from stream.features.transits import lightcurve_features  # noqa: E402

SPOC = "tess/lc/tic25155310_s06_lc.fits"
ALERTS_HLSP = "tess/lc/hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"


@pytest.fixture(scope="module")
def spoc_bytes() -> bytes:
    return require_data(SPOC).read_bytes()


def _rewrite(data: bytes, edit) -> bytes:
    """A copy of a real light-curve file with ``edit(hdul)`` applied."""
    with fits.open(io.BytesIO(data)) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    edit(hdul)
    buf = io.BytesIO()
    hdul.writeto(buf, output_verify="silentfix")
    return buf.getvalue()


def test_reads_spoc_light_curve_with_star_parameters(spoc_bytes: bytes) -> None:
    lc = read_lightcurve(spoc_bytes)
    assert lc.tic_id == 25155310 and lc.sector == 6 and lc.object == "TIC 25155310"
    assert lc.tmag == pytest.approx(10.555, abs=1e-3)
    assert lc.teff_k == pytest.approx(5800.0)
    assert lc.radius_rsun == pytest.approx(1.27, abs=1e-2)
    assert lc.logg == pytest.approx(4.28, abs=1e-2)
    assert lc.flux_column == "PDCSAP_FLUX"
    # BTJD, ascending, finite, normalised; flagged cadences and NaNs are gone.
    assert 1468.0 < lc.time[0] < lc.time[-1] < 1491.0
    assert np.all(np.diff(lc.time) > 0) and np.isfinite(lc.flux).all()
    assert np.median(lc.flux) == pytest.approx(1.0)
    assert lc.cadence_days == pytest.approx(2.0 / 1440.0, rel=1e-3)
    with fits.open(io.BytesIO(spoc_bytes)) as hdul:
        d = hdul[1].data
        quality_ok = (d["QUALITY"] & DEFAULT_QUALITY_BITMASK) == 0
        expected = np.isfinite(d["TIME"]) & np.isfinite(d["PDCSAP_FLUX"]) & quality_ok
    assert lc.n_valid == int(expected.sum()) and lc.n_cadences == len(d)


def test_sap_flux_on_request(spoc_bytes: bytes) -> None:
    lc = read_lightcurve(spoc_bytes, flux_column="sap")
    assert lc.flux_column == "SAP_FLUX"
    assert lc.n_valid > 10_000


def test_tess_data_alerts_hlsp_is_read_like_spoc() -> None:
    lc = read_lightcurve(require_data(ALERTS_HLSP).read_bytes())
    assert lc.tic_id == 25155310 and lc.sector == 1
    assert lc.n_valid > 15_000


def test_qlp_layout_falls_back_to_kspsap_flux(spoc_bytes: bytes) -> None:
    """QLP HLSPs have SAP_FLUX and KSPSAP_FLUX (detrended) but no PDCSAP_FLUX."""

    def to_qlp(hdul: fits.HDUList) -> None:
        hdul[0].header["ORIGIN"] = "MIT/QLP"
        cols = hdul[1].columns
        keep = [c for c in cols if c.name in ("TIME", "SAP_FLUX", "QUALITY")]
        ksp = fits.Column(name="KSPSAP_FLUX", format="E", array=hdul[1].data["PDCSAP_FLUX"])
        hdul[1] = fits.BinTableHDU.from_columns(keep + [ksp], header=hdul[1].header, name="LIGHTCURVE")

    lc = read_lightcurve(_rewrite(spoc_bytes, to_qlp))
    assert lc.flux_column == "KSPSAP_FLUX"
    assert lc.n_valid > 10_000


def test_tables_with_scaled_or_vector_columns_read_the_same_light_curve(spoc_bytes: bytes) -> None:
    """Plain tables are viewed in place; any other layout (here a scaled integer column, as
    unsigned integers are stored, and a vector column) goes through astropy and reads the same."""

    def add_columns(hdul: fits.HDUList) -> None:
        n = len(hdul[1].data)
        extra = [fits.Column(name="FLAGS16", format="I", bzero=32768, array=np.arange(n, dtype=np.uint16)),
                 fits.Column(name="POS", format="2E", array=np.ones((n, 2), np.float32))]
        hdul[1] = fits.BinTableHDU.from_columns(list(hdul[1].columns) + extra, header=hdul[1].header,
                                                name="LIGHTCURVE")

    plain, other = read_lightcurve(spoc_bytes), read_lightcurve(_rewrite(spoc_bytes, add_columns))
    for name in ("time", "flux", "flux_err"):
        assert np.array_equal(getattr(plain, name), getattr(other, name), equal_nan=True)
    assert (plain.tic_id, plain.sector, plain.n_cadences) == (other.tic_id, other.sector, other.n_cadences)


def test_sniffing_needs_only_the_head_of_a_file(spoc_bytes: bytes) -> None:
    for relative in (SPOC, ALERTS_HLSP):
        assert looks_like_lightcurve(require_data(relative).read_bytes()[:10_240])
    assert looks_like_lightcurve(spoc_bytes[:16_384])
    assert not looks_like_lightcurve(b"0.4350\t0.9004\t0.0149\n" * 100)
    assert not looks_like_lightcurve(b"")


def test_stitching_sectors_of_one_star() -> None:
    curves = [read_lightcurve(require_data(f"tess/lc/tic279741379_s0{s}_lc.fits").read_bytes()) for s in (1, 2)]
    lc = stitch(curves)
    assert lc.sectors == (1, 2) and lc.n_valid == sum(c.n_valid for c in curves)
    assert lc.baseline_days > 50 and np.all(np.diff(lc.time) > 0)


# -- what must be refused --------------------------------------------------------------------------
def _tpf() -> bytes:
    primary = fits.PrimaryHDU()
    primary.header.update(TELESCOP="TESS", CREATOR="1234 TargetPixelExporterPipelineModule", TICID=25155310,
                          SECTOR=6)
    pixels = fits.BinTableHDU.from_columns(
        [fits.Column(name="TIME", format="D", array=np.linspace(1468, 1490, 500)),
         fits.Column(name="FLUX", format="121E", dim="(11,11)", array=np.ones((500, 11, 11), np.float32))],
        name="PIXELS")
    buf = io.BytesIO()
    fits.HDUList([primary, pixels, fits.ImageHDU(np.ones((11, 11), np.int32), name="APERTURE")]).writeto(buf)
    return buf.getvalue()


def _ffi() -> bytes:
    primary = fits.PrimaryHDU()
    primary.header.update(TELESCOP="TESS", CAMERA=1, CCD=1)
    buf = io.BytesIO()
    fits.HDUList([primary, fits.ImageHDU(np.zeros((256, 256), np.float32))]).writeto(buf)
    return buf.getvalue()


def _kepler(spoc: bytes) -> bytes:
    def edit(hdul: fits.HDUList) -> None:
        hdul[0].header["TELESCOP"] = "Kepler"

    return _rewrite(spoc, edit)


def _set_column(name: str, fn):
    def edit(hdul: fits.HDUList) -> None:
        hdul[1].data[name] = fn(hdul[1].data[name])

    return edit


def _header(key: str, value):
    def edit(hdul: fits.HDUList) -> None:
        hdul[0].header[key] = value

    return edit


def _drop_flux(hdul: fits.HDUList) -> None:
    keep = [c for c in hdul[1].columns if "FLUX" not in c.name]
    hdul[1] = fits.BinTableHDU.from_columns(keep, header=hdul[1].header, name="LIGHTCURVE")


def _single_point(hdul: fits.HDUList) -> None:
    first_good = int(np.flatnonzero(np.isfinite(hdul[1].data["PDCSAP_FLUX"]))[0])
    hdul[1] = fits.BinTableHDU(hdul[1].data[first_good : first_good + 1], header=hdul[1].header, name="LIGHTCURVE")


BAD = {
    # name -> (how to make it from the real SPOC file, the reason it must be refused with)
    "truncated": (lambda d: d[: len(d) // 2], "truncated-fits"),
    "truncated-header": (lambda d: d[:7000], "truncated-fits"),
    "garbage": (lambda d: np.random.default_rng(0).bytes(20_000), "not-fits"),
    "corrupt-header": (lambda d: d[:2880] + b"\x00" * 2880 + d[5760:], "corrupt-fits"),
    "target-pixel-file": (lambda d: _tpf(), "target-pixel-file"),
    "full-frame-image": (lambda d: _ffi(), "full-frame-image"),
    "not-tess": (_kepler, "not-tess"),
    "missing-columns": (lambda d: _rewrite(d, _drop_flux), "missing-columns"),
    "all-nan-flux": (lambda d: _rewrite(d, _set_column("PDCSAP_FLUX", lambda a: a * np.nan)), "all-nan-flux"),
    "single-point": (lambda d: _rewrite(d, _single_point), "too-few-points"),
    "negative-tic": (lambda d: _rewrite(d, _header("TICID", -5)), "absurd-header"),
    "absurd-sector": (lambda d: _rewrite(d, _header("SECTOR", 99_999)), "absurd-header"),
    "absurd-radius": (lambda d: _rewrite(d, _header("RADIUS", -3.0)), "absurd-header"),
    "time-not-btjd": (lambda d: _rewrite(d, _set_column("TIME", lambda t: t + 2_457_000.0)), "absurd-header"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_are_rejected_with_a_clear_reason(name: str, spoc_bytes: bytes) -> None:
    make, reason = BAD[name]
    data = make(spoc_bytes)
    with pytest.raises(Rejected) as err:
        lightcurve_features(data, uri=f"test://{name}", file_id=name, detected_at_ms=0)
    assert err.value.reason == reason, str(err.value)
    assert str(err.value)  # a human-readable explanation for the dead letter


def test_sniffing_refuses_pixel_files_and_images(spoc_bytes: bytes) -> None:
    assert not looks_like_lightcurve(_tpf()[:16_384])
    assert not looks_like_lightcurve(_ffi()[:16_384])
    assert not looks_like_lightcurve(_kepler(spoc_bytes)[:16_384])
