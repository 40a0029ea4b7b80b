"""`skystream`: the command line. Run `skystream --help` for the list of commands."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from stream.settings import environment_help

__all__ = ["build_parser", "main"]

log = logging.getLogger("skystream")

EPILOG = environment_help() + """
quick start:
  skystream demo                       stream the bundled/real inputs end to end and print predictions
  skystream score a000001.[2] x.fits   score files offline, one JSON line each
"""


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

    # The core commands, always importable; then the training plugin and the other command groups.
    for module in CORE_MODULES:
        __import__(module, fromlist=["register"]).register(sub)
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


CORE_MODULES = ("stream.cli.demo", "stream.cli.broker", "stream.cli.watch", "stream.cli.worker", "stream.cli.score")
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
        """Report that the command cannot run here and why; exit status 2."""
        print(f"skystream {name}: unavailable here: {reason}", file=sys.stderr)
        return 2

    p.set_defaults(func=fail)

def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's), set up logging, run the command; its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
