"""What the novelty head finds, measured as the stream scores: SMASSII held out, SMASS I, the cross-survey set.

Every spectrum goes through stream.features.spectra and stream.scoring.spectrum_predictor with the
candidate model (classifier + novelty head) and its metadata, so the p-values are the ones subscribers
get. ``findings`` returns the numbers (share below α overall and per cross-survey source, the most novel
spectra); ``most_novel_png`` draws those spectra for the report directory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from stream.features import spectra
from training.smass.cross_survey import iter_mahlke2022, iter_smass1, score_each
from training.smass.figures import spectra_png

__all__ = ["ALPHAS", "findings", "most_novel_png", "score_files", "share_below"]

ALPHAS = (0.01, 0.05)
MOST_NOVEL = 8  # spectra listed and plotted per set


def score_files(model: Any, files: Iterable[tuple[str, bytes, dict]]) -> tuple[list[dict], dict[str, int]]:
    """(scored, rejected reasons): each scored entry is the file's extra fields with the prediction's
    ``novelty``, ``main_group``, ``bus_class`` and its grid values (for plots)."""
    found, rejected = score_each(model, ((name, data, (name, extra)) for name, data, extra in files))
    return [{**extra, "name": name, "novelty": p["novelty"], "main_group": p["main_group"], "bus_class": p["bus_class"],
             "reflectance": record["reflectance"], "coverage": spectra.coverage_mask(record["quality"]).tolist()}
            for (name, extra), record, p in found], rejected


def share_below(p: np.ndarray | list[float]) -> dict[str, float]:
    """Share of p-values below each α of ALPHAS."""
    p = np.asarray(p, dtype=np.float64)
    return {f"alpha_{a:g}": round(float(np.mean(p < a)), 4) if len(p) else float("nan") for a in ALPHAS}


def _most_novel(scored: list[dict], keys: tuple[str, ...]) -> list[dict]:
    order = sorted(range(len(scored)), key=lambda i: scored[i]["novelty"])[:MOST_NOVEL]
    return [{k: scored[i][k] for k in ("name", "novelty", "main_group", "bus_class", *keys)} for i in order]


def findings(model: Any, smassii_p: np.ndarray, smassii_names: list[str], smassii_classes: list[str],
             smass1: Path | None, mahlke2022: Path | None, holdout: dict | None = None) -> tuple[dict, dict]:
    """(numbers for the metadata and report, the most novel spectra with their values for plotting).

    ``smassii_p``: each training spectrum's out-of-fold p-value (its rank among its fold's calibration
    scores); ``holdout``: the validity check (a head fitted on 80 % scoring the other 20 %)."""
    out: dict[str, Any] = {"alphas": list(ALPHAS)}
    plots: dict[str, list[dict]] = {}
    order = np.argsort(smassii_p)[:MOST_NOVEL]
    out["smassii_out_of_fold"] = {"n": len(smassii_p), **share_below(smassii_p),
                                  "most_novel": [{"name": smassii_names[i], "novelty": round(float(smassii_p[i]), 4),
                                                  "bus_class": smassii_classes[i]} for i in order]}
    if holdout:
        out["smassii_holdout"] = holdout
    if smass1 and smass1.exists():
        scored, rejected = score_files(model, ((f"smass1/{n}", b, {}) for n, b in iter_smass1(smass1)))
        out["smass1"] = {"n": len(scored), "rejected": rejected, **share_below([s["novelty"] for s in scored]),
                         "most_novel": _strip(_most_novel(scored, ()))}
        plots["SMASS I"] = _most_novel(scored, ("reflectance", "coverage"))
    if mahlke2022 and mahlke2022.exists():
        scored, rejected = score_files(model, ((m.name, m.table, {"source": m.source, "class": m.mahlke_class})
                                               for m in iter_mahlke2022(mahlke2022)))
        by_source: dict[str, list[float]] = defaultdict(list)
        by_class: dict[str, list[float]] = defaultdict(list)
        for s in scored:
            by_source[s["source"]].append(s["novelty"])
            by_class[s["class"]].append(s["novelty"])
        out["mahlke2022"] = {
            "n": len(scored), "rejected": rejected, **share_below([s["novelty"] for s in scored]),
            "per_source": {src: {"n": len(p), **share_below(p)} for src, p in sorted(by_source.items(),
                                                                                       key=lambda kv: -len(kv[1]))},
            # Whether the flags follow composition (rare classes) or the instrument (whole sources).
            "per_mahlke_class": {c: {"n": len(p), **share_below(p)} for c, p in sorted(by_class.items(),
                                                                               key=lambda kv: -len(kv[1]))},
            "most_novel": _strip(_most_novel(scored, ("source", "class")))}
        plots["Mahlke et al. 2022"] = _most_novel(scored, ("source", "class", "reflectance", "coverage"))
    return out, plots


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def most_novel_png(plots: dict[str, list[dict]], smassii: list[dict] | None = None) -> bytes:
    """The most novel spectra of each set (SMASSII out of fold first), labelled with class and p-value."""
    panels = ({"SMASSII (out of fold)": smassii} if smassii else {}) | plots
    return spectra_png({f"{title}: most novel": [
        {**r, "label": f"{Path(r['name']).name[:22]} {r.get('class') or r.get('bus_class', '')} p={r['novelty']:.4f}"}
        for r in rows] for title, rows in panels.items()})
