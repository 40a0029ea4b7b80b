"""The registry metadata of a trained model: data, protocol, metrics, calibration, drift references."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from stream.features import spectra
from training.smass.calibration import TEMPERATURE, TEMPERATURE_PROVENANCE, border_rule
from training.smass.data import ORIGIN, SmassData, coverage_masks, sha256_of
from training.smass.evaluation import scores
from training.smass.labels import BUS_CLASS_NAMES, BUS_TO_GROUP, GROUP_NAMES
from training.smass.model import COVERAGE_NAME, INPUT_NAME, MODEL_NAME, OUTPUT_BUS, OUTPUT_GROUP, ModelConfig


def _file_sha256(*paths: Path) -> dict[str, str]:
    """Repository-relative path -> sha256 of each file (the code a model was trained with)."""
    root = Path(__file__).resolve().parents[2]
    return {str(p.relative_to(root)): sha256_of(p) for p in paths}


def build_metadata(data: SmassData, cfg: ModelConfig, args: argparse.Namespace, onnx_bytes: bytes,
                   cv: dict | None, check: dict, train_pred: np.ndarray, seconds: float) -> dict:
    """The registry metadata of a trained model: classes, grid, I/O names, metrics, training data,
    drift reference, smoke test, seeds, config, code and library versions."""
    from stream.scoring.drift import build_reference
    from training.keras_export import code_version, library_versions, onnx_io

    io = onnx_io(onnx_bytes)
    outputs = {OUTPUT_GROUP: io["outputs"][0]["name"], OUTPUT_BUS: io["outputs"][1]["name"]}
    grid = spectra.WAVELENGTH_GRID_UM.tolist()
    records = [{"wavelength_um": grid, "reflectance": row.tolist(), "quality": q}
               for row, q in zip(data.features, data.quality, strict=True)]
    # A few real spectra (one or two per main group) with their ONNX outputs: workers re-run them
    # before serving a new version (stream/models/hot_swap.py).
    smoke_idx = np.concatenate([np.flatnonzero(data.group == i)[:2] for i in range(len(GROUP_NAMES))])
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    smoke_x = data.features[smoke_idx]
    smoke_in = {INPUT_NAME: smoke_x}
    if cfg.coverage_mask:
        smoke_in[COVERAGE_NAME] = coverage_masks(data)[smoke_idx]
    smoke_out = session.run(None, smoke_in)
    package = sorted(Path(__file__).resolve().parent.glob("*.py"))  # every step of the spectra task
    return {
        "name": MODEL_NAME,
        "description": "1D CNN ensemble: SMASSII visible reflectance spectrum (0.44-0.92 µm) -> asteroid main group "
                       "(C/S/X/Other) and Bus (1999) class",
        "kind": "spectrum",
        "class_names": list(GROUP_NAMES),
        "bus_class_names": list(BUS_CLASS_NAMES),
        "bus_to_main_group": BUS_TO_GROUP,
        "wavelength_grid_um": grid,
        "preprocessing": spectra.PREPROCESSING_VERSION,
        "input_name": INPUT_NAME,
        **({"coverage_name": COVERAGE_NAME, "min_coverage": spectra.MIN_COVERAGE_MASKED} if cfg.coverage_mask else {}),
        **({"calibration": {"temperature": TEMPERATURE, "method": "temperature scaling of the main-group "
                            "probabilities", "provenance": TEMPERATURE_PROVENANCE},
            "border_rule": border_rule(data)} if cfg.coverage_mask else {}),
        "output_names": outputs,
        "io": io,
        "metrics": {"cv": cv, "onnx_vs_keras": check,
                    "training_set": scores(data.group, train_pred.argmax(1))},
        "training_data": {
            "origin": ORIGIN,
            "sha256": data.sha256,
            "n_spectra": len(data.objects),
            "main_group_counts": {n: int(np.sum(data.group == i)) for i, n in enumerate(GROUP_NAMES)},
            "skipped": {k: len(v) for k, v in data.skipped.items()},
        },
        "drift_reference": build_reference("spectrum", records, [GROUP_NAMES[i] for i in train_pred.argmax(1)]),
        "smoke_test": {"inputs": {name: v.tolist() for name, v in smoke_in.items()},
                       "outputs": {name: out.tolist() for name, out in zip(outputs.values(), smoke_out, strict=True)},
                       "atol": 1e-4, "objects": [data.objects[i] for i in smoke_idx]},
        "seeds": {"seed": args.seed, "cv_split_seed": args.seed},
        "config": dataclasses.asdict(cfg),
        "code": {"git": code_version(), "sha256": _file_sha256(*package, Path(spectra.__file__).resolve()),
                 # Absolute paths in the arguments are this machine's, not provenance: keep their names.
                 "command": " ".join(Path(a).name if Path(a).is_absolute() else a for a in (
                     ["skystream", "train", "smass", *sys.argv[3:]]
                     if sys.argv[1:3] == ["train", "smass"] else sys.argv))},
        "libraries": library_versions(),
        "training_seconds": round(seconds, 1),
    }
