"""`skystream alerts`: receive alerts from a filter topic or with ad-hoc filters, print or save them
(the consuming itself is stream/alerts/client.py)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import schemas
from stream.settings import TOPICS, Settings

__all__ = ["adhoc_filter", "cmd_alerts", "register"]

# Columns of --format table; csv and json carry every field (figures as their saved path or URI).
_TABLE = ("alerted_at", "kind", "object", "reason", "score", "summary")
_SUMMARY_WIDTH = 70


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``alerts`` command and its options."""
    p = subparsers.add_parser(
        "alerts", help="receive alerts: a filter's topic or ad-hoc filters; print as table, JSON or CSV",
        description="Read alerts from skystream.alerts (or a filter's topic skystream.alerts.NAME with --filter), "
        "keep those that pass the ad-hoc options, drop repeated copies (same alert_id) and print them. Without "
        "--follow it reads to the end and exits; it starts at the end of the topic unless --from-beginning, "
        "--since or a --group with committed offsets says otherwise. Filters: docs/filters.md.",
    )
    p.add_argument("--filter", metavar="NAME", help="read the topic of this filter (skystream.alerts.NAME)")
    p.add_argument("--kind", action="append", help="only this kind (lightcurve, spectrum; repeatable)")
    p.add_argument("--reason", action="append", help="only this reason, e.g. planet-candidate (repeatable)")
    p.add_argument("--min-score", type=float, help="only alerts with score >= this")
    p.add_argument("--object", action="append", help="only this object, e.g. 'TIC 25155310' (repeatable)")
    p.add_argument("--watchlist", type=Path, metavar="FILE",
                   help="only these targets: a file of TIC ids ('TIC 123' or '123') and/or asteroids "
                   "('a:4', 'a:1999 AB1'), one per line")
    p.add_argument("--cone", nargs=3, type=float, metavar=("RA", "DEC", "RADIUS_DEG"),
                   help="only targets within RADIUS_DEG of RA, DEC (ICRS degrees)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest retained alert")
    start.add_argument("--since", metavar="DURATION", help="start this long ago, e.g. 30m, 2h, 3d")
    p.add_argument("--follow", action="store_true", help="keep waiting for new alerts (Ctrl-C to stop)")
    p.add_argument("--group", metavar="NAME",
                   help="durable position: resume where the last run with this NAME stopped (committed offsets)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output (default table)")
    p.add_argument("--save-figures", type=Path, metavar="DIR", help="write each alert's diagnostic figure here")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N alerts")
    p.add_argument("--archive", action="store_true",
                   help="read the alert archive (Parquet, stream.archive) instead of Kafka, with the same filters")
    p.add_argument("--broker", help="Kafka bootstrap servers (default: $SKYSTREAM_BROKER)")
    p.set_defaults(func=cmd_alerts)


def _watchlist_spec(path: Path) -> dict[str, Any]:
    """A --watchlist file -> the watch condition: 'a:' marks an asteroid, anything else is a TIC id."""
    tics, asteroids = [], []
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry.lower().startswith("a:"):
            asteroids.append(entry[2:].strip())
        elif entry:
            tics.append(entry)
    return {k: v for k, v in (("tic_ids", tics), ("asteroids", asteroids)) if v}


def adhoc_filter(args: argparse.Namespace) -> Any:
    """The ad-hoc options as a filter (the same language as the filters file), or None."""
    from stream.alerts.filters import parse_filter

    spec: dict[str, Any] = {}
    for key in ("kind", "reason", "object"):
        if getattr(args, key):
            spec[key] = getattr(args, key)
    if args.min_score is not None:
        spec["min"] = {"score": args.min_score}
    if args.watchlist:
        spec["watch"] = _watchlist_spec(args.watchlist)
    if args.cone:
        spec["cone"] = dict(zip(("ra", "dec", "radius_deg"), args.cone, strict=True))
    return parse_filter("command-line", spec) if spec else None


def _row(alert: dict[str, Any], figure: str | None) -> dict[str, Any]:
    row = {k: v for k, v in alert.items() if k != "figure_png"}
    row["figure"] = figure or alert.get("figure_uri")
    return row


class _Printer:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.csv: csv.DictWriter | None = None

    def header(self) -> None:
        """Print the table's column header (other formats have none, or their own)."""
        if self.fmt == "table":
            print("  ".join(f"{c:<24}" if c == "alerted_at" else c for c in _TABLE), flush=True)

    def print(self, row: dict[str, Any]) -> None:
        """Print one alert row in the chosen format (table, JSON or CSV)."""
        if self.fmt == "json":
            print(json.dumps(row), flush=True)
        elif self.fmt == "csv":
            if self.csv is None:
                fields = [f["name"] for f in schemas.schema_json("Alert")["fields"] if f["name"] != "figure_png"]
                self.csv = csv.DictWriter(sys.stdout, [*fields, "figure"], extrasaction="ignore")
                self.csv.writeheader()
            self.csv.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
            sys.stdout.flush()
        else:
            summary = row["summary"] if len(row["summary"]) <= _SUMMARY_WIDTH else row["summary"][:67] + "..."
            print(f"{row['alerted_at'] or '-':<24}  {row['kind']}  {row['object']}  {row['reason']}  "
                  f"{row['score']:.3f}  {summary}", flush=True)


def cmd_alerts(args: argparse.Namespace) -> int:
    """Run `skystream alerts`: print the alerts read from the topic that pass the filters."""
    from stream.alerts.client import AlertClientError, archived_alerts, parse_duration, save_figure, subscribe
    from stream.alerts.filters import FilterError, check_name, topic_for

    settings = Settings()
    settings = dataclasses.replace(settings, broker=args.broker or settings.broker)
    try:
        where = adhoc_filter(args)
        since = parse_duration(args.since) if args.since else None
        topic = topic_for(check_name(args.filter)) if args.filter else TOPICS["alerts"]
    except (FilterError, ValueError, OSError) as exc:
        sys.exit(f"alerts: {exc}")
    printer = _Printer(args.format)
    printer.header()
    count = 0

    def emit(alert: dict[str, Any]) -> None:
        """Save the alert's figure if asked, print its row and count it."""
        nonlocal count
        figure = save_figure(alert, args.save_figures) if args.save_figures else None
        printer.print(_row(alert, figure))
        count += 1

    async def main() -> None:
        """Print every alert the subscription yields."""
        async for alert in subscribe(settings, topic=topic, where=where, from_beginning=args.from_beginning,
                                     since_seconds=since, follow=args.follow, group=args.group, limit=args.limit):
            emit(alert)

    try:
        if args.archive:
            for row in archived_alerts(settings, where, since):
                emit(dict(row))
                if args.limit and count >= args.limit:
                    break
        else:
            asyncio.run(main())
    except AlertClientError as exc:
        sys.exit(f"alerts: {exc}")
    except KeyboardInterrupt:
        pass
    if count == 0 and not (args.from_beginning or args.since or args.group or args.archive):
        print("alerts: none read; reading starts at the end of the topic: add --from-beginning, --since 2h "
              "or --follow", file=sys.stderr)
    return 0
