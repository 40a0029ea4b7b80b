"""Hot swap: follow the models topic, and verify a version before serving it.

A worker switches only to a version that (1) loads with a matching sha256, (2) has the inputs the
serving code feeds, and (3) reproduces the reference outputs stored with it (``smoke_test`` in its
metadata) on the reference inputs. Anything else is refused: the old model keeps serving, and the
refusal is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

import schemas
from stream.errors import Rejected
from stream.models.registry import open_registry
from stream.runtime.metrics import MODEL_REFUSED
from stream.scoring.onnx_model import OnnxModel
from stream.settings import TOPICS, Settings

log = logging.getLogger(__name__)


def verified_model(registry_uri: str, task: str, version: str, expected_sha256: str | None = None) -> OnnxModel:
    """Load and check a version; raise Rejected(reason) when it must not serve."""
    registry = open_registry(registry_uri)
    try:
        mv = registry.load(task, version)
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected("unloadable", f"{task} v{version}: {exc}") from exc
    if expected_sha256 and mv.metadata.get("sha256") != expected_sha256:
        raise Rejected("checksum-mismatch", f"{task} v{version}: registry sha256 differs from the announcement")
    try:
        model = OnnxModel(mv)
    except Exception as exc:  # not an ONNX graph onnxruntime accepts
        raise Rejected("invalid-onnx", f"{task} v{version}: {exc}") from exc
    smoke_test(model)
    return model


def smoke_test(model: OnnxModel) -> None:
    """Run the reference inputs stored with the model and compare with its reference outputs."""
    ref = model.metadata.get("smoke_test")
    if not ref:
        raise Rejected("no-smoke-test", f"{model.task} v{model.version}: metadata has no smoke_test reference")
    inputs = {k: np.asarray(v, dtype=np.float32) for k, v in ref["inputs"].items()}
    if set(inputs) != set(model.input_names):
        raise Rejected("wrong-inputs", f"{model.task} v{model.version}: inputs {model.input_names}, "
                       f"reference has {sorted(inputs)}")
    try:
        outputs = model.run(inputs)
    except Exception as exc:  # wrong shape or dtype for the graph
        raise Rejected("smoke-test-failed", f"{model.task} v{model.version}: {exc}") from exc
    atol = float(ref.get("atol", 1e-4))
    for name, expected in ref["outputs"].items():
        got = outputs.get(name)
        if got is None or got.shape != np.asarray(expected).shape or not np.allclose(got, expected, atol=atol):
            raise Rejected("smoke-test-failed", f"{model.task} v{model.version}: output {name!r} differs "
                           "from the reference stored with the model")


async def follow(settings: Settings, scorer: Any, stop: asyncio.Event | None = None) -> None:
    """Apply every ModelUpdate announced after this worker started (each worker reads them all:
    no consumer group, since every worker must switch, not just one)."""
    from aiokafka import AIOKafkaConsumer

    from stream.runtime.kafka import bootstrap_servers, client_kwargs

    consumer = AIOKafkaConsumer(TOPICS["models"], bootstrap_servers=bootstrap_servers(settings.broker or ""),
                                group_id=None, auto_offset_reset="latest", enable_auto_commit=False,
                                **client_kwargs(settings))
    await consumer.start()
    try:
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                for m in msgs:
                    await asyncio.to_thread(apply_update, settings, scorer, m.value)
    finally:
        await consumer.stop()


def apply_update(settings: Settings, scorer: Any, raw: bytes) -> bool:
    """Verify and swap in the announced version; True when it is now serving."""
    try:
        _, upd = schemas.decode(raw, expect="ModelUpdate")
    except schemas.SchemaError as exc:
        log.error("ignoring a bad models-topic message: %s", exc)
        MODEL_REFUSED.labels(task="unknown", reason="bad-message").inc()
        return False
    task, version = upd["task"], upd["version"]
    try:
        # The announcement names its registry; a worker configured with its own registry uses that
        # one (the announcement's may be a path on another machine).
        model = verified_model(settings.registry or upd["registry"], task, version, upd["sha256"])
    except Rejected as exc:
        MODEL_REFUSED.labels(task=task, reason=exc.reason).inc()
        log.error("refused %s v%s (%s): %s; still serving the previous model", task, version, exc.reason, exc)
        return False
    scorer.swap(model)
    log.warning("now serving %s v%s (%s)", task, version, upd["action"])
    return True


def make_smoke_test(onnx: bytes, inputs: dict[str, np.ndarray], atol: float = 1e-4) -> dict[str, Any]:
    """The ``smoke_test`` metadata entry for a model: a few reference inputs and the outputs this
    ONNX file gives for them (training calls this before publishing)."""
    from stream.models.registry import ModelVersion

    model = OnnxModel(ModelVersion("smoke", "0", onnx, {}))
    outputs = model.run(inputs)
    return {"inputs": {k: np.asarray(v, dtype=np.float32).tolist() for k, v in inputs.items()},
            "outputs": {k: v.tolist() for k, v in outputs.items()}, "atol": atol}
