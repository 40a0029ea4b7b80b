"""The model registry, in a directory and in S3 (a real S3 server on loopback): publish, list, load
with the checksum checked, refuse corrupt files and overwrites, promote, roll back, and the
`skystream models` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from s3_fixtures import admin_client, make_bucket, moto_endpoint, s3_env  # noqa: F401 - pytest fixtures

import schemas
from stream.cli import models as models_cli
from stream.errors import Rejected
from stream.ingest import s3
from stream.models.registry import LocalRegistry, RegistryError, S3Registry, open_registry


def onnx_scaler(scale: float) -> bytes:
    """A real ONNX model, y = x * scale, so each version is told apart by what it computes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "scaler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def scale_of(registry, task: str, version: str | None = None) -> float:  # noqa: ANN001
    from stream.scoring.onnx_model import OnnxModel

    out = OnnxModel(registry.load(task, version)).run({"x": np.ones((1, 3), np.float32)})
    return float(out["y"][0, 0])


def meta(accuracy: float) -> dict:
    return {"name": "scaler", "metrics": {"accuracy": accuracy, "f1_weighted": accuracy - 0.01},
            "input_spec": {"x": [None, 3]}, "class_names": ["a", "b", "c"]}


@pytest.fixture(params=["local", "s3"])
def registry_uri(request, tmp_path: Path) -> str:
    """A fresh, empty registry URI of each kind."""
    if request.param == "local":
        return str(tmp_path / "registry")
    request.getfixturevalue("s3_env")
    bucket = request.getfixturevalue("make_bucket")("registry")
    return f"s3://{bucket}/models/prod"


def open_empty(uri: str):  # noqa: ANN201
    """The registry without the bundled baseline, so versions start at 1."""
    return S3Registry(uri, seed_from=None) if uri.startswith("s3://") else LocalRegistry(uri, seed_from=None)


def corrupt(registry, task: str, version: str) -> None:  # noqa: ANN001
    """Change a stored model.onnx behind the registry's back (a bad disk, a bad upload)."""
    if isinstance(registry, S3Registry):
        admin_client(s3.client().meta.endpoint_url).put_object(
            Bucket=registry.bucket, Key=registry._key(task, version, "model.onnx"), Body=b"not the model")
    else:
        (registry.root / task / version / "model.onnx").write_bytes(b"not the model")


def test_round_trip_publish_list_load_promote_rollback(registry_uri):
    reg = open_empty(registry_uri)
    assert reg.versions("smass") == []
    with pytest.raises(RegistryError):
        reg.load("smass")

    v1 = reg.publish("smass", onnx_scaler(1.0), meta(0.90))
    v2 = reg.publish("smass", onnx_scaler(2.0), meta(0.93))
    v3 = reg.publish("smass", onnx_scaler(3.0), meta(0.80), promote=False)
    assert (v1, v2, v3) == ("1", "2", "3")
    assert reg.versions("smass") == ["1", "2", "3"] and "smass" in reg.tasks()
    assert reg.champion("smass") == "2" and reg.history("smass") == ["1", "2"]

    m = reg.metadata("smass", "2")
    assert m["task"] == "smass" and m["version"] == "2" and m["created"] and len(m["sha256"]) == 64
    assert m["metrics"]["accuracy"] == 0.93
    loaded = reg.load("smass")
    assert loaded.version == "2" and loaded.name == "scaler"
    assert scale_of(reg, "smass") == 2.0 and scale_of(reg, "smass", "3") == 3.0

    reg.promote("smass", "3")
    assert reg.champion("smass") == "3" and scale_of(reg, "smass") == 3.0
    assert reg.rollback("smass") == "2" and reg.champion("smass") == "2"
    assert reg.rollback("smass") == "1"
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback("smass")
    with pytest.raises(RegistryError, match="no version 9"):
        reg.promote("smass", "9")

    # Another process sees the same registry through open_registry.
    other = open_registry(registry_uri)
    assert other.champion("smass") == "1" and other.versions("smass") == ["1", "2", "3"]


def test_a_corrupt_model_file_is_refused(registry_uri):
    reg = open_empty(registry_uri)
    reg.publish("tess", onnx_scaler(1.0), meta(0.9))
    reg.publish("tess", onnx_scaler(2.0), meta(0.9))
    corrupt(reg, "tess", "2")
    with pytest.raises(Rejected) as info:
        reg.load("tess")
    assert info.value.reason == "checksum-mismatch"
    assert scale_of(reg, "tess", "1") == 1.0  # the others still load


def test_s3_versions_are_never_overwritten(s3_env, make_bucket):  # noqa: F811
    uri = f"s3://{make_bucket('registry')}/reg"
    first, stale = S3Registry(uri, seed_from=None), S3Registry(uri, seed_from=None)
    assert first.publish("smass", onnx_scaler(1.0), meta(0.9)) == "1"

    # A publisher with an out-of-date view picks version 1 too: S3 refuses the write, it takes 2.
    stale._listing = lambda task: ([], 0)  # type: ignore[method-assign]
    assert stale.publish("smass", onnx_scaler(5.0), meta(0.5), promote=False) == "2"
    assert scale_of(first, "smass", "1") == 1.0 and scale_of(first, "smass", "2") == 5.0

    with pytest.raises(s3.S3Conflict):
        s3.put_bytes(f"{uri}/smass/1/model.onnx", b"x", s3=s3.client(), create_only=True)

    # A publisher that died after model.onnx left an incomplete version: not listed, never reused.
    admin_client(s3_env).put_object(Bucket=first.bucket, Key="reg/smass/3/model.onnx", Body=b"half")
    assert first.versions("smass") == ["1", "2"]
    assert first.publish("smass", onnx_scaler(4.0), meta(0.9)) == "4"
    assert first.versions("smass") == ["1", "2", "4"] and scale_of(first, "smass") == 4.0


def test_s3_registry_is_seeded_from_a_baseline_directory(s3_env, make_bucket, tmp_path):  # noqa: F811
    baseline = LocalRegistry(tmp_path / "baseline", seed_from=None)
    baseline.publish("smass", onnx_scaler(1.0), meta(0.9))
    baseline.publish("smass", onnx_scaler(7.0), meta(0.95))
    reg = S3Registry(f"s3://{make_bucket('registry')}/reg", seed_from=baseline.root)
    assert reg.tasks() == ["smass"]
    assert reg.versions("smass") == ["1", "2"] and reg.champion("smass") == "2"
    assert scale_of(reg, "smass") == 7.0
    assert reg.publish("smass", onnx_scaler(8.0), meta(0.96)) == "3"


def test_public_s3_registry_loads_unsigned(s3_env, make_bucket, monkeypatch):  # noqa: F811
    bucket = make_bucket("registry")
    S3Registry(f"s3://{bucket}/reg", seed_from=None).publish("tess", onnx_scaler(3.0), meta(0.9))
    admin_client(s3_env).put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))  # fmt: skip
    monkeypatch.setenv(s3.ENV_UNSIGNED, "1")
    s3.reset_clients()
    assert scale_of(open_registry(f"s3://{bucket}/reg"), "tess") == 3.0


# -- skystream models ----------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:  # noqa: ANN001
    from stream.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def champion_row(out: str, task: str) -> list[str]:
    rows = [line.split() for line in out.splitlines() if line.startswith(task + " ")]
    return [r[1] for r in rows if len(r) > 3 and r[3] == "*"]


def test_models_commands(registry_uri, capsys, monkeypatch):
    announced: list[dict] = []
    monkeypatch.setattr(models_cli, "announce", lambda settings, record: announced.append(record) or False)
    reg = open_empty(registry_uri)
    reg.publish("smass", onnx_scaler(1.0), meta(0.90))
    reg.publish("smass", onnx_scaler(2.0), meta(0.93))
    reg.publish("tess", onnx_scaler(1.0), meta(0.97))
    monkeypatch.setenv("SKYSTREAM_REGISTRY", registry_uri)  # the default registry

    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0 and f"registry: {reg.uri}" in out
    assert champion_row(out, "smass") == ["2"] and champion_row(out, "tess") == ["1"]
    assert "f1_weighted=0.92 accuracy=0.93" in out  # the headline metric first
    header = next(line for line in out.splitlines() if line.startswith("TASK"))
    assert header.split() == ["TASK", "VERSION", "CREATED", "CHAMPION", "KEY", "METRICS"]

    code, out, _ = run_cli(capsys, "models", "show", "smass", "1", "--registry", registry_uri)
    assert code == 0 and "smass v1  (champion is v2)" in out and "accuracy" in out and "sha256" in out
    code, out, _ = run_cli(capsys, "models", "show", "smass", "--json")
    assert json.loads(out)["version"] == "2"

    code, out, _ = run_cli(capsys, "models", "promote", "smass", "1")
    assert code == 0 and "smass: champion is now v1 (was v2)" in out
    assert reg.champion("smass") == "1"
    code, out, _ = run_cli(capsys, "models", "rollback", "smass")
    assert code == 0 and "champion is now v2 (was v1)" in out and reg.champion("smass") == "2"
    assert [(r["action"], r["task"], r["version"]) for r in announced] == [("promote", "smass", "1"),
                                                                           ("rollback", "smass", "2")]
    for record in announced:
        schemas.validate("ModelUpdate", record)
        assert record["registry"] == reg.uri and record["sha256"] == reg.metadata("smass", record["version"])["sha256"]
        assert schemas.decode(schemas.encode("ModelUpdate", record))[1] == record

    # Refusals: a corrupt version is not promoted, an unknown one neither; nothing is announced.
    reg.publish("smass", onnx_scaler(3.0), meta(0.99), promote=False)
    corrupt(reg, "smass", "3")
    code, _, err = run_cli(capsys, "models", "promote", "smass", "3")
    assert code == 2 and "does not match its sha256" in err and reg.champion("smass") == "2"
    code, _, err = run_cli(capsys, "models", "promote", "smass", "42")
    assert code == 2 and "version 42 is not in registry" in err
    code, _, err = run_cli(capsys, "models", "rollback", "tess")
    assert code == 2 and "no earlier champion" in err
    assert len(announced) == 2


def test_announce_is_a_no_op_without_a_broker(monkeypatch):
    from stream.settings import Settings

    monkeypatch.delenv("SKYSTREAM_BROKER", raising=False)
    record = {"task": "smass", "version": "1", "action": "promote", "registry": "r", "sha256": "0" * 64, "at_ms": 1}
    from stream.models.announce import announce

    assert announce(Settings(), record) is False


# A POSIX absolute or home-relative path with at least one directory: "/srv/x", "~/data/y", "--out=/tmp/z".
ABSOLUTE_PATH = re.compile(r"(?:^|[\s=(])~?/[\w.-]+/")


def _strings(node) -> list[str]:  # noqa: ANN001
    """Every string value (not key) in a JSON document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def test_bundled_metadata_records_provenance_not_machine_paths():
    """Shipped model metadata names its data by origin, file names and hashes: a path of the machine
    that trained it (/work, /root, /tmp, a home directory) means nothing to whoever installs the model."""
    from stream.models.registry import BUNDLED

    files = sorted(Path(BUNDLED).glob("*/*/metadata.json"))
    assert {f.parts[-3] for f in files} >= {"smass", "tess"}
    for f in files:
        meta = json.loads(f.read_text())
        absolute = [s for s in _strings(meta) if ABSOLUTE_PATH.search(s)]
        assert not absolute, f"{f}: absolute paths {absolute}"
        data = meta.get("training_data") or meta.get("data")
        assert data["origin"] and data["sha256"], f"{f}: no data origin or hash"
