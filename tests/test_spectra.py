"""Spectrum reading, preprocessing policy and scoring, on real SMASSII files (../shared/data/smass2)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from data_paths import require_data

import schemas
from stream.errors import Rejected
from stream.features import spectra

GRID = spectra.WAVELENGTH_GRID_UM


@pytest.fixture(scope="module")
def smass_files() -> dict[str, bytes]:
    """Every file of the SMASSII archive (raw spectra and .spfit fits), by base name."""
    archive = require_data("smass2/smass2data.tar.gz")
    out = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.endswith(".[2]"):
                out[Path(m.name).name] = tar.extractfile(m).read()
    return out


def _features(data: bytes, uri: str = "file:///in/test.txt") -> dict:
    return spectra.spectrum_features(data, uri=uri, file_id="fid", detected_at_ms=1_700_000_000_000)


def _table(w, r, e=None, sep="\t", header: str = "") -> bytes:
    cols = [w, r] + ([e] if e is not None else [])
    lines = [sep.join(f"{v:.6g}" for v in row) for row in zip(*cols, strict=True)]
    return (header + "\n".join(lines) + "\n").encode()


def _smass_columns(data: bytes) -> np.ndarray:
    return np.array([line.split() for line in data.decode().splitlines() if line.strip()], dtype=float)


# -- real files ------------------------------------------------------------------------------
def test_smass_file_gives_valid_features(smass_files):
    rec = _features(smass_files["a000001.[2]"], uri="s3://bucket/smass2/a000001.[2]")
    schemas.validate("SpectrumFeatures", rec)
    assert rec["object"] == "1"
    assert rec["wavelength_um"] == pytest.approx(GRID.tolist())
    assert len(rec["reflectance"]) == len(GRID)
    q = rec["quality"]
    assert q["n_points"] == 192 and q["coverage_fraction"] == 1.0 and q["dropped_fraction"] == 0.0
    assert q["min_um"] == pytest.approx(0.435) and q["max_um"] == pytest.approx(0.925)
    assert q["median_snr"] > 10
    # normalised at 0.55 µm, and close to the file's own values (SMASS is normalised there too)
    r = np.array(rec["reflectance"])
    assert np.interp(0.55, GRID, r) == pytest.approx(1.0, abs=0.01)
    raw = _smass_columns(smass_files["a000001.[2]"])
    assert np.allclose(r, np.interp(GRID, raw[:, 0], raw[:, 1]), atol=0.03)
    assert rec["preprocessing"] == spectra.PREPROCESSING_VERSION


def test_every_smass_file_is_accepted(smass_files):
    """All 1,341 observed spectra and their .spfit fits go through; none is silently mangled."""
    for name, data in smass_files.items():
        rec = _features(data, uri=name)
        r = np.array(rec["reflectance"])
        assert np.all(np.isfinite(r)) and np.all(r > 0), name
        assert rec["quality"]["coverage_fraction"] >= 0.95, name
    assert sum(".spfit" not in n for n in smass_files) == 1341


def test_padding_rows_are_dropped_and_counted(smass_files):
    """a006847 (218 rows) ends with 23 rows of ``0 0 0`` padding: dropped, and visible in the quality block."""
    rec = _features(smass_files["a006847.[2]"])
    q = rec["quality"]
    assert q["dropped_fraction"] == pytest.approx(23 / 218, abs=1e-6)
    assert q["max_um"] == pytest.approx(0.925)


def test_spfit_smoothed_fits_are_accepted_and_agree_with_the_spectrum(smass_files):
    """The .spfit files (two columns, 0.44-0.92 step 0.01) are valid reflectance tables of the same object."""
    fit = _features(smass_files["a000001.spfit.[2]"], uri="a000001.spfit.[2]")
    raw = _features(smass_files["a000001.[2]"], uri="a000001.[2]")
    assert fit["object"] == raw["object"] == "1"
    assert fit["quality"]["median_snr"] is None  # no error column
    assert np.max(np.abs(np.array(fit["reflectance"]) - np.array(raw["reflectance"]))) < 0.03


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a000001.[2]", "1"),
        ("s3://bucket/smass2/a010199.[2]", "10199"),
        ("file:///data/au1996UK.[2]", "1996 UK"),
        ("au1995BM2.spfit.[2]", "1995 BM2"),
        ("a000185.[1]", "185"),  # SMASS I (Xu et al. 1995)
        ("au1991XB.[1]", "1991 XB"),
        ("/in/a000004.spfit.[2]", "4"),
        ("file:///in/a000001.%5B2%5D", "1"),
        ("s3://b/k/vesta_irtf.txt", "vesta_irtf"),
        ("ceres.csv", "ceres"),
        ("", "unknown"),
    ],
)
def test_object_names(name, expected):
    assert spectra.object_name(name) == expected


# -- units, layouts, coverage ----------------------------------------------------------------
def test_angstrom_and_nm_give_the_same_features_as_microns(smass_files):
    cols = _smass_columns(smass_files["a000004.[2]"])
    um = _features(_table(cols[:, 0], cols[:, 1], cols[:, 2]))
    aa = _features(_table(cols[:, 0] * 1e4, cols[:, 1], cols[:, 2], sep=", ", header="# wavelength [A], R, err\n"))
    nm = _features(_table(cols[:, 0] * 1e3, cols[:, 1], cols[:, 2], sep=";", header="lambda_nm;refl;sigma\n"))
    for other in (aa, nm):
        assert np.allclose(other["reflectance"], um["reflectance"], atol=1e-5)
        assert other["quality"]["min_um"] == pytest.approx(um["quality"]["min_um"])


def test_header_comments_crlf_unsorted_and_duplicates(smass_files):
    cols = _smass_columns(smass_files["a000004.[2]"])
    ref = _features(smass_files["a000004.[2]"])
    rng = np.random.default_rng(0)
    shuffled = cols[rng.permutation(len(cols))]
    doubled = np.concatenate([shuffled, shuffled[:20]])
    text = "% asteroid 4 Vesta\nwavelength reflectance error\n" + _table(*doubled.T).decode().replace(
        "\n", "  # ok\r\n", 3
    )
    rec = _features(text.encode())
    assert np.allclose(rec["reflectance"], ref["reflectance"], atol=1e-6)
    assert rec["quality"]["n_points"] == len(cols)
    assert rec["quality"]["dropped_fraction"] == pytest.approx(20 / len(doubled))


def test_byte_order_mark_does_not_hide_the_first_row(smass_files):
    plain = _features(smass_files["a000004.[2]"])
    bom = _features(b"\xef\xbb\xbf" + smass_files["a000004.[2]"])  # as some Windows editors write
    assert bom["quality"] == plain["quality"] and bom["reflectance"] == plain["reflectance"]


def test_two_column_and_bad_errors_are_fine(smass_files):
    cols = _smass_columns(smass_files["a000004.[2]"])
    two = _features(_table(cols[:, 0], cols[:, 1]))
    assert two["quality"]["median_snr"] is None
    errors = cols[:, 2].copy()
    errors[::3] = -1.0
    errors[1::3] = np.nan
    three = _features(_table(cols[:, 0], cols[:, 1], errors))
    assert np.allclose(two["reflectance"], three["reflectance"])
    assert three["quality"]["median_snr"] > 0 and three["quality"]["dropped_fraction"] == 0.0


def test_narrower_coverage_is_accepted_with_held_edges(smass_files):
    """An S3OS2-like 0.49-0.92 µm spectrum: 90 % of the grid covered, the blue end held at the first value."""
    cols = _smass_columns(smass_files["a000004.[2]"])
    keep = (cols[:, 0] >= 0.49) & (cols[:, 0] <= 0.92)
    rec = _features(_table(cols[keep, 0], cols[keep, 1]))
    q = rec["quality"]
    assert q["min_um"] == pytest.approx(0.49) and q["coverage_fraction"] == pytest.approx(87 / 97)
    r = np.array(rec["reflectance"])
    first = int(np.argmax(GRID >= 0.49 - 1e-9))
    assert np.all(r[:first] == r[first])
    full = np.array(_features(smass_files["a000004.[2]"])["reflectance"])
    assert np.allclose(r[first:], full[first:], atol=0.02)


def test_coarse_gaia_like_sampling_is_resampled(smass_files):
    """16-band spectra in nm (Gaia DR3 style, 374-1034 nm) interpolate onto the grid."""
    cols = _smass_columns(smass_files["a000004.[2]"])
    centres = np.arange(374.0, 1035.0, 44.0)
    inside = (centres / 1e3 > cols[0, 0]) & (centres / 1e3 < cols[-1, 0])
    r = np.interp(centres[inside] / 1e3, cols[:, 0], cols[:, 1])
    rec = _features(_table(centres[inside], r))
    assert rec["quality"]["n_points"] == inside.sum() >= spectra.MIN_POINTS
    full = np.array(_features(smass_files["a000004.[2]"])["reflectance"])
    covered = (GRID >= rec["quality"]["min_um"]) & (GRID <= rec["quality"]["max_um"])
    assert np.allclose(np.array(rec["reflectance"])[covered], full[covered], atol=0.06)


def test_truncated_last_line_is_dropped(smass_files):
    data = smass_files["a000004.[2]"]
    cut = data[: data.rfind(b"\n", 0, len(data) - 1) + 9]  # the last row cut after 8 bytes
    rec = _features(cut)
    assert rec["quality"]["dropped_fraction"] > 0


# -- rejections --------------------------------------------------------------------------------
def _grid_rows(n: int, r: str = "1.0", start: float = 0.44, step: float = 0.01) -> list[str]:
    return [f"{start + i * step:.4f}\t{r}\t0.01" for i in range(n)]


BAD = {
    "empty-file": [b"", b"  \n\n\t\n"],
    "binary-content": [b"\x00\x01\x02\x03" * 100, np.random.default_rng(1).bytes(2048)],
    "not-a-table": [
        b"Dear colleague,\nplease find the spectrum attached.\n",
        b"# only comments\n# here\n",
        ("\n".join(_grid_rows(20)) + "\nend of data, thanks\n").encode(),
    ],
    "wrong-columns": [
        "\n".join(f"{0.44 + i * 0.01:.2f}" for i in range(40)).encode(),
        "\n".join(f"{0.44 + i * 0.01:.2f} 1.0 0.01 7 8" for i in range(40)).encode(),
        ("\n".join(_grid_rows(20)) + "\n0.70 1.0\n" + "\n".join(_grid_rows(20, start=0.71)) + "\n").encode(),
    ],
    "all-nan": [("\n".join(_grid_rows(49, r="nan"))).encode(), b"nan nan\nnan nan\ninf 1\n"],
    "too-few-points": [
        ("\n".join(_grid_rows(5)) + "\n").encode(),
        ("\n".join(_grid_rows(49, r="-0.5")) + "\n").encode(),  # negative reflectance: all dropped
        ("\n".join(_grid_rows(49, r="0")) + "\n").encode(),
        b"0.4350\t0.9004\t0.0149\n0.4375\t0.91",  # a file cut mid-write
    ],
    "insufficient-coverage": [
        ("\n".join(_grid_rows(33, start=0.60)) + "\n").encode(),  # 0.60-0.92: misses 0.55 µm
        ("\n".join(_grid_rows(27, start=0.44)) + "\n").encode(),  # 0.44-0.70: 54 % of the grid
        ("\n".join(f"{1.0 + i * 0.05:.2f} 1.0" for i in range(30)) + "\n").encode(),  # near-IR only
        ("\n".join(f"{1800 + i * 0.02:.2f} 100.0 0.1" for i in range(500)) + "\n").encode(),  # times, not λ
    ],
}


@pytest.mark.parametrize(
    ("reason", "data"), [(reason, d) for reason, cases in BAD.items() for d in cases], ids=lambda v: str(v)[:30]
)
def test_bad_input_is_rejected_with_its_reason(reason, data):
    with pytest.raises(Rejected) as info:
        _features(data)
    assert info.value.reason == reason, str(info.value)
    assert str(info.value)  # a readable message


def test_some_bad_rows_are_dropped_not_fatal():
    rows = _grid_rows(49)
    rows[3] = "0.4700\tnan\t0.01"
    rows[10] = "0.5400\t-0.2\t0.01"
    rows[20] = "0.6400\t0\t0.01"
    rec = _features(("\n".join(rows) + "\n").encode())
    assert rec["quality"]["n_points"] == 46
    assert rec["quality"]["dropped_fraction"] == pytest.approx(3 / 49)
    assert np.allclose(rec["reflectance"], 1.0)


# -- sniffing --------------------------------------------------------------------------------
def test_looks_like_spectrum(smass_files):
    assert spectra.looks_like_spectrum(smass_files["a000001.[2]"][:4096])
    assert spectra.looks_like_spectrum(smass_files["au1996UK.spfit.[2]"][:4096])
    assert spectra.looks_like_spectrum(b"# my spectrum\nwavelength,refl\n4400,0.95\n4500,0.97\n4600,0.98\n")
    assert not spectra.looks_like_spectrum(b"")
    assert not spectra.looks_like_spectrum(b"SIMPLE  =                    T / conforms to FITS standard" + b" " * 200)
    assert not spectra.looks_like_spectrum(b"\x00\x01binary" * 50)
    assert not spectra.looks_like_spectrum(b"Dear colleague,\nplease find the spectrum attached.\n")
    assert not spectra.looks_like_spectrum(b'{"wavelength": [0.44, 0.45], "reflectance": [1, 1]}\n')
    assert not spectra.looks_like_spectrum(b"1 2 3 4 5\n6 7 8 9 10\n11 12 13 14 15\n")


def test_parse_is_linear_time_safe_on_a_big_table():
    """A 200,000-row table parses (the reader has no quadratic step)."""
    w = np.linspace(0.40, 0.95, 200_000)
    rec = _features(_table(w, 1.0 + 0.1 * (w - 0.55), np.full_like(w, 0.01)))
    assert rec["quality"]["n_points"] == 200_000


# -- scoring with the shipped baseline model (onnxruntime only, no TensorFlow) ---------------------
@pytest.fixture(scope="module")
def bundled_model():
    from stream.models.registry import BUNDLED, LocalRegistry
    from stream.scoring.onnx_model import OnnxModel

    if not (BUNDLED / "smass" / "champion.json").exists():
        pytest.skip("no bundled smass model (run `skystream train smass --bundle`)")
    return OnnxModel(LocalRegistry(BUNDLED, seed_from=None).load("smass"))


@pytest.fixture(scope="module")
def labelled_records(smass_files):
    """SpectrumFeatures of every observed SMASSII spectrum, with its main group from Bus.Taxonomy.txt."""
    from training.smass import BUS_TO_GROUP, parse_taxonomy  # numpy only: no TensorFlow import

    taxonomy = parse_taxonomy(require_data("smass2/Bus.Taxonomy.txt").read_text(encoding="latin-1"))
    records, groups = [], []
    for name, data in sorted(smass_files.items()):
        if ".spfit" in name:
            continue
        records.append(spectra.spectrum_features(data, uri=f"file:///smass2/{name}", file_id=f"id-{name}",
                                                 detected_at_ms=0))
        groups.append(BUS_TO_GROUP[taxonomy[records[-1]["object"]].bus])
    return records, groups


def test_bundled_model_classifies_real_spectra(bundled_model, labelled_records):
    from stream.scoring.spectrum_predictor import predict_spectra

    records, groups = labelled_records
    predictions = predict_spectra(bundled_model, records)
    for pred in predictions[:50]:
        schemas.validate("Prediction", pred)
    assert all(p["model"] == "smass-cnn" and p["model_version"] == bundled_model.version for p in predictions)
    accuracy = np.mean([p["main_group"] == g for p, g in zip(predictions, groups, strict=True)])
    # The baseline was trained on these spectra (cross-validated accuracy is in its metadata): this
    # checks that serving reproduces training, end to end through stream.features.spectra and onnxruntime.
    assert accuracy >= 0.97
    p = predictions[0]
    assert p["object"] == "1" and p["main_group"] == "C"
    assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_bundled_model_on_narrower_coverage(bundled_model, labelled_records, smass_files):
    """SMASS spectra cut to 0.49-0.92 µm (the S3OS2 range) keep their class nearly always."""
    from stream.scoring.spectrum_predictor import predict_spectra

    records, groups = labelled_records
    cut_records = []
    for rec in records[::4]:
        cols = _smass_columns(smass_files[rec["uri"].rsplit("/", 1)[1]])
        keep = (cols[:, 0] >= 0.49) & (cols[:, 0] <= 0.92) & (cols[:, 1] > 0)
        cut_records.append(_features(_table(cols[keep, 0], cols[keep, 1], cols[keep, 2]), uri=rec["uri"]))
    predictions = predict_spectra(bundled_model, cut_records)
    accuracy = np.mean([p["main_group"] == g for p, g in zip(predictions, groups[::4], strict=True)])
    assert accuracy >= 0.93


def test_batched_scoring_is_identical_to_one_at_a_time(bundled_model, labelled_records):
    from stream.scoring.spectrum_predictor import predict_spectra

    records = labelled_records[0][:64]
    batched = predict_spectra(bundled_model, records)
    assert batched == [predict_spectra(bundled_model, [r])[0] for r in records]  # bit for bit
    assert predict_spectra(bundled_model, records[::-1]) == batched[::-1]
    ids = {p["prediction_id"] for p in batched}
    assert len(ids) == len(records)  # one id per file, stable across runs (sha256 of file, model, version)
    assert predict_spectra(bundled_model, records[:1])[0]["prediction_id"] == batched[0]["prediction_id"]


def test_features_on_another_grid_are_refused(bundled_model, labelled_records):
    from stream.scoring.spectrum_predictor import predict_spectra

    rec = labelled_records[0][0]
    shifted = dict(rec, wavelength_um=[w + 0.0025 for w in rec["wavelength_um"]])
    shorter = dict(rec, wavelength_um=rec["wavelength_um"][:-1], reflectance=rec["reflectance"][:-1])
    for bad in (shifted, shorter):
        with pytest.raises(Rejected) as info:
            predict_spectra(bundled_model, [rec, bad])
        assert info.value.reason == "grid-mismatch"
    assert predict_spectra(bundled_model, []) == []


def test_preprocessing_still_matches_what_the_bundled_model_was_trained_on(bundled_model, smass_files):
    """The smoke-test inputs stored with the model are stream.features.spectra features of real files: today's
    code must reproduce them, or the shipped model is being fed something it never saw."""
    ref = bundled_model.metadata["smoke_test"]
    assert bundled_model.metadata["preprocessing"] == spectra.PREPROCESSING_VERSION
    by_object = {spectra.object_name(n): d for n, d in smass_files.items() if ".spfit" not in n}
    for obj, stored in zip(ref["objects"], ref["inputs"][bundled_model.metadata["input_name"]], strict=True):
        assert np.array_equal(np.float32(_features(by_object[obj])["reflectance"]), np.float32(stored)), obj


# -- coverage-mask models, calibration and the border flag (issue 13) ---------------------------------
def _cut_record(smass_files, name: str, lo: float, hi: float) -> dict:
    cols = _smass_columns(smass_files[name])
    keep = (cols[:, 0] >= lo) & (cols[:, 0] <= hi) & (cols[:, 1] > 0)
    return _features(_table(cols[keep, 0], cols[keep, 1], cols[keep, 2]), uri=f"file:///in/{name}")


def _masked_model(calibration: dict | None = None, border_rule: dict | None = None):
    """A tiny ONNX model with the coverage input: softmax((reflectance · coverage) @ W). Its answer
    depends on every covered grid point and on nothing where coverage is 0."""
    from onnx import TensorProto, helper, numpy_helper

    from stream.models.registry import ModelVersion
    from stream.scoring.onnx_model import OnnxModel
    from training.smass import BUS_CLASS_NAMES, BUS_TO_GROUP, GROUP_NAMES  # numpy only

    n = len(GRID)
    rng = np.random.default_rng(0)
    w_group = numpy_helper.from_array(rng.normal(0, 3, (n, 4)).astype(np.float32), "w_group")
    w_bus = numpy_helper.from_array(rng.normal(0, 3, (n, 25)).astype(np.float32), "w_bus")
    nodes = [helper.make_node("Mul", ["reflectance", "coverage"], ["masked"]),
             helper.make_node("MatMul", ["masked", "w_group"], ["zg"]),
             helper.make_node("Softmax", ["zg"], ["main_group"], axis=1),
             helper.make_node("MatMul", ["masked", "w_bus"], ["zb"]),
             helper.make_node("Softmax", ["zb"], ["bus_class"], axis=1)]
    graph = helper.make_graph(
        nodes, "masked", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [None, n]) for i in ("reflectance",
                                                                                                    "coverage")],
        [helper.make_tensor_value_info("main_group", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("bus_class", TensorProto.FLOAT, [None, 25])], [w_group, w_bus])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    meta = {"name": "masked-test", "wavelength_grid_um": GRID.tolist(), "input_name": "reflectance",
            "coverage_name": "coverage", "output_names": {"main_group": "main_group", "bus_class": "bus_class"},
            "class_names": list(GROUP_NAMES), "bus_class_names": list(BUS_CLASS_NAMES),
            "bus_to_main_group": BUS_TO_GROUP, "calibration": calibration, "border_rule": border_rule}
    return OnnxModel(ModelVersion("smass", "7", proto.SerializeToString(), meta))


def test_a_narrow_spectrum_is_scored_by_a_coverage_model_and_refused_by_an_old_one(smass_files):
    """0.50-0.82 µm (67 % of the grid) gets features; a model with a coverage input scores it from the
    covered points only; a model without one (smass v1) rejects it as before, and scores the rest."""
    from stream.models.registry import BUNDLED, LocalRegistry
    from stream.scoring.onnx_model import OnnxModel
    from stream.scoring.spectrum_predictor import predict_spectra

    cut = _cut_record(smass_files, "a000001.[2]", 0.50, 0.82)
    assert cut["quality"]["coverage_fraction"] == pytest.approx(65 / 97)
    full = _features(smass_files["a000001.[2]"], uri="file:///in/a000001.[2]")
    masked = _masked_model()
    [p] = predict_spectra(masked, [cut])
    # What the reader holds flat outside 0.50-0.82 µm does not count: change it and the answer stays.
    covered = spectra.coverage_mask(cut["quality"])
    assert covered.sum() == 65
    _, wired = schemas.decode(schemas.encode("SpectrumFeatures", _cut_record(smass_files, "a000001.[2]", 0.49, 0.83)))
    assert wired["quality"]["min_um"] != 0.49 and spectra.coverage_mask(wired["quality"]).sum() == 69  # 0.49..0.83
    garbage = dict(cut, reflectance=np.where(covered > 0, cut["reflectance"], 5.0).tolist())
    assert predict_spectra(masked, [garbage])[0]["probabilities"] == p["probabilities"]
    assert predict_spectra(masked, [full])[0]["probabilities"] != p["probabilities"]

    old = OnnxModel(LocalRegistry(BUNDLED, seed_from=None).load("smass", "1"))
    assert old.metadata.get("coverage_name") is None
    with pytest.raises(Rejected) as info:
        predict_spectra(old, [full, cut])
    assert info.value.reason == "insufficient-coverage"
    [q] = predict_spectra(old, [full])
    assert q["calibrated_probabilities"] is None and q["border"] is None and q["novelty"] is None
    schemas.validate("Prediction", q)


def test_calibration_and_border_flag_follow_the_model_metadata(smass_files):
    from stream.scoring.calibration import border_flag, temper
    from stream.scoring.spectrum_predictor import predict_spectra

    rec = _features(smass_files["a000004.[2]"], uri="file:///in/a000004.[2]")
    plain = predict_spectra(_masked_model(), [rec])[0]
    rule = {"pairs": [["S", "Other"], ["C", "X"]], "margin": 1.01, "bus_runner_up": True}
    p = predict_spectra(_masked_model({"temperature": 1.8}, rule), [rec])[0]
    assert p["probabilities"] == plain["probabilities"] and p["main_group"] == plain["main_group"]
    cal = p["calibrated_probabilities"]
    assert max(cal, key=cal.get) == p["main_group"] and sum(cal.values()) == pytest.approx(1)
    assert max(cal.values()) < max(p["probabilities"].values())  # T > 1 softens
    ranked = sorted(cal, key=cal.get, reverse=True)[:2]
    on_border = set(ranked) in ({"S", "Other"}, {"C", "X"})
    assert p["border"] is on_border and (p["border_reason"] is not None) is on_border
    schemas.validate("Prediction", p)

    assert np.allclose(temper([[0.9, 0.1]], 2.0), [[0.75, 0.25]])
    bus = {"S": 0.1, "K": 0.9}
    groups = {"S": "S", "K": "Other", "C": "C", "X": "X"}
    flat = np.ones(len(GRID))
    rule = {"pairs": [["S", "Other"], ["C", "X"]], "margin": 0.2, "bus_runner_up": True,
            "cx_slope_boundary_per_um": 0.146, "cx_slope_band_per_um": 0.10}
    assert border_flag({"S": 0.55, "Other": 0.40, "C": 0.05, "X": 0.0}, bus, groups, flat, rule)[0]  # margin
    assert border_flag({"S": 0.90, "Other": 0.08, "C": 0.02, "X": 0.0}, bus, groups, flat, rule)[0]  # Bus says K
    assert not border_flag({"S": 0.90, "Other": 0.08, "C": 0.02, "X": 0.0}, {"S": 1.0}, groups, flat, rule)[0]
    assert not border_flag({"S": 0.5, "C": 0.45, "Other": 0.05, "X": 0.0}, bus, groups, flat, rule)[0]  # not a pair
    tilted = 1 + 0.15 * (GRID - 0.55)  # slope 0.15/µm: next to the C|X boundary
    cx = {"C": 0.9, "X": 0.08, "S": 0.02, "Other": 0.0}
    assert border_flag(cx, {"C": 1.0}, groups, tilted, rule)[0]
    assert not border_flag(cx, {"C": 1.0}, groups, 1 + 0.6 * (GRID - 0.55), rule)[0]
    assert border_flag(cx, {"C": 1.0}, groups, flat, None) == (None, None)
