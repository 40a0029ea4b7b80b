"""The promotion gate (training/gate.py) on tiny real ONNX models: a worse candidate is refused, a
better one accepted, with both models' numbers in the decision table and in the published metadata."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.models.registry import open_registry
from training import gate as g

onnx = pytest.importorskip("onnx", reason="the gate tests build ONNX models with the onnx package (train extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TASK = "toy"
CENTRES = np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([90, 210, 330])]) * 2.0  # 3 classes in 2-D


def softmax_model(rotation_deg: float, input_name: str = "x") -> bytes:
    """x (N, 2) -> probabilities (N, 3) = softmax(x @ W): nearest-centre classification with the
    class centres rotated by ``rotation_deg`` (0 = the true centres; more = a worse model)."""
    a = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    w = (CENTRES @ rot.T).T.astype(np.float32)  # (2, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "toy_classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime 1.31 and tf2onnx's opset 17 exports use
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(42)
    y = rng.integers(0, 3, 600)
    x = (CENTRES[y] + rng.normal(0, 1.0, (600, 2))).astype(np.float32)
    return x, y, [f"object-{i}" for i in range(600)]


@pytest.fixture(scope="module")
def eval_set(data: tuple[np.ndarray, np.ndarray, list[str]]) -> g.EvalSet:
    x, y, ids = data
    es, train_mask = g.make_eval_set({"x": x}, y, ids, fraction=0.25, name="toy held-out 25 %")
    assert len(es) + train_mask.sum() == 600 and 120 < len(es) < 180
    return es


@pytest.fixture()
def registry(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("SKYSTREAM_BROKER", raising=False)  # nothing to announce to
    uri = str(tmp_path / "registry")
    open_registry(uri).publish(TASK, softmax_model(35.0), {"name": "toy", "note": "champion"})
    return uri


METRICS = g.argmax_metrics("probabilities")


def test_worse_candidate_refused_better_accepted(registry: str, eval_set: g.EvalSet) -> None:
    champion_metrics = METRICS(g.evaluate_onnx(softmax_model(35.0), eval_set.inputs), eval_set.labels)

    worse = g.gate(registry, TASK, softmax_model(60.0), eval_set, METRICS, "weighted_f1")
    print(worse.table())
    assert not worse.accepted and worse.champion_version == "1"
    assert worse.champion == pytest.approx(champion_metrics["weighted_f1"])
    assert worse.candidate < worse.champion and worse.delta == pytest.approx(worse.candidate - worse.champion)
    table = worse.table()
    assert f"{worse.champion:.4f}" in table and f"{worse.candidate:.4f}" in table and f"{worse.delta:+.4f}" in table
    assert "REFUSED" in table and "champion v1" in table and eval_set.sha256[:12] in table

    better = g.gate(registry, TASK, softmax_model(0.0), eval_set, METRICS, "weighted_f1", bootstrap=50)
    print(better.table())
    assert better.accepted and better.delta > 0
    assert better.champion == pytest.approx(worse.champion)  # the same champion on the same set
    lo, hi = better.delta_interval
    assert lo <= better.delta <= hi
    assert "ACCEPTED" in better.table() and "accuracy" in better.table() and "bootstrap" in better.table()


def test_no_champion_is_accepted_and_says_so(tmp_path, eval_set: g.EvalSet) -> None:
    decision = g.gate(str(tmp_path / "empty"), TASK, softmax_model(60.0), eval_set, METRICS, "weighted_f1")
    assert decision.accepted and decision.champion is None and decision.champion_version is None
    assert "no champion" in decision.reason and "no champion" in decision.table()


def test_champion_that_cannot_be_scored_refuses(tmp_path, eval_set: g.EvalSet) -> None:
    uri = str(tmp_path / "registry")
    open_registry(uri).publish(TASK, softmax_model(0.0, input_name="features"), {"name": "toy"})
    decision = g.gate(uri, TASK, softmax_model(0.0), eval_set, METRICS, "weighted_f1")
    assert not decision.accepted and "could not be scored" in decision.reason
    assert "REFUSED" in decision.table() and "champion v1" in decision.table()

    broken = g.gate(uri, TASK, b"not an onnx model", eval_set, METRICS, "weighted_f1")
    assert not broken.accepted and "candidate could not be scored" in broken.reason
    assert "REFUSED" in broken.table() and g.gate_metadata(broken)["candidate"] is None  # NaN is not JSON


def test_rule() -> None:
    assert g.compare({"f1": 0.90}, {"f1": 0.90}, "f1").accepted  # a tie is not worse
    assert not g.compare({"f1": 0.899}, {"f1": 0.90}, "f1").accepted
    assert g.compare({"f1": 0.896}, {"f1": 0.90}, "f1", tolerance=0.005).accepted
    assert not g.compare({"f1": 0.894}, {"f1": 0.90}, "f1", tolerance=0.005).accepted
    lower = g.compare({"loss": 0.30}, {"loss": 0.25}, "loss", higher_is_better=False)
    assert not lower.accepted and lower.delta == pytest.approx(-0.05)
    assert g.compare({"loss": 0.20}, {"loss": 0.25}, "loss", higher_is_better=False).accepted
    assert not g.compare({"f1": math.nan}, {"f1": 0.5}, "f1").accepted
    assert g.compare({"f1": 0.1}, None, "f1").accepted
    with pytest.raises(ValueError, match="tolerance"):
        g.compare({"f1": 0.9}, {"f1": 0.9}, "f1", tolerance=-0.1)
    with pytest.raises(ValueError, match="primary metric 'auc'"):
        g.compare({"f1": 0.9}, {"f1": 0.9}, "auc")


def test_publish_gated_stores_the_gate(registry: str, eval_set: g.EvalSet) -> None:
    reg = open_registry(registry)
    refused = g.gate(registry, TASK, softmax_model(60.0), eval_set, METRICS, "weighted_f1")
    assert g.publish_gated(registry, TASK, softmax_model(60.0), {"name": "toy"}, refused) is None
    assert reg.versions(TASK) == ["1"]
    kept = g.publish_gated(registry, TASK, softmax_model(60.0), {"name": "toy"}, refused, keep_refused=True)
    assert kept == "2" and reg.champion(TASK) == "1"  # stored for inspection, not served
    assert reg.metadata(TASK, "2")["gate"]["accepted"] is False

    accepted = g.gate(registry, TASK, softmax_model(0.0), eval_set, METRICS, "weighted_f1")
    assert accepted.warnings and "does not declare" in accepted.warnings[0]  # v1 predates the split
    version = g.publish_gated(registry, TASK, softmax_model(0.0), {"name": "toy"}, accepted)
    assert version == "3" and reg.champion(TASK) == "3"
    stored = reg.metadata(TASK, "3")["gate"]
    assert stored["accepted"] and stored["champion_version"] == "1" and stored["primary"] == "weighted_f1"
    assert stored["candidate"] == pytest.approx(accepted.candidate)
    assert stored["champion"] == pytest.approx(accepted.champion)
    assert stored["improvement"] == pytest.approx(accepted.delta)
    assert stored["eval_set"]["sha256"] == eval_set.sha256 and stored["eval_set"]["n"] == len(eval_set)
    assert stored["eval_set"]["split"]["fraction"] == 0.25

    # v3 declares the split: the next gate compares without the warning; a tie is accepted.
    again = g.gate(registry, TASK, softmax_model(0.0), eval_set, METRICS, "weighted_f1")
    assert again.accepted and again.delta == 0 and not again.warnings

    # The champion moved while a gate was running: publish, but do not promote.
    reg.promote(TASK, "1")
    assert g.publish_gated(registry, TASK, softmax_model(0.0), {"name": "toy"}, again) == "4"
    assert reg.champion(TASK) == "1" and "champion changed" in reg.metadata(TASK, "4")["gate"]["warnings"][-1]


def test_holdout_split_and_eval_hash(data: tuple[np.ndarray, np.ndarray, list[str]], eval_set: g.EvalSet) -> None:
    x, y, ids = data
    many = [f"tic-{i}" for i in range(20_000)]
    held = g.holdout_mask(many, 0.2)
    assert abs(held.mean() - 0.2) < 0.01
    # Membership depends on the id only: not on the order, nor on other rows joining.
    order = np.random.default_rng(0).permutation(len(many))
    assert np.array_equal(g.holdout_mask([many[i] for i in order], 0.2), held[order])
    assert np.array_equal(g.holdout_mask(many[:500], 0.2), held[:500])
    assert not np.array_equal(g.holdout_mask(many, 0.2, salt="other"), held)

    same, _ = g.make_eval_set({"x": x}, y, ids, fraction=0.25, name="toy held-out 25 %")
    assert same.sha256 == eval_set.sha256
    relabelled = y.copy()
    relabelled[np.flatnonzero(g.holdout_mask(ids, 0.25))[0]] += 1
    assert g.make_eval_set({"x": x}, relabelled, ids, fraction=0.25)[0].sha256 != eval_set.sha256
