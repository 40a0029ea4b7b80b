"""Plain-text tables and headline metrics, shared by the commands that print registry contents and by
the retraining gate's report."""

from __future__ import annotations

from typing import Any

__all__ = ["flat_metrics", "key_metrics", "table"]

# Metrics shown first in tables when a model has them (the headline numbers of each task).
PREFERRED_METRICS = ("f1_weighted", "weighted_f1", "average_precision", "auc", "accuracy", "f1_macro")
MAX_TABLE_METRICS = 3


def flat_metrics(metrics: Any, prefix: str = "") -> dict[str, float]:
    """Numeric scalars of a (possibly nested) metrics dict, with dotted names."""
    out: dict[str, float] = {}
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            out.update(flat_metrics(v, f"{prefix}{k}."))
    elif isinstance(metrics, int | float) and not isinstance(metrics, bool):
        out[prefix.rstrip(".")] = float(metrics)
    return out


def key_metrics(meta: dict[str, Any], limit: int = MAX_TABLE_METRICS) -> str:
    """A few headline metrics of a version, e.g. ``f1_weighted=0.941 accuracy=0.93``."""
    flat = flat_metrics(meta.get("metrics", {}))

    def rank(name: str) -> tuple[int, str]:
        """Sort key: preferred metrics first, in their order, then by name."""
        leaf = name.rsplit(".", 1)[-1]
        return (PREFERRED_METRICS.index(leaf) if leaf in PREFERRED_METRICS else len(PREFERRED_METRICS), name)

    return " ".join(f"{k}={flat[k]:.4g}" for k in sorted(flat, key=rank)[:limit])


def table(rows: list[list[str]], header: list[str]) -> str:
    """``rows`` under ``header`` in left-aligned columns, with a dashed rule below the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
