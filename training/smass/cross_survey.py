"""SMASS I (Xu et al. 1995): the same asteroids as SMASSII from another instrument, scored as the stream scores them.

Issue 13's cross-survey check. Every SMASS I file goes through stream.features.spectra (the reader and
resampler the stream runs) and stream.scoring.spectrum_predictor (coverage input, calibration and the
border flag from the model's metadata); labels are the SMASSII Bus classes of the same asteroid numbers
(``Bus.Taxonomy.txt``). ``evaluate_smass1`` writes its numbers into a model's metadata
(``metrics.smass1``, shown by ``skystream models show smass``); tests/benchmarks/bench_cross_survey.py
measures the same through ``skystream score``.

Read the numbers with care: the shipped models are trained on all SMASSII spectra, which include 96 of
these 99 asteroids, so this measures the instrument change, not new objects
(docs/experiments/issue13/RESULTS.md has the out-of-object numbers).
"""

from __future__ import annotations

import csv
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from stream.errors import Rejected
from stream.features.spectra import object_name, spectrum_features
from stream.settings import shared_data
from training.reliability import ece_of, expected_calibration_error, reliability
from training.smass.data import DEFAULT_DATA
from training.smass.labels import BUS_TO_GROUP, parse_taxonomy

__all__ = ["BORDER_PAIRS", "CONFIDENT", "DEFAULT_MAHLKE2022", "DEFAULT_SMASS1", "MAHLKE_TO_GROUP", "MahlkeSpectrum",
           "cross_survey_metrics", "evaluate_mahlke2022", "evaluate_mahlke2022_onnx", "evaluate_smass1",
           "iter_mahlke2022", "iter_smass1", "main_group_labels", "score_each", "serving_model"]

T = TypeVar("T")
DEFAULT_SMASS1 = shared_data() / "smass1" / "smass1data.tar.gz"
ORIGIN = "http://smass.mit.edu/smass.html (Xu et al. 1995, Icarus 115, 1): smass1data.tar.gz"
BORDER_PAIRS = ({"S", "Other"}, {"C", "X"})  # the confusions users care about (issue 13)
CONFIDENT = 0.9  # "confident" answer: top (calibrated) probability above this
ECE_BINS = 15

DEFAULT_MAHLKE2022 = shared_data() / "mahlke2022" / "class_vis_dev.csv"
# Mahlke et al. 2022 classes to this project's main groups. Q is S-complex in Bus-DeMeo, but SMASSII has
# no Q spectrum, so the model never learnt it: Q rows are kept apart (group "Q"), not scored as S.
MAHLKE_TO_GROUP = {
    **dict.fromkeys(("B", "C", "Ch"), "C"),
    "S": "S",
    "Q": "Q",
    **dict.fromkeys(("X", "Xe", "M", "Me", "P", "Pe", "E", "Ee"), "X"),
    **dict.fromkeys(("A", "D", "K", "L", "O", "R", "V", "Z"), "Other"),
}


@dataclass(frozen=True)
class MahlkeSpectrum:
    """One visible spectrum of the Mahlke et al. (2022) cross-survey set, as a table the stream reads."""

    name: str  # "mahlke2022/<row>_<number or name>.txt": row-unique (an asteroid may have several spectra)
    asteroid: str  # the number, or the name when unnumbered
    source: str  # the ``ref_spectrum`` key: one survey or paper (reference_spectra.csv)
    mahlke_class: str
    group: str  # MAHLKE_TO_GROUP of the class
    table: bytes  # "wavelength_um reflectance" rows, reflectance normalised to 1 at 0.55 µm


def iter_mahlke2022(path: Path = DEFAULT_MAHLKE2022) -> Iterable[MahlkeSpectrum]:
    """Every row of the Mahlke et al. (2022) visible set, in file order.

    The file holds ln(reflectance) after a per-sample offset ("mixnorm") on a 0.025 µm grid, empty where
    not observed: exp() of a row divided by its value at 0.55 µm is the reflectance normalised there.
    """
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        grid = [c for c in reader.fieldnames or [] if re.fullmatch(r"\d+\.\d+", c)]
        for i, row in enumerate(reader):
            observed = [(float(c), float(row[c])) for c in grid if row[c].strip()]
            if not observed:
                continue
            wavelength = np.array([w for w, _ in observed])
            reflectance = np.exp(np.array([v for _, v in observed]))
            reflectance /= np.interp(0.55, wavelength, reflectance)
            asteroid = str(int(float(row["number"]))) if row["number"].strip() else row["name"].strip()
            table = "".join(f"{w:.3f} {r:.5f}\n" for w, r in zip(wavelength, reflectance, strict=True))
            source = str(int(float(row["ref_spectrum"])))
            yield MahlkeSpectrum(name=f"mahlke2022/{i:04d}_{asteroid.replace(' ', '_')}.txt", asteroid=asteroid,
                                 source=source, mahlke_class=row["class_"].strip(),
                                 group=MAHLKE_TO_GROUP.get(row["class_"].strip(), "?"), table=table.encode())


def iter_smass1(archive: Path = DEFAULT_SMASS1) -> Iterable[tuple[str, bytes]]:
    """(file name, bytes) of every SMASS I spectrum (``*.[1]``) in the archive, in name order."""
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".[1]")), key=lambda m: m.name)
        for m in members:
            yield Path(m.name).name, tar.extractfile(m).read()


def main_group_labels(taxonomy_path: Path) -> dict[str, tuple[str, str]]:
    """object → (Bus class, main group) for every object with a Bus class in one of the main groups (Q has none)."""
    taxonomy = parse_taxonomy(taxonomy_path.read_text(encoding="latin-1"))
    return {obj: (e.bus, BUS_TO_GROUP[e.bus]) for obj, e in taxonomy.items() if e.bus in BUS_TO_GROUP}


def cross_survey_metrics(predictions: list[Mapping[str, Any]], truth: list[str], group_names: list[str],
                         n_rejected: int = 0) -> dict[str, Any]:
    """Metrics of spectrum predictions against their true main groups (same order).

    Confidence is the calibrated top probability when the prediction has one, else the raw one.
    """
    from sklearn.metrics import confusion_matrix, f1_score

    n = len(predictions)
    pred = [p["main_group"] for p in predictions]
    probs = [p.get("calibrated_probabilities") or p["probabilities"] for p in predictions]
    confidence = np.array([max(q.values()) for q in probs]) if n else np.zeros(0)
    raw_confidence = np.array([max(p["probabilities"].values()) for p in predictions]) if n else np.zeros(0)
    correct = np.array([a == b for a, b in zip(pred, truth, strict=True)], dtype=float)
    border = np.array([bool(p.get("border")) for p in predictions], dtype=bool)
    across = np.array([{a, b} in BORDER_PAIRS for a, b in zip(pred, truth, strict=True)], dtype=bool)
    confident_wrong = (correct == 0) & (confidence > CONFIDENT)
    diagram = reliability(confidence, correct, ECE_BINS) if n else None
    f1 = f1_score(truth, pred, labels=group_names, average=None, zero_division=0) if n else []
    wrong = [{"object": p["object"], "true": t, "predicted": p["main_group"], "confidence": round(float(c), 3),
              "border": p.get("border")}
             for p, t, c in zip(predictions, truth, confidence, strict=True) if p["main_group"] != t]
    return {
        "n_scored": n,
        "n_rejected": n_rejected,
        "rejected_fraction": n_rejected / (n + n_rejected) if n + n_rejected else 0.0,
        "weighted_f1": float(f1_score(truth, pred, average="weighted")) if n else None,
        "accuracy": float(correct.mean()) if n else None,
        "per_class_f1": {name: float(v) for name, v in zip(group_names, f1, strict=True)},
        "confusion_matrix": {"labels": group_names, "rows": "true", "columns": "predicted",
                             "counts": confusion_matrix(truth, pred, labels=group_names).tolist() if n else []},
        "s_called_other": sum(1 for a, b in zip(truth, pred, strict=True) if a == "S" and b == "Other"),
        "ece_top_class": ece_of(diagram) if n else None,
        "ece_top_class_uncalibrated": expected_calibration_error(raw_confidence, correct, ECE_BINS) if n else None,
        "reliability": diagram if n else None,
        "ece_bins": ECE_BINS,
        "border_flagged_fraction": float(border.mean()) if n else None,
        "error_rate_flagged": float(1 - correct[border].mean()) if border.any() else None,
        "error_rate_unflagged": float(1 - correct[~border].mean()) if (~border).any() else None,
        f"confident_wrong_across_border (p>{CONFIDENT})": int(np.sum(confident_wrong & across)),
        f"confident_wrong_across_border_unflagged (p>{CONFIDENT})": int(np.sum(confident_wrong & across & ~border)),
        "wrong": wrong,
    }


def serving_model(onnx_bytes: bytes, metadata: dict[str, Any]) -> Any:
    """A candidate (ONNX bytes and the metadata it will be published with) as the stream would serve it."""
    from stream.models.registry import ModelVersion
    from stream.scoring.onnx_model import OnnxModel

    return OnnxModel(ModelVersion("smass", "candidate", onnx_bytes, metadata))


def score_each(model: Any, files: Iterable[tuple[str, bytes, T]]) -> tuple[list[tuple[T, dict, dict]], dict[str, int]]:
    """Every (uri, bytes, item) file through the stream's reader and predictor, one at a time:
    ([(item, features record, prediction)], how many each reason refused)."""
    from stream.scoring.spectrum_predictor import predict_spectra

    scored, rejected = [], {}
    for uri, data, item in files:
        try:
            record = spectrum_features(data, uri=uri, file_id=uri, detected_at_ms=0)
            [prediction] = predict_spectra(model, [record])
        except Rejected as exc:
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
            continue
        scored.append((item, record, prediction))
    return scored, rejected


def evaluate_smass1(model: Any, archive: Path = DEFAULT_SMASS1, taxonomy_path: Path | None = None) -> dict[str, Any]:
    """Score every SMASS I spectrum of an asteroid with a main-group label as the stream does; the metrics.

    ``model`` is a stream.scoring.onnx_model.OnnxModel (its metadata drives coverage, calibration and the
    border flag). Files the reader or the predictor refuses count as rejected, with their reasons.
    """
    labels = main_group_labels(taxonomy_path or DEFAULT_DATA / "Bus.Taxonomy.txt")
    files = list(iter_smass1(archive))
    scored, rejected = score_each(model, ((f"smass1/{name}", data, labels[object_name(name)][1])
                                          for name, data in files if object_name(name) in labels))
    metrics = cross_survey_metrics([p for _, _, p in scored], [group for group, _, _ in scored],
                                   list(model.metadata["class_names"]), n_rejected=sum(rejected.values()))
    n_files = len(files)
    return {"data": {"origin": ORIGIN, "file": archive.name, "n_files": n_files,
                     "labels": "SMASSII Bus class of the same asteroid (Bus.Taxonomy.txt), main groups only"},
            "rejected_by_reason": rejected, **metrics,
            "note": "the model was trained on SMASSII spectra of most of these asteroids: this measures the "
                    "instrument change (out-of-object numbers: docs/experiments/issue13/RESULTS.md)"}


PER_SOURCE_MIN = 40  # spectra a source needs for its own numbers and reliability diagram


def evaluate_mahlke2022(model: Any, path: Path = DEFAULT_MAHLKE2022) -> dict[str, Any]:
    """Every Mahlke et al. (2022) spectrum in the main groups scored as the stream does; the metrics, and
    per source (with at least PER_SOURCE_MIN scored) accuracy, ECE and reliability diagram.

    ``model`` is a stream.scoring.onnx_model.OnnxModel. Q rows are left out (SMASSII has no Q, so the model
    never learnt them); so are refused files (counted by reason). The list of every error is cut to the
    most confident ones (the metadata stays small).
    """
    groups = list(model.metadata["class_names"])
    found, rejected = score_each(model, ((r.name, r.table, r) for r in iter_mahlke2022(path) if r.group in groups))
    scored = [(prediction, row) for row, _, prediction in found]
    metrics = cross_survey_metrics([p for p, _ in scored], [r.group for _, r in scored], groups,
                                   n_rejected=sum(rejected.values()))
    metrics["most_confident_errors"] = sorted(metrics.pop("wrong"), key=lambda w: -w["confidence"])[:8]
    per_source = {}
    for source in sorted({r.source for _, r in scored}, key=lambda s: -sum(r.source == s for _, r in scored)):
        pairs = [(p, r.group) for p, r in scored if r.source == source]
        if len(pairs) >= PER_SOURCE_MIN:
            m = cross_survey_metrics([p for p, _ in pairs], [g for _, g in pairs], groups)
            per_source[source] = {k: m[k] for k in ("n_scored", "weighted_f1", "accuracy", "ece_top_class",
                                                    "reliability")}
    return {"data": {"file": path.name, "labels": "Mahlke et al. 2022 classes mapped to main groups (Q apart)"},
            "rejected_by_reason": rejected, **metrics, "per_source": per_source}


def evaluate_mahlke2022_onnx(onnx_bytes: bytes, metadata: dict[str, Any], path: Path = DEFAULT_MAHLKE2022,
                             log=print) -> dict[str, Any]:
    """``evaluate_mahlke2022`` of a candidate model (ONNX bytes and the metadata it will be published with),
    with a one-line summary to ``log``."""
    result = evaluate_mahlke2022(serving_model(onnx_bytes, metadata), path)
    log(f"Mahlke et al. 2022 (30 sources): weighted F1 {result['weighted_f1']:.4f} on {result['n_scored']} "
        f"({result['n_rejected']} rejected); ECE {result['ece_top_class']:.3f}; per source: "
        + ", ".join(f"{s} ECE {m['ece_top_class']:.3f}" for s, m in result["per_source"].items()))
    return result
