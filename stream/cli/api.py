"""`skystream api`: the REST API and the web view (stream/api) until Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses

from stream.settings import Settings

__all__ = ["cmd_api", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``api`` command and its options."""
    p = subparsers.add_parser(
        "api", help="serve the REST API and the web view (alerts, object histories, models, scoring)",
        description="Serve POST /score (a file upload, scored as `skystream score` does), GET /alerts, "
        "/objects/{id}, /models, /healthz and /openapi.json, and web pages at / (the latest alerts), "
        "/ui/objects/{id} and /ui/models, from the archive (SKYSTREAM_ARCHIVE) and the model registry "
        "(SKYSTREAM_REGISTRY). No broker is needed. Stops on Ctrl-C.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: a free port, printed)")
    p.add_argument("--archive", help="directory or s3://bucket/prefix (default: $SKYSTREAM_ARCHIVE)")
    p.add_argument("--registry", help="model registry (default: $SKYSTREAM_REGISTRY)")
    p.set_defaults(func=cmd_api)


def cmd_api(args: argparse.Namespace) -> int:
    """Run `skystream api`: serve the REST API and web view until Ctrl-C."""
    from stream.api.app import run

    settings = Settings()
    settings = dataclasses.replace(settings, archive=args.archive or settings.archive,
                                   registry=args.registry or settings.registry)
    run(settings, args.host, args.port, announce=lambda line: print(line, flush=True))
    return 0
