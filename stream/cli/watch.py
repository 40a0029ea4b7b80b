"""`skystream watch`: publish a file event for every complete new file (stream/ingest/service.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from stream.cli.common import broker_arg, metrics_arg, metrics_port, require_broker
from stream.settings import Settings

log = logging.getLogger("skystream")

__all__ = ["cmd_watch", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `watch` to the skystream command."""
    p = subparsers.add_parser("watch", help="publish a file event for every complete new file in a directory",
                       description="Watch SOURCE (a directory tree, or s3://bucket/prefix) and publish one "
                       "file event per complete file with new content, including files already there. "
                       "Files that are neither spectra nor light curves go to the dead-letter topic.")
    p.add_argument("source", nargs="?",
                   help="directory or s3://bucket/prefix (default: $SKYSTREAM_WATCH_SOURCE)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="a file counts as complete once unchanged for this many seconds (default 1)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    broker_arg(p)
    metrics_arg(p)
    p.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    """Open the source, serve /metrics, run the watcher until Ctrl-C (or one pass with --once)."""
    from stream.ingest.service import open_source, run_watch
    from stream.runtime import metrics

    settings = Settings()
    broker = require_broker(args, settings)
    source_uri = args.source or settings.watch_source
    if not source_uri:
        sys.exit("watch: give a directory or s3://bucket/prefix (or set SKYSTREAM_WATCH_SOURCE)")
    try:
        source = open_source(source_uri, settings, args.settle)
    except ValueError as exc:
        sys.exit(f"watch: {exc}")
    port = metrics.serve(metrics_port(args, settings))
    log.info("watching %s; metrics on :%d", source.name, port)

    def report(res) -> None:  # noqa: ANN001 - PollResult
        """Print a poll's counts when it published or rejected anything."""
        if res.published or res.rejected:
            print(f"published {res.published}, rejected {res.rejected}", file=sys.stderr, flush=True)

    asyncio.run(run_watch(settings, broker, source, interval=args.interval, once=args.once, report=report))
    return 0
