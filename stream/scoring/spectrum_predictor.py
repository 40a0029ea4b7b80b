"""SpectrumFeatures → Prediction with the SMASS ONNX model (main group and Bus class).

The model's metadata says what it expects (written by training/smass/metadata.py): ``wavelength_grid_um``,
``input_name``, ``output_names`` {"main_group", "bus_class"}, ``class_names``, ``bus_class_names``;
optionally ``coverage_name`` (a second input: 1 where the grid point lies inside the data), ``calibration``
and ``border_rule`` (stream/scoring/calibration.py), ``bus_to_main_group``, and ``novelty`` (a novelty
head's calibration: the prediction's ``novelty`` is then a conformal p-value, stream/scoring/novelty.py;
null for a model without one).

Coverage: the features are computed for every model with ``MIN_COVERAGE_MASKED`` (stream.features.spectra).
A model with a coverage input is fed ``coverage_mask(record["quality"])`` and scores such spectra; a model
without one never learnt that held-flat ends are not data, so it keeps the old rule and rejects a record
covering less than ``MIN_COVERAGE`` (``insufficient-coverage``), exactly as before.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from stream.errors import Rejected
from stream.features.spectra import MIN_COVERAGE, asteroid_id, coverage_mask
from stream.scoring.calibration import border_flag, temper
from stream.scoring.novelty import OUTPUT_NAME as NOVELTY_OUTPUT
from stream.scoring.novelty import conformal_p_values, novelty_calibration
from stream.scoring.onnx_model import OnnxModel

__all__ = ["coverage_input", "predict_spectra", "prediction_id"]

GRID_ATOL_UM = 1e-6  # the features travel as Avro floats (float32): compare grids to that precision


def prediction_id(file_id: str, model_name: str, model_version: str) -> str:
    """The same file scored by the same model version always gets the same id (replays are idempotent)."""
    return hashlib.sha256(f"{file_id}:{model_name}:{model_version}".encode()).hexdigest()


def _check_grid(record: dict[str, Any], grid: np.ndarray, model: OnnxModel) -> None:
    wl = np.asarray(record["wavelength_um"], dtype=np.float64)
    if wl.shape != grid.shape or not np.allclose(wl, grid, rtol=0.0, atol=GRID_ATOL_UM):
        raise Rejected(
            "grid-mismatch",
            f"{record.get('uri', '?')}: features on a {len(wl)}-point grid "
            f"{wl[:1].round(4).tolist()}…{wl[-1:].round(4).tolist()} µm, but {model.name} v{model.version} "
            f"expects {len(grid)} points {grid[0]:.4f}…{grid[-1]:.4f} µm (preprocessing "
            f"{record.get('preprocessing', '?')!r} vs {model.metadata.get('preprocessing', '?')!r})",
        )


def _check_grids(features: list[dict[str, Any]], grid: np.ndarray, model: OnnxModel) -> None:
    """``_check_grid`` for a batch: one comparison when every record is on the grid (the usual case),
    else record by record, so the first mismatch raises its own message."""
    try:
        wl = np.asarray([record["wavelength_um"] for record in features], dtype=np.float64)
        if wl.shape == (len(features), *grid.shape) and np.allclose(wl, grid, rtol=0.0, atol=GRID_ATOL_UM):
            return
    except (KeyError, TypeError, ValueError):  # missing or ragged grids: the per-record check names the record
        pass
    for record in features:
        _check_grid(record, grid, model)


def coverage_input(model: OnnxModel) -> str | None:
    """The name of the model's coverage-mask input, or None for a model that takes the reflectance only."""
    name = model.metadata.get("coverage_name")
    if name and name in model.input_names:
        return str(name)
    return None


def _check_coverage(record: dict[str, Any], model: OnnxModel) -> None:
    coverage = (record.get("quality") or {}).get("coverage_fraction")
    if coverage is not None and coverage < MIN_COVERAGE:
        quality = record["quality"]
        raise Rejected(
            "insufficient-coverage",
            f"{record.get('uri', '?')}: data cover {quality.get('min_um', float('nan')):.4f}–"
            f"{quality.get('max_um', float('nan')):.4f} µm = {coverage:.0%} of the model grid; "
            f"{model.name} v{model.version} has no coverage input and needs {MIN_COVERAGE:.0%}",
        )


def predict_spectra(model: OnnxModel, features: list[dict[str, Any]], toi: Any = None) -> list[dict[str, Any]]:
    """Prediction records (schemas/avro/prediction.avsc), one per SpectrumFeatures record, in order.

    ``toi`` is not used (asteroids have no catalogue to match); it keeps one predictor signature for
    every kind (stream/kinds.py).

    Raises Rejected for the batch when a record does not fit the model (the caller retries records
    one by one, so only that record is dead-lettered).
    """
    if not features:
        return []
    meta = model.metadata
    try:
        grid = np.asarray(meta["wavelength_grid_um"], dtype=np.float64)
        input_name = meta["input_name"]
        out_group, out_bus = meta["output_names"]["main_group"], meta["output_names"]["bus_class"]
        group_names, bus_names = list(meta["class_names"]), list(meta["bus_class_names"])
    except KeyError as exc:
        raise Rejected("model-metadata", f"{model.name} v{model.version}: metadata lacks {exc}") from None
    coverage_name = coverage_input(model)
    _check_grids(features, grid, model)
    if coverage_name is None:
        for record in features:
            _check_coverage(record, model)
    x = np.asarray([record["reflectance"] for record in features], dtype=np.float32)
    if not np.all(np.isfinite(x)):
        bad = [r.get("uri", "?") for r, row in zip(features, x, strict=True) if not np.all(np.isfinite(row))]
        raise Rejected("invalid-features", f"non-finite reflectance in {bad[:3]}")
    # One run for the batch. Each row's outputs do not depend on the other rows (onnxruntime loops
    # over images in Conv and accumulates each GEMM row in the same order whatever the batch size),
    # so a file scores the same alone or in any batch: tests/test_spectra.py checks it bit for bit.
    inputs = {input_name: x}
    if coverage_name is not None:
        inputs[coverage_name] = np.stack([coverage_mask(record["quality"]) for record in features])
    out = model.run(inputs)
    temperature = (meta.get("calibration") or {}).get("temperature")
    # float32, as the messages carry them: a prediction is the same before and after its Avro round trip.
    calibrated = temper(out[out_group], temperature).astype(np.float32) if temperature else None
    rule = meta.get("border_rule")
    calibration = novelty_calibration(meta, model.output_names)
    novelty = None if calibration is None else conformal_p_values(out[NOVELTY_OUTPUT], calibration)
    bus_to_group = meta.get("bus_to_main_group") or {}
    results = []
    for i, (record, p_group, p_bus) in enumerate(zip(features, out[out_group], out[out_bus], strict=True)):
        g, b = int(np.argmax(p_group)), int(np.argmax(p_bus))
        number, designation = asteroid_id(record["uri"])
        p_cal = None if calibrated is None else {n: float(p) for n, p in zip(group_names, calibrated[i], strict=True)}
        bus_probabilities = {name: float(p) for name, p in zip(bus_names, p_bus, strict=True)}
        border, border_reason = border_flag(
            p_cal or {n: float(p) for n, p in zip(group_names, p_group, strict=True)},
            bus_probabilities, bus_to_group, record["reflectance"], rule)
        results.append(
            {
                "prediction_id": prediction_id(record["file_id"], model.name, model.version),
                "file_id": record["file_id"],
                "kind": "spectrum",
                "source": record["uri"],
                "object": record["object"],
                "model": model.name,
                "model_version": model.version,
                "detected_at_ms": int(record["detected_at_ms"]),
                "main_group": group_names[g],
                "probabilities": {name: float(p) for name, p in zip(group_names, p_group, strict=True)},
                "bus_class": bus_names[b],
                "bus_probability": float(p_bus[b]),
                "sector": None,
                "signals": None,
                "observation_start": None,  # SMASS files carry no observation date
                "observation_end": None,
                "tic_id": None,
                "ra_deg": None,
                "dec_deg": None,
                "tmag": None,
                "asteroid_number": number,
                "designation": designation,
                "bus_probabilities": bus_probabilities,
                "calibrated_probabilities": p_cal,
                "border": border,
                "border_reason": border_reason,
                "novelty": None if novelty is None else float(novelty[i]),
                "sectors": None,
                "sources": None,
            }
        )
    return results
