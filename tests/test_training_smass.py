"""`skystream train smass`: labels, and a quick real training run that exports, verifies and publishes."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import pytest
from data_paths import require_data

import schemas
from stream.errors import Rejected
from stream.features import spectra
from stream.models.registry import LocalRegistry
from stream.scoring.onnx_model import OnnxModel
from training import smass


def test_taxonomy_parsing_and_main_group_counts():
    """The published 1,339 (S 549, C 396, X 237, Other 157) miss 523 Ada (X) and 614 Pia (C), whose rows
    have extra tabs; read by fields, all 1,341 SMASSII spectra have a Bus class."""
    text = require_data("smass2/Bus.Taxonomy.txt").read_text(encoding="latin-1")
    tax = smass.parse_taxonomy(text)
    assert len(tax) == 1447
    assert tax["1"].bus == "C" and tax["1"].tholen == "G" and tax["1"].name == "Ceres"
    assert tax["523"].bus == "X" and tax["614"].bus == "C"
    assert tax["1996 UK"].bus == "Sq" and tax["1998 MQ"].bus == "S"
    assert tax["3908"].bus == ""  # Nyx: "-" in the file, unclassified
    assert tax["5646"].name == "1990 TR"  # numbered object whose name is its old designation

    data = smass.load_smass(require_data("smass2"))
    counts = Counter(smass.GROUP_NAMES[i] for i in data.group)
    assert counts == {"S": 549, "C": 397, "X": 238, "Other": 157}
    assert not data.skipped  # no Q and no unclassified object among the spectra
    assert data.features.shape == (1341, len(spectra.WAVELENGTH_GRID_UM))
    assert "1996 UK" in data.objects


def test_survey_variants_go_through_the_serving_preprocessing():
    data = smass.load_smass(require_data("smass2"), limit=40)
    variants = smass.survey_variants(data)
    for name, v in variants.items():
        assert v.shape == data.features.shape, name
        rejected = ~np.isfinite(v).all(axis=1)  # NaN rows: refused by the coverage policy
        # 0.50-0.86 µm is 75 % of the grid, right at the policy's limit: a spectrum with a missing
        # sample at either end falls below it. Everything else is well inside.
        assert rejected.sum() <= (3 if name.startswith("cut_0.50") else 0), name
    s3os2 = variants["cut_0.49-0.92um (S3OS2 range)"]
    assert np.all(s3os2[:, :10] == s3os2[:, 10:11])  # 0.44-0.485 held at the 0.49 value
    # The slope variants tilt the spectrum about 0.55 µm and nothing else.
    grid = spectra.WAVELENGTH_GRID_UM
    ratio = np.median(variants["slope_+0.05_per_um"] / data.features, axis=0)
    assert ratio == pytest.approx(1 + 0.05 * (grid - 0.55), abs=2e-3)


def test_slope_jitter_tilts_each_training_spectrum_about_the_normalisation_point():
    data = smass.load_smass(require_data("smass2"), limit=40)
    # The issue-13 recipe (crop, curvature, bumps) is the default since smass v2: off here, to see the tilt alone.
    recipe_off = {"crop_prob": 0.0, "curvature_jitter": 0.0, "bump_jitter": 0.0}
    cfg = smass.ModelConfig(noise=0.0, edge_cut_prob=0.0, slope_jitter=0.1, **recipe_off)
    out = smass.augment(data.features, np.zeros_like(data.features), np.random.default_rng(0), cfg)
    grid = spectra.WAVELENGTH_GRID_UM - 0.55
    slopes = np.array([np.polyfit(grid, row, 1)[0] for row in out / data.features])
    assert np.allclose(out / data.features, 1 + slopes[:, None] * grid, atol=1e-5)  # a pure tilt
    assert np.all(np.abs(slopes) <= 0.1) and slopes.std() > 0.04  # drawn per spectrum within ±0.1 per µm
    plain = smass.augment(data.features, np.zeros_like(data.features), np.random.default_rng(0),
                          smass.ModelConfig(noise=0.0, edge_cut_prob=0.0, **recipe_off))
    assert np.array_equal(plain, data.features)  # slope jitter is off by default


def test_issue13_augmentations_keep_the_normalisation_and_crop_with_a_mask():
    """Cropping holds the ends flat and zeroes the mask there, as the reader does for a spectrum that
    stops short; curvature and bumps change the shape but keep 1.0 at 0.55 µm; all off = plain augment."""
    grid = spectra.WAVELENGTH_GRID_UM
    x = np.tile((1 + 0.5 * (grid - 0.55)).astype(np.float32), (64, 1))
    cfg = smass.ModelConfig(noise=0.0, edge_cut_prob=0.0, crop_prob=1.0, curvature_jitter=0.05, bump_jitter=0.05,
                            coverage_mask=True)
    out, mask = smass.augment_with_mask(x, np.zeros_like(x), np.random.default_rng(0), cfg)
    k55 = int(np.argmin(np.abs(grid - 0.55)))
    assert np.allclose(out[:, k55], x[:, k55], atol=1e-5)
    assert not np.allclose(out, x, atol=1e-3)  # the shape did change
    assert mask.shape == x.shape and mask[:, k55].all() and (mask.sum(1) < len(grid)).all()
    first = np.argmax(mask > 0, axis=1)
    last = len(grid) - 1 - np.argmax(mask[:, ::-1] > 0, axis=1)
    rows = np.arange(64)
    assert np.allclose(out[rows, 0], out[rows, first]) and np.allclose(out[rows, -1], out[rows, last])
    assert (grid[first] <= 0.50 + 1e-9).all() and (grid[last] >= 0.82 - 1e-9).all()  # crop limits
    off = smass.ModelConfig(crop_prob=0.0, curvature_jitter=0.0, bump_jitter=0.0, coverage_mask=False)
    plain = smass.augment(x, np.zeros_like(x), np.random.default_rng(0), off)
    with_mask, full = smass.augment_with_mask(x, np.zeros_like(x), np.random.default_rng(0), off)
    assert np.array_equal(plain, with_mask)
    assert (full[:, first.max() + 1:last.min()] == 1).all()


@pytest.mark.train
def test_a_coverage_mask_model_ignores_values_outside_the_coverage():
    """The coverage-mask model takes (reflectance, coverage) and whatever stands where coverage is 0
    does not change its answer: a held-flat or garbage end is not data."""
    pytest.importorskip("tensorflow", reason="the model needs the train extra (TensorFlow)")
    grid = spectra.WAVELENGTH_GRID_UM
    cfg = smass.ModelConfig(members=1, coverage_mask=True)
    _, serve = smass.build_model(cfg, len(grid))
    assert [i.name for i in serve.inputs] == [smass.INPUT_NAME, smass.COVERAGE_NAME]
    x = np.tile((1 + 0.5 * (grid - 0.55)).astype(np.float32), (2, 1))
    changed = x.copy()
    changed[:, :5] = 3.0
    cov = np.ones_like(x)
    cov[:, :5] = 0.0
    assert np.allclose(smass.predict(serve, x, cov)[0], smass.predict(serve, changed, cov)[0], atol=1e-6)
    assert not np.allclose(smass.predict(serve, x)[0], smass.predict(serve, changed)[0], atol=1e-6)


@pytest.mark.train
def test_model_sees_band_shape_apart_from_slope_and_folds_bus_classes_into_main_groups():
    """The fixed in-model maps: the continuum channel is blind to slope (a straight line gives zero),
    and the served main-group probabilities are the mean of the main head and the Bus head summed
    into main groups, so they still sum to one."""
    pytest.importorskip("tensorflow", reason="the model needs the train extra (TensorFlow)")
    import keras

    data = smass.load_smass(require_data("smass2"), limit=20)
    cfg = smass.ModelConfig(members=2, continuum=True, bus_vote=True)  # with the coverage input (the default)
    train, serve = smass.build_model(cfg, data.features.shape[1])
    grid = spectra.WAVELENGTH_GRID_UM
    line = (1.0 + 0.8 * (grid - 0.55)).astype(np.float32)[None, :]  # a pure red slope, no band
    full = np.ones_like(data.features)
    continuum = keras.Model(serve.inputs, serve.get_layer("continuum_removed").output)
    assert np.abs(continuum.predict([line, full[:1]], verbose=0)).max() < 1e-5
    residual = continuum.predict([data.features, full], verbose=0)
    assert np.abs(residual).max() > 0.05  # real spectra keep their band shape

    group, bus = serve.predict([data.features, full], verbose=0)
    members = train.predict([data.features, full], verbose=0)
    head = np.mean([members[f"group_{m}"] for m in range(cfg.members)], axis=0)
    assert group == pytest.approx((head + bus @ smass.bus_to_group_matrix()) / 2, abs=1e-5)
    assert group.sum(axis=1) == pytest.approx(1.0, abs=1e-5)
    assert smass.bus_to_group_matrix().sum(axis=1).tolist() == [1.0] * len(smass.BUS_CLASS_NAMES)


@pytest.mark.train
def test_quick_training_run_exports_checks_and_publishes(tmp_path):
    pytest.importorskip("tensorflow", reason="training needs the train extra (TensorFlow)")
    pytest.importorskip("tf2onnx", reason="training needs the train extra (tf2onnx)")
    data_dir = require_data("smass2")
    parser = argparse.ArgumentParser()
    smass.add_arguments(parser)
    registry = tmp_path / "registry"
    args = parser.parse_args(["--quick", "--data-dir", str(data_dir), "--registry", str(registry),
                              "--report", str(tmp_path / "metrics.json"), "--threads", "1",
                              "--report-dir", str(tmp_path / "report")])
    result = smass.run(args)
    assert result.status == "published" and result.report_path == tmp_path / "metrics.json"

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["onnx_vs_keras"]["argmax_agreement"] == 1.0
    assert metrics["onnx_vs_keras"]["max_abs_diff"] < 1e-4
    cv = metrics["cv"]
    assert len(cv["main_group"]["weighted_f1_per_fold"]) == 2
    assert set(cv["main_group"]["per_class"]) == set(smass.GROUP_NAMES)
    assert np.array(cv["main_group"]["confusion_matrix"]["counts"]).sum() == cv["n_spectra"]

    reg = LocalRegistry(registry, seed_from=None)
    mv = reg.load("smass", metrics["version"])
    meta = mv.metadata
    assert meta["name"] == "smass-cnn"
    assert meta["wavelength_grid_um"] == pytest.approx(spectra.WAVELENGTH_GRID_UM.tolist())
    assert meta["class_names"] == list(smass.GROUP_NAMES)
    assert meta["training_data"]["sha256"]["smass2data.tar.gz"].startswith("dacf575e")
    assert {"inputs", "outputs"} <= set(meta["io"]) and meta["io"]["inputs"][0]["shape"] == [None, 97]
    assert meta["drift_reference"]["features"] and meta["drift_reference"]["classes"]["names"]
    assert meta["seeds"]["seed"] == 0 and meta["code"]["git"]
    # The issue-13 recipe is the default: a coverage input, the temperature and border rule with their
    # provenance, and the cross-instrument check (SMASS I through the stream's reader and predictor).
    assert [i["name"] for i in meta["io"]["inputs"]] == [smass.INPUT_NAME, smass.COVERAGE_NAME]
    assert meta["coverage_name"] == smass.COVERAGE_NAME and set(meta["smoke_test"]["inputs"]) == {
        smass.INPUT_NAME, smass.COVERAGE_NAME}
    assert meta["calibration"]["temperature"] == 1.8 and "RESULTS.md" in meta["calibration"]["provenance"]
    assert meta["border_rule"]["pairs"] == [["S", "Other"], ["C", "X"]]
    s1 = meta["metrics"]["smass1"]
    assert s1["n_scored"] + s1["n_rejected"] == 99 and 0 <= s1["weighted_f1"] <= 1
    assert np.array(s1["confusion_matrix"]["counts"]).sum() == s1["n_scored"]

    # The published model serves: smoke test passes, and predictions are valid messages.
    from stream.features.spectra import spectrum_features
    from stream.models.hot_swap import smoke_test
    from stream.scoring.spectrum_predictor import predict_spectra

    model = OnnxModel(mv)
    smoke_test(model)
    archive = data_dir / "smass2data.tar.gz"
    records = [spectrum_features(raw, uri=name, file_id=f"id-{name}", detected_at_ms=0)
               for name, raw in list(smass.iter_tar_spectra(archive))[:5]]
    for pred in predict_spectra(model, records):
        schemas.validate("Prediction", pred)
        assert pred["model"] == "smass-cnn" and pred["model_version"] == mv.version
        assert 0 < pred["novelty"] <= 1  # the novelty head is trained with every model (2 folds with --quick)
    assert [o["name"] for o in meta["io"]["outputs"]][2:] == ["novelty_score"]
    assert len(meta["novelty"]["calibration_scores"]) == 2 and "novelty_score" in meta["smoke_test"]["outputs"]

    # The training report: CV confusion matrix, reliability diagram, the most confident errors' spectra,
    # the novelty findings; the same figures the web view draws from the published metadata.
    main = meta["metrics"]["cv"]["main_group"]
    assert sum(main["reliability"]["count"]) == cv["n_spectra"] and 0 <= main["ece_top_class"] <= 1
    errors = main["most_confident_errors"]
    assert errors == sorted(errors, key=lambda e: -e["confidence"]) and all(e["true"] != e["predicted"] for e in errors)
    index = (tmp_path / "report" / "index.md").read_text()
    for figure in ("confusion matrix (metrics.cv.main_group.confusion_matrix)",
                   "reliability diagram (metrics.cv.main_group.reliability)", "most confident errors",
                   "most novel spectra", "novelty: share of spectra flagged"):
        assert figure in index
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in (tmp_path / "report").glob("*.png"))
    with pytest.raises(Rejected) as info:
        predict_spectra(model, [dict(records[0], wavelength_um=records[0]["wavelength_um"][::2])])
    assert info.value.reason == "grid-mismatch"


@pytest.mark.parametrize(("flags", "why"), [
    (["--dev-split", "--bundle"], "it publishes nothing"),
    (["--with-labels", "labels.jsonl", "--bundle"], "it does not write the bundled baseline"),
])
def test_contradictory_flags_exit_2_without_training(flags, why, tmp_path, capsys):
    """`skystream train smass` refuses flags that contradict each other before loading or training anything."""
    from stream.cli.entry import main

    code = main(["train", "smass", "--data-dir", str(tmp_path / "absent"), "--report", str(tmp_path / "r.json"),
                 *flags])
    assert code == 2
    out = capsys.readouterr().out
    assert "train smass: invalid arguments: " in out and why in out
    assert not (tmp_path / "r.json").exists()


def test_cross_survey_set_reads_as_the_stream_reads_it():
    """The Mahlke et al. (2022) rows become tables the stream's reader takes: reflectance 1 at 0.55 µm,
    classes in this project's main groups (Q apart), the source of each row kept for splitting."""
    from training.smass.cross_survey import MAHLKE_TO_GROUP, iter_mahlke2022

    rows = list(iter_mahlke2022(require_data("mahlke2022/class_vis_dev.csv")))
    assert len(rows) == 718 and len({r.name for r in rows}) == 718
    assert Counter(r.group for r in rows) == {"S": 323, "X": 126, "C": 122, "Other": 113, "Q": 34}
    assert len({r.source for r in rows}) == 30
    assert set(MAHLKE_TO_GROUP.values()) - {"Q"} == set(smass.GROUP_NAMES)
    hygiea = rows[0]
    assert (hygiea.asteroid, hygiea.mahlke_class, hygiea.group) == ("10", "C", "C")
    spectrum = spectra.read_spectrum(hygiea.table, name=hygiea.name)
    assert spectrum.reflectance[spectrum.wavelength_um == 0.55] == pytest.approx(1.0)
    values, quality = spectra.resample(spectrum)
    assert np.isfinite(values).all() and 0.5 < quality["coverage_fraction"] <= 1.0


def test_bus_head_targets_without_a_bus_class_stay_in_the_main_group():
    from training.smass.fitting import _bus_targets

    group = np.array([smass.GROUP_NAMES.index(g) for g in ("C", "X", "S")])
    targets = _bus_targets(np.array([smass.BUS_CLASS_NAMES.index("Ch"), -1, -1]), group)
    assert targets[0].tolist() == np.eye(len(smass.BUS_CLASS_NAMES))[smass.BUS_CLASS_NAMES.index("Ch")].tolist()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0)
    for row, g in zip(targets[1:], ("X", "S"), strict=True):
        inside = [smass.BUS_TO_GROUP[b] == g for b in smass.BUS_CLASS_NAMES]
        assert row[inside].min() > 0 and row[~np.array(inside)].max() == 0
        assert np.ptp(row[inside]) == 0  # evenly spread
