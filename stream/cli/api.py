"""`skystream api`: the REST API and the web view (stream/api) until Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from stream.settings import Settings

__all__ = ["cmd_api", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``api`` command and its options."""
    p = subparsers.add_parser(
        "api", help="serve the REST API and the web view (alerts, object histories, models, scoring)",
        description="Serve POST /score (a file upload, scored as `skystream score` does), GET /alerts, "
        "/objects/{id}, /models, /healthz and /openapi.json, and web pages at / (the latest alerts), "
        "/ui/objects/{id} and /ui/models, from the archive (SKYSTREAM_ARCHIVE) and the model registry "
        "(SKYSTREAM_REGISTRY). No broker is needed. Stops on Ctrl-C. POST /score needs "
        "'Authorization: Bearer <token>' with the token of SKYSTREAM_API_TOKEN or --token-file (without one, "
        "scoring is refused and the server only listens on loopback); --protect-reads (or "
        "SKYSTREAM_API_PROTECT_READS=1) makes every read need it too, but /healthz and /openapi.json.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "any other needs a token)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: a free port, printed)")
    p.add_argument("--archive", help="directory or s3://bucket/prefix (default: $SKYSTREAM_ARCHIVE)")
    p.add_argument("--registry", help="model registry (default: $SKYSTREAM_REGISTRY)")
    # A file, not the token itself: a command line is visible to every user of the machine (ps).
    p.add_argument("--token-file", type=Path, help="file holding the bearer token (default: $SKYSTREAM_API_TOKEN)")
    p.add_argument("--protect-reads", action="store_true", default=None,
                   help="the reads and web pages need the token too (default: $SKYSTREAM_API_PROTECT_READS)")
    p.set_defaults(func=cmd_api)


def _read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped); ValueError without naming its content."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the token file {str(path)!r} is not UTF-8 text") from None
    if not token:
        raise ValueError(f"the token file {str(path)!r} is empty")
    return token


def cmd_api(args: argparse.Namespace) -> int:
    """Run `skystream api`: serve the REST API and web view until Ctrl-C (2 when the access settings are refused)."""
    from stream.api.app import check_access, run

    settings = Settings()
    try:
        token = _read_token(args.token_file) if args.token_file else settings.api_token
        settings = dataclasses.replace(
            settings, archive=args.archive or settings.archive, registry=args.registry or settings.registry,
            api_token=token, api_protect_reads=settings.api_protect_reads if args.protect_reads is None else True)
        check_access(settings, args.host)
    except ValueError as exc:
        print(f"skystream api: {exc}", file=sys.stderr)
        return 2
    run(settings, args.host, args.port, announce=lambda line: print(line, flush=True))
    return 0
