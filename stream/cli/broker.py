"""`skystream broker`: a broker on this machine until Ctrl-C: Apache Kafka (durable) or tansu (in memory)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from stream.settings import Settings

__all__ = ["cmd_broker", "register"]

ENGINES = ("auto", "kafka", "tansu")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `broker` to the skystream command."""
    p = subparsers.add_parser(
        "broker", help="run a broker on this machine until Ctrl-C (Apache Kafka, or the in-memory tansu)",
        description="Start a Kafka broker on loopback, create the SkyStream topics with their retention, print "
        "the bootstrap address, and stop cleanly on Ctrl-C or SIGTERM. --engine kafka: a single-node Apache "
        "Kafka (KRaft) whose log lives in $SKYSTREAM_STATE_DIR/kafka: a restart, even after kill -9, keeps "
        "every acknowledged message and committed offset (needs Java 17; the jars are fetched by "
        "deploy/kafka/fetch.sh). --engine tansu: the embedded in-memory broker, zero-install, for demos and "
        "quick tests: everything is lost when it stops. auto (default): kafka where Java and the Kafka jars "
        "can be had, else tansu. docs/kafka.md.")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="kafka, tansu or auto (default)")
    p.add_argument("--port", type=int, default=None, help="port (default: 9092 if free, else any free port; "
                   "a Kafka state directory keeps the port it first got)")
    p.add_argument("--state-dir", default=None, help="where Kafka keeps its log (default: $SKYSTREAM_STATE_DIR/kafka)")
    p.set_defaults(func=cmd_broker)


def _default_port() -> int:
    from stream.runtime.embedded_broker import free_port

    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 9092))
        return 9092
    except OSError:
        return free_port()


def choose_engine(requested: str, settings: Settings) -> tuple[str, str]:
    """The engine to run and why: ``requested`` unless auto, where Kafka needs Java and its jars."""
    if requested != "auto":
        return requested, "asked for"
    from stream.runtime.local_kafka import LocalKafka, kafka_classpath

    if not LocalKafka.java_available():
        return "tansu", "no Java on this machine, so nothing is kept when it stops"
    try:
        kafka_classpath(settings)
    except Exception as exc:  # no jars and no way to fetch them
        return "tansu", f"no Kafka jars ({exc}), so nothing is kept when it stops"
    return "kafka", "Java and the Kafka jars are here"


def cmd_broker(args: argparse.Namespace) -> int:
    """Start the broker, create the topics, wait for Ctrl-C or SIGTERM."""
    from stream.runtime.embedded_broker import BrokerError, EmbeddedBroker
    from stream.runtime.kafka import ensure_topics
    from stream.runtime.local_kafka import LocalKafka
    from stream.runtime.signals import wait_for_stop_signal

    settings = Settings()
    engine, why = choose_engine(args.engine, settings)
    try:
        if engine == "kafka":
            state = settings.state_dir / "kafka" if args.state_dir is None else args.state_dir
            broker = LocalKafka(state, port=args.port or _default_port(), settings=settings)
            described = f"Apache Kafka (KRaft, durable; log in {broker.state_dir})"

            def alive() -> bool:
                return all(node.running for node in broker.nodes)
        else:
            broker = EmbeddedBroker(port=args.port or _default_port())
            described = "tansu (in memory: everything is lost when it stops)"

            def alive() -> bool:
                return broker.proc is not None and broker.proc.poll() is None
        with broker:
            asyncio.run(ensure_topics(broker.bootstrap, settings))
            print(f"broker: {described} on {broker.bootstrap} ({engine}: {why}); topics created.")
            print(f"  export SKYSTREAM_BROKER={broker.bootstrap} SKYSTREAM_BROKER_ENGINE={engine}")
            print("Ctrl-C to stop.", flush=True)
            if wait_for_stop_signal(alive) is None:
                print(f"skystream broker: the {engine} broker process exited on its own", file=sys.stderr)
                return 1
    except BrokerError as exc:
        print(f"skystream broker: {exc}", file=sys.stderr)
        return 1
    print("broker stopped.")
    return 0
