"""The novelty head (issue 17 item 3): conformal p-values, the shipped head on real spectra from three
surveys, the novel-spectrum alert, and `skystream train smass-novelty` end to end (quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from data_paths import require_data

import schemas
from stream.features import spectra
from stream.scoring.novelty import conformal_p_values

REPO = Path(__file__).resolve().parents[1]


def test_p_value_is_the_share_of_calibration_scores_at_least_as_high():
    calibration = [np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.5])]
    # scores per fold: (2.0, 2.5): at least as high are 2, 3 and 2.5 -> (1 + 3) / (1 + 5)
    assert conformal_p_values(np.array([[2.0, 2.5]]), calibration)[0] == pytest.approx(4 / 6)
    assert conformal_p_values(np.array([[9.0, 9.0]]), calibration)[0] == pytest.approx(1 / 6)  # beyond all
    assert conformal_p_values(np.array([[0.0, 0.0]]), calibration)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 calibration folds"):
        conformal_p_values(np.array([[1.0, 1.0, 1.0]]), calibration)


def test_alpha_is_the_false_alarm_rate_for_exchangeable_scores():
    """Scores of new spectra drawn like the calibration scores: p < α for about a fraction α (the
    property that makes α a false-alarm rate); a shifted population is flagged far more often."""
    rng = np.random.default_rng(0)
    calibration = [np.sort(rng.gamma(2.0, 1.0, 270)) for _ in range(5)]
    new = rng.gamma(2.0, 1.0, (20_000, 1)) + np.zeros((1, 5))
    p = conformal_p_values(new, calibration)
    for alpha in (0.01, 0.05, 0.2):
        assert abs(np.mean(p < alpha) - alpha) < 0.25 * alpha
    assert np.mean(conformal_p_values(new + 4.0, calibration) < 0.01) > 0.2  # 20 × the false-alarm rate


@pytest.fixture(scope="module")
def champion():
    from stream.models.registry import BUNDLED, LocalRegistry
    from stream.scoring.onnx_model import OnnxModel

    return OnnxModel(LocalRegistry(BUNDLED, seed_from=None).load("smass"))


def test_shipped_head_leaves_the_classifier_untouched(champion):
    """The champion is v2's classifier graph plus the head: the same class outputs bit for bit."""
    from stream.models.registry import BUNDLED, LocalRegistry
    from training.smass.data import coverage_masks, load_smass

    base_version = champion.metadata["based_on"]["version"]
    base = ort.InferenceSession(LocalRegistry(BUNDLED, seed_from=None).load("smass", base_version).onnx)
    data = load_smass(require_data("smass2"), limit=200)
    feed = {"reflectance": data.features, "coverage": coverage_masks(data)}
    new = champion.run(feed)
    for out, old in zip(champion.output_names, base.run(None, feed), strict=False):
        np.testing.assert_array_equal(new[out], old)
    assert champion.output_names[-1] == "novelty_score" and new["novelty_score"].shape == (len(data.features), 5)


def _score(model, name: str, data: bytes) -> dict:
    from stream.scoring.spectrum_predictor import predict_spectra

    record = spectra.spectrum_features(data, uri=name, file_id=name, detected_at_ms=0)
    [prediction] = predict_spectra(model, [record])
    schemas.validate("Prediction", prediction)
    return prediction


def test_shipped_head_flags_a_rare_shape_not_an_instrument(champion):
    """SMASS I, another instrument: the V-type (2442) with its deep 0.9 µm band is novel at α = 0.01
    and raises a novel-spectrum alert; the S-types (3) Juno and (6) Hebe and the C-type (10) Hygiea are
    not. The shares flagged across the cross-survey set are recorded in the model's metadata."""
    from stream.alerts.policy import alerts_for
    from stream.settings import Settings
    from training.smass.cross_survey import iter_smass1

    files = dict(iter_smass1(require_data("smass1/smass1data.tar.gz")))
    vesta_like = _score(champion, "smass1/a002442.[1]", files["a002442.[1]"])
    assert vesta_like["novelty"] < 0.01
    [alert] = [a for a in alerts_for(vesta_like, Settings(alert_novelty_alpha=0.01)) if a["reason"] == "novel-spectrum"]
    assert alert["score"] == pytest.approx(1 - vesta_like["novelty"]) and alert["novelty"] == vesta_like["novelty"]
    schemas.validate("Alert", alert)
    for name in ("a000003.[1]", "a000006.[1]", "a000010.[1]"):
        ordinary = _score(champion, f"smass1/{name}", files[name])
        assert ordinary["novelty"] > 0.05, name
        assert not [a for a in alerts_for(ordinary, Settings()) if a["reason"] == "novel-spectrum"]
    findings = champion.metadata["novelty"]["findings"]
    assert findings["smassii_holdout"]["alpha_0.01"] < 0.03  # α holds on SMASSII spectra it never saw
    assert findings["mahlke2022"]["alpha_0.01"] < 0.06  # other instruments are not flooded


def test_novel_spectrum_alert_follows_alpha_and_keeps_its_own_id():
    from stream.alerts.policy import alert_id_for, alerts_for
    from stream.settings import Settings

    prediction = {"prediction_id": "p" * 64, "file_id": "f", "kind": "spectrum", "object": "2442",
                  "source": "/data/a002442.[1]", "model": "smass-cnn", "model_version": "3",
                  "main_group": "Other", "probabilities": {"C": 0.0, "S": 0.05, "X": 0.0, "Other": 0.95},
                  "bus_class": "V", "bus_probability": 0.9, "novelty": 0.004}
    reasons = {a["reason"]: a["alert_id"] for a in alerts_for(prediction, Settings(alert_rare_threshold=0.8))}
    assert reasons == {"rare-composition": alert_id_for("p" * 64, "rare-composition"),
                       "novel-spectrum": alert_id_for("p" * 64, "novel-spectrum")}
    assert [a["reason"] for a in alerts_for(prediction, Settings(alert_rare_threshold=0.99,
                                                                 alert_novelty_alpha=0.001))] == []
    assert alerts_for(dict(prediction, novelty=None, main_group="S"), Settings()) == []  # a model without a head


def test_merging_refuses_graphs_that_do_not_fit():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from training.keras_export import merge_outputs

    def model(inp: str, out: str) -> bytes:
        node = helper.make_node("Identity", [inp], [out])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [None, 2])],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, 2])])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8  # what tf2onnx writes; this onnx's default is newer than onnxruntime reads
        return proto.SerializeToString()

    merged = ort.InferenceSession(merge_outputs(model("x", "a"), model("x", "b")))
    assert [o.name for o in merged.get_outputs()] == ["a", "b"]
    np.testing.assert_array_equal(merged.run(["b"], {"x": np.ones((1, 2), np.float32)})[0], np.ones((1, 2)))
    with pytest.raises(ValueError, match="not in the base model"):
        merge_outputs(model("x", "a"), model("y", "b"))
    with pytest.raises(ValueError, match="in both"):
        merge_outputs(model("x", "a"), model("x", "a"))


def test_train_smass_novelty_quick_publishes_a_version_that_serves(tmp_path):
    """`skystream train smass-novelty --quick --slope-feature`: v2 + a 2-fold head (its mixture also reading
    the continuum slope; train smass's quick test covers the default head) published as v4 of a fresh
    registry (its bundled versions 1-3 are seeded), its smoke test passes, its report is written, and a
    second head on top of it is refused."""
    pytest.importorskip("tensorflow", reason="training needs the train extra (TensorFlow)")
    from stream.models.hot_swap import smoke_test
    from stream.models.registry import LocalRegistry
    from stream.scoring.onnx_model import OnnxModel

    registry, report = tmp_path / "registry", tmp_path / "report"
    cmd = [sys.executable, "-m", "stream.cli", "train", "smass-novelty", "--quick", "--base", "2", "--threads", "1",
           "--slope-feature", "--registry", str(registry), "--report-dir", str(report), "--no-holdout-check"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "smass v4 = v2 + novelty head" in run.stdout
    model = OnnxModel(LocalRegistry(registry, seed_from=None).load("smass", "4"))
    smoke_test(model)
    assert model.metadata["based_on"]["version"] == "2" and len(model.metadata["novelty"]["calibration_scores"]) == 2
    assert model.metadata["novelty"]["config"]["slope_feature"] and "--slope-feature" in model.metadata["code"][
        "novelty_command"]
    found = json.loads((report / "report.json").read_text())["novelty"]
    assert found["smass1"]["n"] > 300 and set(found["mahlke2022"]["per_source"]) >= {"6", "40", "76"}
    index = (report / "index.md").read_text()
    assert (report / "most-novel.png").read_bytes()[:4] == b"\x89PNG" and "most-novel.png" in index
    # The classifier on the cross-survey set, per source with its reliability diagram (issue 17 item 2's figures).
    mahlke = model.metadata["metrics"]["mahlke2022"]
    assert mahlke["n_scored"] + mahlke["n_rejected"] == 684 and set(mahlke["per_source"]) >= {"76", "40", "6", "61"}
    assert sum(mahlke["per_source"]["76"]["reliability"]["count"]) == mahlke["per_source"]["76"]["n_scored"]
    assert "reliability diagram (metrics.mahlke2022.per_source.61.reliability)" in index
    again = subprocess.run([*cmd[:-5], "--base", "4", "--registry", str(registry)], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 2 and "already has a novelty head" in again.stdout


def test_models_show_lists_the_novelty_findings_and_figures():
    """`skystream models show smass` on the shipped registry: the figures the web view draws (novelty
    among them) and the headline shares as metrics."""
    from stream.models.registry import BUNDLED

    out = subprocess.run([sys.executable, "-m", "stream.cli", "models", "show", "smass", "--registry", str(BUNDLED)],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout
    figures = out.split("figures:\n", 1)[1].split("metrics:", 1)[0]
    assert "novelty: share of spectra flagged" in figures and "confusion matrix (metrics.cv" in figures
    shares = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()
              if line.strip().startswith("novelty.")}
    assert shares["novelty.smassii_holdout.alpha_0.01"] < 0.03 and shares["novelty.mahlke2022.alpha_0.01"] < 0.06
