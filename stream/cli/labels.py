"""`skystream labels publish | dump`: curated labels on the labels topic (see stream/ingest/labels.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

import schemas
from stream.ingest.labels import (
    LabelInputError,
    bus_labels,
    latest_labels,
    publish_labels,
    read_labels,
    toi_labels,
    write_jsonl,
)
from stream.settings import TOPICS, Settings

__all__ = ["cmd_dump", "cmd_publish", "register"]


# -- commands ------------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `labels` to the skystream command."""
    labels = subparsers.add_parser(
        "labels", help="publish curated labels (TOI dispositions, asteroid classes) and dump the labels topic",
        description="The labels topic carries curated feedback that `skystream train TASK --with-labels` "
        "merges with the base data. Each message is a Label record (schemas/avro/label.avsc).",
    )
    cmds = labels.add_subparsers(dest="labels_command", required=True, metavar="ACTION")

    p = cmds.add_parser(
        "publish", help="publish Label records from the TOI table or an asteroid class list",
        description="TOI table: CP/KP/PC/APC -> PC, FP -> EB, FA -> J (one label per TOI, with its period). "
        "Asteroids: Bus.Taxonomy.txt-format lines or an 'object,class' CSV with Bus classes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--toi", type=Path, metavar="CSV", help="TOI table CSV from the NASA Exoplanet Archive")
    what.add_argument("--bus", type=Path, metavar="FILE", help="Bus.Taxonomy.txt-format file or 'object,class' CSV")
    p.add_argument("--skip", action="append", default=[], metavar="DISP",
                   help="with --toi: leave out this TFOPWG disposition (repeatable, e.g. --skip APC --skip PC)")
    p.add_argument("--source", help="with --bus: who says so (default SMASSII for taxonomy files, else curated)")
    p.add_argument("--dry-run", action="store_true", help="build and validate the records, print counts, send nothing")
    p.add_argument("--broker", help="Kafka bootstrap servers (default: $SKYSTREAM_BROKER)")
    p.set_defaults(func=cmd_publish)

    p = cmds.add_parser("dump", help="write every Label on the labels topic as JSON lines",
                        description="Read the labels topic from the beginning to its end and write one JSON "
                        "object per Label (oldest first). --latest keeps only the newest label per "
                        "task/object (and period), as retraining sees them.")
    p.add_argument("--out", type=Path, help="output file (default: stdout)")
    p.add_argument("--task", help="only labels of this task (tess, smass)")
    p.add_argument("--latest", action="store_true", help="only the newest label per task/object[/period]")
    p.add_argument("--broker", help="Kafka bootstrap servers (default: $SKYSTREAM_BROKER)")
    p.set_defaults(func=cmd_dump)


def _fail(message: str) -> int:
    print(f"labels: {message}", file=sys.stderr)
    return 2


def _broker(args: argparse.Namespace) -> str | None:
    return args.broker or Settings().broker


NO_BROKER = ("no broker configured: pass --broker HOST:PORT or set SKYSTREAM_BROKER "
             "(`skystream broker` starts a local one)")


def cmd_publish(args: argparse.Namespace) -> int:
    """Run `skystream labels publish`: publish TOI or Bus labels to the labels topic."""
    try:
        if args.toi:
            records, counts = toi_labels(args.toi, skip=args.skip)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            per_label = Counter(r["label"] for r in records)
            summary = (f"{len(records)} TESS labels from {args.toi.name} ({detail}); as model classes: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(per_label.items())))
        else:
            records = bus_labels(args.bus, source=args.source)
            per_label = Counter(r["label"] for r in records)
            summary = (f"{len(records)} asteroid labels from {args.bus.name} (source {records[0]['source']}): "
                       + ", ".join(f"{k} {v}" for k, v in per_label.most_common()))
        for r in records:
            schemas.validate("Label", r)
    except (OSError, LabelInputError, schemas.SchemaError) as exc:
        return _fail(str(exc))
    if args.dry_run:
        print(summary + "; dry run, nothing sent")
        return 0
    broker = _broker(args)
    if not broker:
        return _fail(NO_BROKER)
    try:
        n = asyncio.run(publish_labels(broker, records))
    except Exception as exc:  # unreachable broker, refused write: tell the user, no traceback
        return _fail(f"could not publish to {broker}: {exc}")
    print(f"{summary}; published {n} on {TOPICS['labels']} at {broker}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    """Run `skystream labels dump`: print the labels on the labels topic as JSON lines."""
    broker = _broker(args)
    if not broker:
        return _fail(NO_BROKER)
    try:
        records, bad = asyncio.run(read_labels(broker))
    except Exception as exc:
        return _fail(f"could not read {TOPICS['labels']} from {broker}: {exc}")
    total = len(records)
    if args.task:
        records = [r for r in records if r["task"] == args.task]
    if args.latest:
        from stream.scoring.toi import PERIOD_TOLERANCE

        records = latest_labels(records, PERIOD_TOLERANCE)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w") as fh:
            n = write_jsonl(records, fh)
    else:
        n = write_jsonl(records, sys.stdout)
    print(f"{n} labels written" + (f" to {args.out}" if args.out else "") + f" ({total} on the topic"
          + (f", {bad} messages that are not Labels skipped" if bad else "") + ")", file=sys.stderr)
    return 0
