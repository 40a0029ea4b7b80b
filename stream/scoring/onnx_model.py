"""ONNX inference with onnxruntime: the only way the serving side runs a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from stream.models.registry import ModelVersion

__all__ = ["OnnxModel"]


class OnnxModel:
    """One loaded model version. ``run`` takes a batch and returns every output by name."""

    def __init__(self, model: ModelVersion, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        # Explicit thread counts: the default grabs every core, which fights the other workers.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.onnx, sess_options=opts, providers=["CPUExecutionProvider"])
        self.task = model.task
        self.version = model.version
        self.name = model.name
        self.metadata: dict[str, Any] = model.metadata
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on float32 copies of ``inputs``; outputs by name."""
        feed = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
        outputs = self.session.run(None, feed)
        return dict(zip(self.output_names, outputs, strict=True))
