"""What a training run returns: the typed result every task's ``run`` hands back to the CLI.

A run is load → fit → export and verify → evaluate → publish; its result says how far it got
(``status``), with the metrics it reported and, when it published, where. `skystream train` turns
it into an exit code and a printed summary (training/cli.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.gate import GateDecision

__all__ = ["Status", "TrainResult"]

Status = Literal[
    "published",  # a version was written to the registry (promoted, or kept unpromoted by --keep-refused)
    "not_published",  # trained and evaluated; publishing was not asked for (--no-publish, --dev-split)
    "refused",  # the promotion gate refused the candidate: the champion keeps serving (--keep-refused
    # may still have stored it as an unpromoted version)
    "export_mismatch",  # ONNX and Keras disagree: nothing published
    "invalid_arguments",  # the flags contradict each other: nothing trained
]


@dataclass
class TrainResult:
    """The outcome of ``training.<task>.run``: task, metrics report, publication and gate decision."""

    task: str
    status: Status
    metrics: dict[str, Any] = field(default_factory=dict)  # the JSON report (also written to --report)
    version: str | None = None  # the version written to the registry, or None
    registry: str | None = None  # URI of the registry written to (or gated against)
    gate: GateDecision | None = None  # with --with-labels: the promotion decision
    report_path: Path | None = None  # where the JSON report was written, or None
    message: str = ""  # one line on what happened, for the printed summary
