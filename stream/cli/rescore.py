"""`skystream rescore`: replay the retained features topics through the current champion models
(the replay itself is stream/scoring/rescore.py)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

from stream import kinds
from stream.cli.common import broker_arg, require_broker
from stream.settings import Settings

__all__ = ["cmd_rescore", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rescore`` command and its options."""
    p = subparsers.add_parser(
        "rescore", help="replay the retained features topics through the current champion models",
        description="Read the features topics (all retained messages, or those since --since) and publish a "
        "new prediction for each with the registry's current champion. Predictions carry the model version, "
        "so subscribers can tell the new answers from the old. Runs to the end of the topics and exits.",
    )
    p.add_argument("--kind", choices=kinds.names(), action="append",
                   help="only this kind (repeatable; default all)")
    p.add_argument("--since", type=float, default=None, metavar="UNIX_SECONDS",
                   help="only features written at or after this time (default: everything retained)")
    broker_arg(p)
    p.add_argument("--registry", help="model registry (default: $SKYSTREAM_REGISTRY)")
    p.set_defaults(func=cmd_rescore)


def cmd_rescore(args: argparse.Namespace) -> int:
    """Run `skystream rescore`: replay the features topics through the current champions."""
    from stream.scoring.rescore import rescore

    settings = Settings()
    broker = require_broker(args, settings)
    settings = dataclasses.replace(settings, broker=broker, registry=args.registry or settings.registry)
    t0 = time.time()
    counts = asyncio.run(rescore(settings, args.kind or kinds.names(), args.since))
    print(f"rescored {counts['replayed']} feature records in {time.time() - t0:.1f} s: "
          f"{counts['predictions']} new predictions, {counts['rejected']} rejected")
    return 0
