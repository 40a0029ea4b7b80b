"""`skystream rejected list | replay`: show the dead letters, and re-drive them once the cause is fixed
(the library is stream/ingest/redrive.py)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime

from stream.cli.common import broker_arg, require_broker
from stream.ops.tables import table
from stream.settings import Settings

__all__ = ["cmd_list", "cmd_replay", "register"]


def _since(text: str) -> float:
    """Unix seconds, an ISO-8601 time (UTC unless it says otherwise), or an age such as 30m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (unix seconds, ISO-8601, or an age like 2h)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `rejected` to the skystream command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--reason", help="only dead letters with this reason (e.g. storage-unavailable)")
    common.add_argument("--since", type=_since, metavar="T",
                        help="only those written at or after T: unix seconds, ISO-8601, or an age (30m, 2h, 1d)")
    broker_arg(common)
    rejected = subparsers.add_parser(
        "rejected", help="list the dead letters, or re-drive them once their cause is fixed",
        description="Dead letters are on the rejected topic. `replay` publishes a file event again for those of "
        "the watch and preprocess stages (the file is read again) and the features again for those of the score "
        "stage; results are idempotent, so repeats are harmless.",
    )
    cmds = rejected.add_subparsers(dest="rejected_command", required=True, metavar="ACTION")
    p = cmds.add_parser("list", parents=[common], help="the retained dead letters")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_list)
    p = cmds.add_parser("replay", parents=[common], help="re-drive the dead letters (filtered)")
    p.add_argument("--dry-run", action="store_true", help="say what would be re-driven, publish nothing")
    p.set_defaults(func=cmd_replay)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    broker = require_broker(args, settings)
    return dataclasses.replace(settings, broker=broker)


def _when(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_list(args: argparse.Namespace) -> int:
    """Run `skystream rejected list`: print the dead letters (optionally by reason and age)."""
    from stream.ingest.redrive import read_dead_letters

    letters = asyncio.run(read_dead_letters(_settings(args), args.reason, args.since))
    if args.format == "json":
        for d in letters:
            shown = {k: v for k, v in d.items() if k != "payload"}
            print(json.dumps(shown | {"has_payload": d["payload"] is not None}))
        return 0
    rows = [[_when(d["at_ms"]), d["stage"], d["reason"], d.get("uri") or d.get("topic") or "",
             (d["error"] or "")[:80]] for d in letters]
    print(table(rows, ["at", "stage", "reason", "input", "error"]) if rows else "no dead letters")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Run `skystream rejected replay`: re-drive the dead letters to their topics (or say what would be)."""
    from stream.ingest.redrive import replay

    plans = asyncio.run(replay(_settings(args), args.reason, args.since, dry_run=args.dry_run))
    verb = "would re-drive" if args.dry_run else "re-drove"
    for p in plans:
        what = p.letter.get("uri") or p.letter.get("file_id") or p.letter.get("topic") or "?"
        print(f"{p.letter['stage']:<10} {p.letter['reason']:<22} {what}: "
              f"{(verb + ' as ' + p.note) if p.topic else 'skipped, ' + p.note}")
    done = sum(1 for p in plans if p.topic)
    print(f"{verb} {done} of {len(plans)} dead letters")
    return 0
