"""`skystream dashboard-png`: parse, render the dashboard panels to a PNG, print (see stream/ops/dashboard_png.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.ops.dashboard_png import PrometheusError, parse_duration, render

__all__ = ["cmd_dashboard_png", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dashboard-png` to the skystream command."""
    p = subparsers.add_parser(
        "dashboard-png", help="render the dashboard's main panels from Prometheus to a PNG (no Grafana needed)",
        description="Query a Prometheus that scrapes the stream (same PromQL as the Grafana dashboards) and "
        "draw throughput, latency, lag, dead letters, drift and model versions over a time range into one PNG.",
    )
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", metavar="URL",
                   help="Prometheus base URL (default http://127.0.0.1:9090)")
    p.add_argument("--range", dest="range_", default="1h", metavar="DURATION",
                   help="time range ending now (or at --end): 90s, 15m, 3h, 2d (default 1h)")
    p.add_argument("--end", type=float, default=None, metavar="UNIX_TIME", help="end of the range (default now)")
    p.add_argument("--task", default=".*",
                   help="regular expression of the tasks the per-task panels show (default all)")
    p.add_argument("-o", "--output", type=Path, default=Path("skystream-dashboard.png"),
                   help="PNG file to write (default skystream-dashboard.png)")
    p.set_defaults(func=cmd_dashboard_png)


def cmd_dashboard_png(args: argparse.Namespace) -> int:
    """Run `skystream dashboard-png`: render the dashboard panels from Prometheus to a PNG."""
    try:
        summary = render(args.prometheus, args.output, range_seconds=parse_duration(args.range_), end=args.end,
                         task=args.task)
    except (OSError, PrometheusError, ValueError) as exc:
        sys.exit(f"dashboard-png: {exc}")
    empty = [title for title, n in summary.items() if not n]
    print(f"wrote {args.output} ({len(summary) - len(empty)} of {len(summary)} panels with data"
          + (f"; no data: {', '.join(empty)}" if empty else "") + ")")
    return 0
