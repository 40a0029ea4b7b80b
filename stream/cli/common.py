"""Arguments and checks that several `skystream` commands share."""

from __future__ import annotations

import argparse
import sys

from stream.settings import Settings

__all__ = ["broker_arg", "metrics_arg", "metrics_port", "require_broker"]


def broker_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--broker`` (default: $SKYSTREAM_BROKER)."""
    p.add_argument("--broker", help="Kafka bootstrap servers (default: $SKYSTREAM_BROKER)")


def metrics_arg(p: argparse.ArgumentParser, default: int | None = None) -> None:
    """Add ``--metrics-port``."""
    p.add_argument("--metrics-port", type=int, default=default,
                   help="port for Prometheus /metrics (default: $SKYSTREAM_METRICS_PORT or a free port)")


def require_broker(args: argparse.Namespace, settings: Settings) -> str:
    """The broker from ``--broker`` or the settings; exit with a hint when there is none."""
    broker = args.broker or settings.broker
    if not broker:
        sys.exit("no broker configured: set SKYSTREAM_BROKER or --broker "
                 "(or run `skystream broker` in another terminal, or `skystream demo` for everything at once)")
    return broker


def metrics_port(args: argparse.Namespace, settings: Settings) -> int:
    """The /metrics port from ``--metrics-port`` or the settings (0: a free port)."""
    return args.metrics_port if args.metrics_port is not None else settings.metrics_port
