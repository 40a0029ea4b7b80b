"""`skystream demo`: the whole stream on this machine (stream/devstack/demo.py does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.cli.common import broker_arg

__all__ = ["cmd_demo", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo` to the skystream command."""
    p = subparsers.add_parser("demo", help="run the whole stream on this machine and print predictions as they arrive",
                       description="Start a local broker (tansu, or Apache Kafka with --engine kafka; unless "
                       "--broker/SKYSTREAM_BROKER is set), the "
                       "workers and the watcher; feed the inputs; print predictions in a table; end with a "
                       "summary (counts, rejects, throughput, latency) and a clean shutdown.")
    p.add_argument("--source", type=Path,
                   help="directory of input files to stream (default: the SMASSII archive from ../shared/data "
                   "or the public archive; else simulated SMASS-format spectra, labelled as such)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--limit", type=int, default=None, help="stream at most this many files of the default inputs")
    p.add_argument("--timeout", type=float, default=600, help="give up waiting for results after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no row per prediction, just progress and the summary")
    p.add_argument("--serve", nargs="?", const=8080, type=int, metavar="PORT",
                   help="after the stream, serve the API and web view of its archive on 127.0.0.1:PORT "
                   "(default 8080) until Ctrl-C")
    p.add_argument("--engine", choices=("tansu", "kafka"), default="tansu",
                   help="the broker started when none is given: tansu (default: in memory, starts in "
                   "milliseconds, nothing to install) or kafka (Apache Kafka, durable, needs Java 17; its log "
                   "in the run's work directory)")
    broker_arg(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from stream.devstack.demo import run_demo

    return run_demo(args)
