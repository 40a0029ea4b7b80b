"""The web view's figures, drawn with matplotlib to PNG bytes (Agg, no pyplot: safe in threads).

Model figures draw what a registry version's metadata holds (confusion matrices, per-class scores,
reliability diagrams, precision-recall curves, the training history, the novelty head's findings);
``model_figures`` lists those a version has and ``missing_evaluations`` says which usual evaluations
its metadata lacks, so the page can say so instead of drawing nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from matplotlib.figure import Figure

from stream.stars import widest_search

__all__ = ["model_figures", "missing_evaluations", "periods_png", "probabilities_png"]

_SIZE = (6.4, 3.6)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield (*path, str(k)), v
            yield from _walk(v, (*path, str(k)))


def _find(meta: Mapping[str, Any], key: str, suffix: bool = False) -> list[tuple[str, Any]]:
    """Every (dotted path, value) under ``key`` (or, with ``suffix``, a key ending so) anywhere in the metadata."""
    return [(".".join(p), v) for p, v in _walk(meta) if (p[-1].endswith(key) if suffix else p[-1] == key)]


def _confusion(matrix: Mapping[str, Any], title: str) -> bytes:
    counts, labels = matrix["counts"], matrix["labels"]
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > top / 2 else "black")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _per_class(per_class: Mapping[str, Mapping[str, float]], title: str) -> bytes:
    names = list(per_class)
    stats = [s for s in ("precision", "recall", "f1") if all(s in per_class[n] for n in names)]
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(stats))
    for k, stat in enumerate(stats):
        ax.bar([i + k * width for i in range(len(names))], [per_class[n][stat] for n in names], width, label=stat)
    ax.set_xticks([i + width * (len(stats) - 1) / 2 for i in range(len(names))], names)
    low = min(per_class[n][s] for n in names for s in stats)
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _reliability(diagram: Mapping[str, Any], title: str) -> bytes:
    """Observed frequency against mean probability per bin, point size by count; the diagonal is calibrated."""
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    counts = diagram["count"]
    top = max(counts) or 1
    ax.plot(diagram["mean_probability"], diagram["frequency"], "-", color="C0", lw=1)
    ax.scatter(diagram["mean_probability"], diagram["frequency"], s=[10 + 90 * c / top for c in counts], color="C0")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{title} (n = {sum(counts)})", fontsize=8)
    return _png(fig)


def _pr_curve(curve: Mapping[str, Any], title: str) -> bytes:
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    ax.plot(curve["recall"], curve["precision"], color="C0")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=8)
    return _png(fig)


def _training(history: list[Mapping[str, Any]], title: str) -> bytes:
    keys = [k for k in history[0] if all(isinstance(h.get(k), int | float) for h in history)]
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    for k in keys:
        ax.plot(range(1, len(history) + 1), [h[k] for h in history], label=k)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _novelty(findings: Mapping[str, Any], title: str) -> bytes:
    """Share of spectra below each α, per evaluation set and, for the cross-survey set, per class."""
    alphas = [f"alpha_{a:g}" for a in findings.get("alphas", (0.01, 0.05))]
    sets = {name: f for name, f in findings.items() if isinstance(f, Mapping) and all(a in f for a in alphas)}
    order = ("smassii_holdout", "smassii_out_of_fold", "smass1", "mahlke2022")  # training-like first
    sets = dict(sorted(sets.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    classes = (findings.get("mahlke2022") or {}).get("per_mahlke_class", {})
    rows = list(sets.items()) + [(f"Mahlke {c}", v) for c, v in classes.items() if v.get("n", 0) >= 10]
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / len(alphas)
    for k, a in enumerate(alphas):
        ax.bar([i + k * width for i in range(len(rows))], [f[a] for _, f in rows], width, label=f"p < {a[6:]}")
        ax.axhline(float(a[6:]), color=f"C{k}", lw=0.8, ls="--")
    ax.set_xticks([i + width * (len(alphas) - 1) / 2 for i in range(len(rows))],
                  [f"{name} ({f.get('n', f.get('n_scored', '?'))})" for name, f in rows], rotation=45, ha="right",
                  fontsize=7)
    ax.set_ylabel("share flagged (dashed: α)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def model_figures(meta: Mapping[str, Any]) -> dict[str, tuple[str, Callable[[], bytes]]]:
    """name -> (caption, draw) for every figure this version's metadata can give."""
    out: dict[str, tuple[str, Callable[[], bytes]]] = {}
    for path, m in _find(meta, "confusion_matrix"):
        if isinstance(m, Mapping) and "counts" in m and "labels" in m:
            caption = f"confusion matrix ({path})"
            out[f"confusion-{len(out)}"] = (caption, lambda m=m, c=caption: _confusion(m, c))
    for path, pc in _find(meta, "per_class"):
        if isinstance(pc, Mapping) and pc and all(isinstance(v, Mapping) and "f1" in v for v in pc.values()):
            caption = f"per-class precision, recall, F1 ({path})"
            out[f"per-class-{len(out)}"] = (caption, lambda pc=pc, c=caption: _per_class(pc, c))
    for path, diagram in _find(meta, "reliability", suffix=True):
        if isinstance(diagram, Mapping) and {"mean_probability", "frequency", "count"} <= set(diagram):
            caption = f"reliability diagram ({path})"
            out[f"reliability-{len(out)}"] = (caption, lambda d=diagram, c=caption: _reliability(d, c))
    for path, curve in _find(meta, "pr_curve", suffix=True):
        if isinstance(curve, Mapping) and {"precision", "recall"} <= set(curve):
            caption = f"precision-recall curve ({path})"
            out[f"pr-curve-{len(out)}"] = (caption, lambda d=curve, c=caption: _pr_curve(d, c))
    findings = (meta.get("novelty") or {}).get("findings")
    if isinstance(findings, Mapping) and findings:
        caption = "novelty: share of spectra flagged at each α, per set and cross-survey class (novelty.findings)"
        out[f"novelty-{len(out)}"] = (caption, lambda f=findings, c=caption: _novelty(f, c))
    for path, hist in _find(meta, "history"):
        if isinstance(hist, list) and hist and all(isinstance(h, Mapping) for h in hist):
            caption = f"training history ({path})"
            out[f"training-{len(out)}"] = (caption, lambda h=hist, c=caption: _training(h, c))
    return out


# The evaluations a reader looks for, and the metadata keys that would hold them.
_EVALUATIONS = {
    "confusion matrix": ("confusion_matrix",),
    "precision-recall curve": ("pr_curve", "precision_recall_curve"),
    "calibration curve": ("calibration_curve", "reliability_diagram", "reliability"),
}


def missing_evaluations(meta: Mapping[str, Any]) -> list[str]:
    """The usual evaluations (confusion matrix, precision-recall and calibration curves) that this
    version's metadata does not hold."""
    present = {p[-1] for p, _ in _walk(meta)}
    return [name for name, keys in _EVALUATIONS.items() if not any(k.endswith(keys) for k in present)]


def periods_png(history: list[Mapping[str, Any]], title: str) -> bytes:
    """Each light-curve prediction's signals: period against sector, coloured by P(planet). A search over
    several sectors (the widest one) is a row of diamonds joined across the sectors it used."""
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    xs, ys, cs = [], [], []
    for row in history:
        if row.get("sectors"):
            continue
        for s in row.get("signals") or []:
            xs.append(row.get("sector") or 0)
            ys.append(s["period_days"])
            cs.append(s["planet_probability"])
    points = ax.scatter(xs, ys, c=cs, cmap="viridis", vmin=0, vmax=1, s=60, edgecolors="black",
                        label="one sector")
    if (widest := widest_search(history)) is not None:
        for i, s in enumerate(widest.get("signals") or []):
            n = len(widest["sectors"])
            ax.plot(widest["sectors"], [s["period_days"]] * n, color="grey", lw=1, zorder=0)
            ax.scatter(widest["sectors"], [s["period_days"]] * n, c=[s["planet_probability"]] * n, cmap="viridis",
                       vmin=0, vmax=1, s=70, marker="D", edgecolors="black",
                       label="sectors together" if i == 0 else None)
        ax.legend(fontsize=8, loc="best")
    fig.colorbar(points, ax=ax, label="P(planet)")
    ax.set_xlabel("sector")
    ax.set_ylabel("period (days)")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def probabilities_png(probabilities: Mapping[str, float], title: str) -> bytes:
    """Class probabilities as horizontal bars, largest on top."""
    items = sorted(probabilities.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(5.0, 0.5 + 0.35 * len(items)))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4a7ab5")
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.set_title(title, fontsize=9)
    return _png(fig)
