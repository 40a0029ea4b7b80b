"""Hot swap: follow the models topic and the registry, and verify a champion before serving it.

Anyone who can write to the models topic can send an announcement, so an announcement is only a
hint: it makes a worker re-read the *registry's champion* of a known task, never load the version
it names. An announcement without a checksum, or for an unknown task, is refused. Workers also poll
the champions every ``SKYSTREAM_MODEL_POLL_SECONDS``, so a missed announcement heals by itself.

A worker switches only to a version that (1) loads with the sha256 the registry recorded for it,
(2) carries a valid HMAC when a signing key is configured (stream/models/signing.py), (3) has the
inputs the serving code feeds, and (4) reproduces the reference outputs stored with it
(``smoke_test`` in its metadata). Anything else is refused: the old model keeps serving, and the
refusal is logged and counted (``skystream_model_refused_total{task,reason}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

import schemas
from stream import kinds
from stream.errors import Rejected
from stream.models import signing
from stream.models.registry import RegistryError, open_registry
from stream.runtime.metrics import MODEL_REFUSED
from stream.scoring.onnx_model import OnnxModel
from stream.settings import TOPICS, Settings

__all__ = ["apply_update", "follow", "make_smoke_test", "refresh_champion", "smoke_test", "verified_model"]

log = logging.getLogger(__name__)


def verified_model(registry_uri: str, task: str, version: str, expected_sha256: str | None = None, *,
                   signing_key: str | None = None) -> OnnxModel:
    """Load and check a version; raise Rejected(reason) when it must not serve."""
    registry = open_registry(registry_uri)
    try:
        mv = registry.load(task, version)  # checks model.onnx against the registry's recorded sha256
    except (Rejected, RegistryError, ConnectionError):
        raise
    except Exception as exc:
        raise Rejected("unloadable", f"{task} v{version}: {exc}") from exc
    if expected_sha256 is not None and mv.metadata.get("sha256") != expected_sha256:
        raise Rejected("checksum-mismatch", f"{task} v{version}: registry sha256 differs from the one expected")
    signing.verify(mv.onnx, mv.metadata, signing_key, f"{task} v{version}")
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
    """Act on every ModelUpdate announced after this worker started (each worker reads them all: no
    consumer group, since every worker must switch, not just one), and re-read the champions every
    ``settings.model_poll_seconds`` in case an announcement was missed."""
    from aiokafka import AIOKafkaConsumer

    from stream.runtime.kafka import bootstrap_servers, client_kwargs

    consumer = AIOKafkaConsumer(TOPICS["models"], bootstrap_servers=bootstrap_servers(settings.broker or ""),
                                group_id=None, auto_offset_reset="latest", enable_auto_commit=False,
                                **client_kwargs(settings))
    refused: set[tuple[str, str]] = set()  # versions are immutable: refuse each one once, not every poll
    await consumer.start()
    next_poll = time.monotonic() + settings.model_poll_seconds
    try:
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                for m in msgs:
                    await asyncio.to_thread(apply_update, settings, scorer, m.value, refused)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + settings.model_poll_seconds
                for task in sorted({k.task for k in kinds.KINDS}):
                    await asyncio.to_thread(refresh_champion, settings, scorer, task, refused)
    finally:
        await consumer.stop()


def apply_update(settings: Settings, scorer: Any, raw: bytes, refused: set[tuple[str, str]] | None = None) -> bool:
    """Act on one models-topic message: re-read the registry's champion of its task (never the
    version it names); True when a new champion is now serving."""
    try:
        _, upd = schemas.decode(raw, expect="ModelUpdate")
    except schemas.SchemaError as exc:
        log.error("ignoring a bad models-topic message: %s", exc)
        MODEL_REFUSED.labels(task="unknown", reason="bad-message").inc()
        return False
    task = upd["task"]
    known = {k.task for k in kinds.KINDS}
    if task not in known:
        MODEL_REFUSED.labels(task="unknown", reason="unknown-task").inc()
        log.error("refused an announcement for unknown task %r (known: %s)", task[:64], sorted(known))
        return False
    if not upd["sha256"]:
        MODEL_REFUSED.labels(task=task, reason="no-checksum").inc()
        log.error("refused an announcement of %s v%s without a sha256; still serving the previous model",
                  task, upd["version"][:32])
        return False
    return refresh_champion(settings, scorer, task, refused)


def refresh_champion(settings: Settings, scorer: Any, task: str, refused: set[tuple[str, str]] | None = None) -> bool:
    """Verify and swap in the champion of ``task`` in the scorer's registry when it is not the one
    serving; True when it swapped. A champion that fails verification is refused (the old model keeps
    serving); an unreachable registry is logged and left to the next poll."""
    registry = scorer.registry  # the worker's own registry: a message may not point it elsewhere
    try:
        champion = registry.champion(task)
    except (RegistryError, ConnectionError) as exc:
        log.warning("cannot read the %s champion now: %s", task, exc)
        return False
    serving = scorer.serving(task)
    if serving is not None and serving.version == champion:
        return False
    if refused is not None and (task, champion) in refused:
        return False
    try:
        model = verified_model(registry.uri, task, champion, signing_key=settings.model_signing_key)
    except (RegistryError, ConnectionError) as exc:
        log.warning("cannot load the %s champion v%s now: %s", task, champion, exc)
        return False
    except Rejected as exc:
        MODEL_REFUSED.labels(task=task, reason=exc.reason).inc()
        log.error("refused %s v%s (%s): %s; still serving the previous model", task, champion, exc.reason, exc)
        if refused is not None:
            refused.add((task, champion))
        return False
    scorer.swap(model)
    log.warning("now serving %s v%s (the registry's champion)", task, champion)
    return True


def make_smoke_test(onnx: bytes, inputs: dict[str, np.ndarray], atol: float = 1e-4) -> dict[str, Any]:
    """The ``smoke_test`` metadata entry for a model: a few reference inputs and the outputs this
    ONNX file gives for them (training calls this before publishing)."""
    from stream.models.registry import ModelVersion

    model = OnnxModel(ModelVersion("smoke", "0", onnx, {}))
    outputs = model.run(inputs)
    return {"inputs": {k: np.asarray(v, dtype=np.float32).tolist() for k, v in inputs.items()},
            "outputs": {k: v.tolist() for k, v in outputs.items()}, "atol": atol}
