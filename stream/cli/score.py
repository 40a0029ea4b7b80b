"""`skystream score`: score files offline, one JSON line each (stream/scoring/offline.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream.settings import Settings

__all__ = ["cmd_score", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `score` to the skystream command."""
    p = subparsers.add_parser("score", help="score files offline, one JSON line per file on stdout",
                       description="The workers' code path without a broker: detect, preprocess, score. "
                       "A file that cannot be scored prints {\"rejected\": true, \"reason\": ...} and the "
                       "command goes on with the next one. Exit code 0 even when some files are rejected. "
                       "A star given in two TESS sectors or more gets one more line at the end: the search over "
                       "its sectors together (\"sectors\": [...], docs/stars.md).")
    p.add_argument("files", nargs="+", type=Path, help="spectrum tables or TESS light-curve FITS files")
    p.add_argument("--no-stars", action="store_true",
                   help="do not search a star's sectors together (one line per file only)")
    p.add_argument("--registry", help="model registry (default: $SKYSTREAM_REGISTRY or var/registry)")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    """Score each file and print its prediction (or rejection) as JSON."""
    import dataclasses

    from stream.scoring.offline import score_files
    from stream.scoring.scorer import scorer_for

    settings = Settings()
    scorer = scorer_for(dataclasses.replace(settings, registry=args.registry or settings.registry))
    for out in score_files(scorer, args.files, stars=not args.no_stars):
        print(json.dumps(out, default=_json_default), flush=True)
    return 0


def _json_default(obj: object) -> object:
    if isinstance(obj, bytes):
        return None  # figures are not printed; they live in the alert messages
    raise TypeError(type(obj).__name__)
