"""The report directory a training run writes (``--report-dir``): its figures as PNG files and an index.

The figures are the ones the web view's model page draws from the published metadata
(stream/api/plots.py ``model_figures``: confusion matrices, per-class scores, reliability diagrams,
precision-recall curves, training history, novelty findings), so the report, `skystream models show`
and the page show the same evidence; a task adds figures only it can draw (e.g. the spectra of its most
confident errors) as ready PNG bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_report_dir"]


def write_report_dir(directory: Path, metadata: Mapping[str, Any], report: Mapping[str, Any],
                     extra: Mapping[str, tuple[str, bytes]] | None = None) -> Path:
    """Write ``report.json``, one PNG per figure and ``index.md`` (caption -> file) into ``directory``;
    returns the index's path. ``extra``: name -> (caption, PNG bytes)."""
    from stream.api.plots import model_figures

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# {metadata.get('name', '?')} ({metadata.get('task', '?')}): training report", ""]
    for name, (caption, draw) in model_figures(metadata).items():
        (directory / f"{name}.png").write_bytes(draw())
        lines.append(f"- [{caption}]({name}.png)")
    for name, (caption, png) in (extra or {}).items():
        (directory / f"{name}.png").write_bytes(png)
        lines.append(f"- [{caption}]({name}.png)")
    lines += ["", "Numbers: report.json (and the model's metadata: `skystream models show`)."]
    index = directory / "index.md"
    index.write_text("\n".join(lines) + "\n")
    return index
