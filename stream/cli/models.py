"""`skystream models list | show | promote | rollback`: look after the model registry by hand.

Promotion and rollback change the registry's champion alias and then announce the change on the
models topic (a ModelUpdate record) so running workers switch without a restart.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from stream.models.announce import announce, change_champion, model_update
from stream.ops.tables import flat_metrics, key_metrics, table
from stream.settings import Settings

__all__ = ["cmd_list", "cmd_promote", "cmd_rollback", "cmd_show", "register"]

log = logging.getLogger(__name__)



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `models` to the skystream command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", default=argparse.SUPPRESS,
                        help="registry directory or s3://bucket/prefix (default: $SKYSTREAM_REGISTRY or var/registry)")
    models = subparsers.add_parser(
        "models", parents=[common], help="list, show, promote and roll back model versions in the registry",
        description="The model registry holds immutable ONNX versions per task and a champion alias that the "
        "workers serve. Promotion and rollback move the alias and announce it on the models topic.",
    )
    cmds = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    p = cmds.add_parser("list", parents=[common], help="versions of every task (or one), with the champion marked")
    p.add_argument("task", nargs="?", help="only this task")
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser("show", parents=[common], help="the metadata of a version (default: the champion)")
    p.add_argument("task")
    p.add_argument("version", nargs="?")
    p.add_argument("--json", action="store_true", help="print the whole metadata as JSON")
    p.set_defaults(func=cmd_show)

    p = cmds.add_parser("promote", parents=[common], help="make VERSION the champion of TASK and announce it")
    p.add_argument("task")
    p.add_argument("version")
    p.set_defaults(func=cmd_promote)

    p = cmds.add_parser("rollback", parents=[common], help="make the previous champion of TASK the champion again")
    p.add_argument("task")
    p.set_defaults(func=cmd_rollback)


# -- commands ------------------------------------------------------------------------------------
def _open(args: argparse.Namespace):  # noqa: ANN202 - LocalRegistry | S3Registry
    from stream.models.registry import open_registry

    return open_registry(getattr(args, "registry", None) or Settings().registry)


def _fail(message: str) -> int:
    print(f"models: {message}", file=sys.stderr)
    return 2


def cmd_list(args: argparse.Namespace) -> int:
    """Run `skystream models list`: a table of every version of every task (or one task)."""
    from stream.models.registry import RegistryError

    registry = _open(args)
    rows = []
    try:
        for task in [args.task] if args.task else registry.tasks():
            versions = registry.versions(task)
            champion = registry.champion(task) if versions else None
            for v in versions:
                meta = registry.metadata(task, v)
                rows.append([task, v, meta.get("created", "?"), "*" if v == champion else "", key_metrics(meta)])
    except RegistryError as exc:
        return _fail(str(exc))
    print(f"registry: {registry.uri}")
    if not rows:
        print("no models" + (f" for {args.task}" if args.task else ""))
        return 0 if not args.task else 1
    print(table(rows, ["TASK", "VERSION", "CREATED", "CHAMPION", "KEY METRICS"]))
    return 0


def _summary(value: Any, width: int = 100) -> str:
    """One line for a metadata value; big ones (reference distributions, ...) summarised."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) <= width:
        return text
    if isinstance(value, dict):
        return f"{{{', '.join(list(map(str, value))[:8])}{', ...' if len(value) > 8 else ''}}} ({len(text)} chars)"
    if isinstance(value, list):
        return f"[{len(value)} items]"
    return text[: width - 3] + "..."


def cmd_show(args: argparse.Namespace) -> int:
    """Run `skystream models show`: one version's metadata (default the champion) and the champion history."""
    from stream.models.registry import RegistryError

    registry = _open(args)
    try:
        champion = registry.champion(args.task)
        version = args.version or champion
        meta = registry.metadata(args.task, version)
        history = registry.history(args.task)
    except RegistryError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(meta, indent=1, sort_keys=True))
        return 0
    print(f"registry: {registry.uri}")
    print(f"{args.task} v{version}" + ("  (champion)" if version == champion else f"  (champion is v{champion})"))
    print(f"champion history: {' -> '.join(history) or '(none recorded)'}")
    skip = {"task", "version", "metrics"}
    width = max(len(k) for k in meta) if meta else 0
    for k in sorted(meta):
        if k not in skip:
            print(f"  {k.ljust(width)}  {_summary(meta[k])}")
    from stream.api.plots import model_figures

    figures = model_figures(meta)
    if figures:  # drawn from this metadata by the web view's model page (/ui/models) and training's --report-dir
        print("figures:")
        for name, (caption, _) in figures.items():
            print(f"  {name}: {caption}")
    flat = flat_metrics(meta.get("metrics", {}))
    if flat:
        print("metrics:")
        mw = max(map(len, flat))
        for k in sorted(flat):
            print(f"  {k.ljust(mw)}  {flat[k]:.6g}")
    return 0


def _change(args: argparse.Namespace, action: str) -> int:
    from stream.errors import Rejected
    from stream.models.registry import RegistryError

    registry = _open(args)
    try:
        before, version = change_champion(registry, args.task, action, getattr(args, "version", None))
        record = model_update(registry, args.task, version, action)
    except (RegistryError, Rejected) as exc:
        return _fail(str(exc))
    print(f"{args.task}: champion is now v{version}" + (f" (was v{before})" if before else ""))
    if announce(Settings(), record):
        print(f"announced on the models topic: {action} {args.task} v{version}")
    else:
        print("not announced (no broker configured): workers load the champion when they start")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Run `skystream models promote`: make a version the champion of its task."""
    return _change(args, "promote")


def cmd_rollback(args: argparse.Namespace) -> int:
    """Run `skystream models rollback`: make the previous champion the champion again."""
    return _change(args, "rollback")
