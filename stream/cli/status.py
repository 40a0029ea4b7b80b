"""`skystream status`: parse, take two snapshots of the metrics, print (see stream/ops/status.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from stream.ops.status import Sample, query_prometheus, render, scrape, summarise

__all__ = ["cmd_status", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `status` to the skystream command."""
    p = subparsers.add_parser(
        "status", help="terminal summary of a running stream: rates, latency, lag, rejects, drift, models",
        description="Summarise a running stream from its metrics. Give the workers' and watcher's metrics "
        "endpoints (--targets) or a Prometheus server that scrapes them (--prometheus).",
    )
    p.add_argument("--targets", nargs="*", default=[], metavar="HOST:PORT",
                   help="metrics endpoints to scrape directly (e.g. 127.0.0.1:9400)")
    p.add_argument("--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between the two snapshots (default 2)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    """Run `skystream status`: rates and latencies over ``--interval`` seconds, from the metrics endpoints or
    Prometheus."""
    if not args.targets and not args.prometheus:
        sys.exit("status: give --targets HOST:PORT ... or --prometheus URL")

    def snapshot() -> list[Sample]:
        """The current metric samples, from Prometheus or by scraping the targets."""
        return query_prometheus(args.prometheus) if args.prometheus else scrape(args.targets)

    before = snapshot()
    time.sleep(args.interval)
    summary = summarise(before, snapshot(), args.interval)
    print(json.dumps(summary, indent=1) if args.json else render(summary))
    return 0
