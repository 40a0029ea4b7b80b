"""`skystream worker`: a supervised Faust worker (stream/worker/supervisor.py, stream/worker/app.py)."""

from __future__ import annotations

import argparse

from stream.cli.common import broker_arg, metrics_arg, metrics_port, require_broker
from stream.settings import Settings

__all__ = ["cmd_worker", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `worker` to the skystream command."""
    p = subparsers.add_parser("worker", help="run a Faust worker (preprocess and score agents)",
                       description="Consume file events, write features, score them with the registry's "
                       "champion models, and produce predictions, alerts and dead letters. Start several "
                       "with the same SKYSTREAM_APP_ID to share the partitions. The Faust worker runs as a "
                       "child process, restarted when it exits or the broker comes back without its state; "
                       "this command itself only ends on Ctrl-C or SIGTERM.")
    broker_arg(p)
    metrics_arg(p)
    p.add_argument("--loglevel", default="warning", help="Faust log level (default warning)")
    # The supervisor's child (stream/worker/supervisor.py): the Faust worker itself.
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    """The supervisor, or with --child the Faust worker it runs."""
    settings = Settings()
    broker = require_broker(args, settings)
    if args.child:
        from stream.worker.app import run_worker

        run_worker(settings, broker, metrics_port(args, settings), args.loglevel)
        return 0
    from stream.worker.supervisor import supervise_worker

    return supervise_worker(settings, broker, metrics_port(args, settings), args.loglevel, args.verbose)
