"""`skystream train TASK`: contributed to the skystream command through an entry point.

Each task module provides ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only
when its task is chosen, so `skystream --help` does not load TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib

TASKS = {
    "smass": ("training.smass", "asteroid main groups (C/S/X/Other) and Bus classes from SMASSII spectra"),
    "tess": ("training.tess", "transit triage and vetting from Yu et al. 2019 TESS views"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
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


def _runner(module_name: str):
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module_name).run(args)

    return run
