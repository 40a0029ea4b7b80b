"""Shared training helpers: reproducible TensorFlow, ONNX export with tf2onnx, ONNX-vs-Keras check, publish.

Task-agnostic (used by the smass and tess trainers). TensorFlow is imported inside the functions so
importing this module stays cheap.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.models.registry import LocalRegistry, open_registry

__all__ = [
    "code_version",
    "compare_onnx_keras",
    "configure_tensorflow",
    "export_onnx",
    "library_versions",
    "merge_outputs",
    "onnx_io",
    "publish",
]

OPSET = 17
REPO_ROOT = Path(__file__).resolve().parents[1]


def configure_tensorflow(seed: int, threads: int = 2) -> None:
    """Fresh Keras state, seeds (Python, numpy, TF), deterministic ops, and a thread budget.

    Call before building each model. Thread counts can only be set before TensorFlow starts its
    runtime; later calls in the same process keep the first counts.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the first TensorFlow import
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # runtime already initialised (tests, or a second model in one process)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def export_onnx(model: Any, input_shapes: Mapping[str, Sequence[int | None]], opset: int = OPSET) -> bytes:
    """A functional Keras model → ONNX bytes via ``tf2onnx.convert.from_keras``.

    ``input_shapes`` maps each model input (in order) to its shape with ``None`` for the batch axis;
    the names become the ONNX input names.
    """
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec(tuple(shape), tf.float32, name=name) for name, shape in input_shapes.items()]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return proto.SerializeToString()


def onnx_io(onnx_bytes: bytes) -> dict[str, Any]:
    """Input and output names and shapes of an ONNX model (None for symbolic axes), for metadata."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def describe(args: Sequence[Any]) -> list[dict[str, Any]]:
        """Name and shape (None for unknown dimensions) of each tensor spec."""
        return [{"name": a.name, "shape": [d if isinstance(d, int) else None for d in a.shape]} for a in args]

    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


def merge_outputs(base: bytes, head: bytes, prefix: str = "head/") -> bytes:
    """One ONNX graph computing ``base``'s outputs and ``head``'s, from the same named inputs.

    ``head``'s inputs must be a subset of ``base``'s (same names, e.g. the spectrum and its coverage) and
    its output names new; its internal names are prefixed so the two graphs cannot collide. Used to serve
    a second model beside the first as one file (one version, one checksum, one session).
    """
    import onnx
    from onnx import compose, helper

    b, h = onnx.load_from_string(base), onnx.load_from_string(head)
    base_inputs = {i.name for i in b.graph.input}
    missing = [i.name for i in h.graph.input if i.name not in base_inputs]
    clash = {o.name for o in h.graph.output} & {o.name for o in b.graph.output}
    if missing or clash:
        raise ValueError(f"cannot merge: head inputs {missing} not in the base model, outputs {sorted(clash)} in both")
    h = compose.add_prefix(h, prefix, rename_inputs=False, rename_outputs=False)
    g = helper.make_graph(
        list(b.graph.node) + list(h.graph.node), b.graph.name, list(b.graph.input),
        list(b.graph.output) + list(h.graph.output),
        initializer=list(b.graph.initializer) + list(h.graph.initializer),
        value_info=list(b.graph.value_info) + list(h.graph.value_info))
    opsets: dict[str, int] = {}
    for o in list(b.opset_import) + list(h.opset_import):
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    merged = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                               producer_name=b.producer_name, producer_version=b.producer_version)
    merged.ir_version = max(b.ir_version, h.ir_version)
    onnx.checker.check_model(merged)
    return merged.SerializeToString()


def compare_onnx_keras(
    model: Any, onnx_bytes: bytes, inputs: Mapping[str, np.ndarray], batch_size: int = 256
) -> dict[str, Any]:
    """Run Keras and onnxruntime on the same inputs; max |difference| and argmax agreement per output.

    Keras outputs are matched to ONNX outputs by position (tf2onnx keeps the model's output order).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {name: np.asarray(x, dtype=np.float32) for name, x in inputs.items()}
    onnx_out = session.run(None, feed)
    ordered = [feed[i.name] for i in session.get_inputs()]
    keras_in = ordered[0] if len(ordered) == 1 else ordered
    keras_out = model.predict(keras_in, batch_size=batch_size, verbose=0)
    if isinstance(keras_out, dict):
        keras_out = list(keras_out.values())
    elif not isinstance(keras_out, list | tuple):
        keras_out = [keras_out]
    per_output = {}
    for meta, k, o in zip(session.get_outputs(), keras_out, onnx_out, strict=True):
        k, o = np.asarray(k), np.asarray(o)
        entry: dict[str, Any] = {"max_abs_diff": float(np.max(np.abs(k - o)))}
        if k.ndim == 2 and k.shape[1] > 1:
            entry["argmax_agreement"] = float(np.mean(np.argmax(k, axis=1) == np.argmax(o, axis=1)))
        per_output[meta.name] = entry
    return {
        "n_samples": int(len(next(iter(feed.values())))),
        "max_abs_diff": max(e["max_abs_diff"] for e in per_output.values()),
        "argmax_agreement": min((e["argmax_agreement"] for e in per_output.values() if "argmax_agreement" in e),
                                default=1.0),
        "per_output": per_output,
    }


def code_version() -> str:
    """The git commit of the code that trained (with ``-dirty`` when the tree has local changes)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # The bundled registry is data a --bundle run is rewriting, not code: it does not make the tree dirty.
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!stream/bundled"], cwd=REPO_ROOT,
            capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of TensorFlow, tf2onnx, ONNX and onnxruntime, recorded with a model."""
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "tensorflow": tf.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def publish(registry: str | os.PathLike[str], task: str, onnx_bytes: bytes, metadata: Mapping[str, Any],
            *, bundled: bool = False, promote: bool = True) -> tuple[str, str]:
    """Publish to a registry; return (registry uri, version).

    ``bundled`` writes into a plain directory with no seeding (the baseline shipped in
    stream/bundled/registry) as the task's next version: earlier shipped versions stay, so an installed
    model's version keeps meaning the same file, and the champion history shows what replaced what.
    """
    meta = dict(metadata)
    if bundled:
        reg = LocalRegistry(Path(registry), seed_from=None)
    else:
        reg = open_registry(str(registry))
    version = reg.publish(task, onnx_bytes, meta, promote=promote)
    return reg.uri, version
