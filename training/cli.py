"""`skystream train TASK`: contributed to the skystream command through an entry point.

Each task module provides ``add_arguments(parser)`` and ``run(args) -> TrainResult``; it is imported
only when its task is chosen, so `skystream --help` does not load TensorFlow. This wrapper turns the
result into a printed summary and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.result import TrainResult

__all__ = ["EXIT_CODES", "TASKS", "exit_code", "register", "summary"]

TASKS = {
    "smass": ("training.smass", "asteroid main groups (C/S/X/Other) and Bus classes from SMASSII spectra"),
    "smass-novelty": ("training.smass.novelty_pipeline", "add the novelty head (autoencoder + Gaussian mixture, "
                      "conformal p-value) to a published smass classifier version"),
    "tess": ("training.tess", "transit triage and vetting from Yu et al. 2019 TESS views"),
}

# 0: done as asked; 1: the exported model cannot be trusted; 2: contradictory flags; 3: the gate refused.
EXIT_CODES = {"published": 0, "not_published": 0, "export_mismatch": 1, "invalid_arguments": 2, "refused": 3}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` with one sub-command per task to the skystream command."""
    train = subparsers.add_parser(
        "train",
        help="train a model from real data, export it to ONNX and publish it to the registry",
        description="Train a model reproducibly (fixed seeds), check ONNX against Keras, and publish "
        "the ONNX file with its metrics and drift references to the model registry.",
    )
    tasks = train.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, (module_name, help_text) in TASKS.items():
        p = tasks.add_parser(task, help=help_text, description=help_text)
        p.set_defaults(func=_runner(module_name))
        importlib.import_module(module_name).add_arguments(p)


def exit_code(result: TrainResult) -> int:
    """The process exit code of a run (EXIT_CODES)."""
    return EXIT_CODES[result.status]


def summary(result: TrainResult) -> str:
    """What the run did, in a few lines: outcome, version and registry, gate decision, report path."""
    head = f"train {result.task}: {result.status.replace('_', ' ')}"
    lines = [f"{head}: {result.message}" if result.message else head]
    if result.version is not None:
        lines.append(f"  version {result.version} in {result.registry}")
    gate = result.gate
    if gate is not None:
        champion = "none" if gate.champion is None else f"{gate.champion:.4f}"
        lines.append(f"  gate: {'accepted' if gate.accepted else 'refused'} on {gate.primary} "
                     f"(candidate {gate.candidate:.4f}, champion {champion})")
    if result.report_path is not None:
        lines.append(f"  report: {result.report_path}")
    return "\n".join(lines)


def _runner(module_name: str):
    def run(args: argparse.Namespace) -> int:
        """Run the training command and print its summary; exit code from its result."""
        result = importlib.import_module(module_name).run(args)
        print(summary(result), flush=True)
        return exit_code(result)

    return run
