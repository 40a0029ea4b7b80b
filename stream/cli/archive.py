"""`skystream archive` (keep every result as Parquet) and `skystream history OBJECT` (read it back)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.cli.common import broker_arg, require_broker
from stream.settings import Settings
from stream.stars import sector_label

__all__ = ["cmd_archive", "cmd_history", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``archive`` and ``history`` commands and their options."""
    p = subparsers.add_parser(
        "archive", help="append every prediction, alert and dead letter to the Parquet archive",
        description="Consume the predictions, alerts and dead-letter topics in the consumer group "
        "<SKYSTREAM_APP_ID>-archive and write them as Parquet files partitioned by kind (stage for dead "
        "letters) and day, under SKYSTREAM_ARCHIVE (a directory or s3://bucket/prefix; default "
        "<SKYSTREAM_STATE_DIR>/archive). Offsets are committed after each file is written. Runs until "
        "Ctrl-C or SIGTERM, then writes what it holds.")
    broker_arg(p)
    p.add_argument("--archive", help="directory or s3://bucket/prefix (default: $SKYSTREAM_ARCHIVE)")
    p.add_argument("--once", action="store_true", help="archive up to the end of the topics, then exit")
    p.add_argument("--batch-rows", type=int, default=5000, help="write a file at this many rows (default 5000)")
    p.add_argument("--batch-seconds", type=float, default=30.0,
                   help="or when the oldest buffered row is this old (default 30)")
    p.set_defaults(func=cmd_archive)

    p = subparsers.add_parser(
        "history", help="every archived prediction for a TIC id or asteroid, across sectors and models",
        description="Read the archive (no broker needed) and list every prediction made for OBJECT: "
        "'TIC 25155310' or '25155310' for a star, '4' or '1996 UK' for an asteroid (a bare number "
        "matches both). Duplicate deliveries are shown once.")
    p.add_argument("object", help="TIC id or asteroid number / provisional designation")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output (default table)")
    p.add_argument("--archive", help="directory or s3://bucket/prefix (default: $SKYSTREAM_ARCHIVE)")
    p.add_argument("--signals", action="store_true",
                   help="a star's transit signals, one line each, sector by sector (table format)")
    p.add_argument("--figures", metavar="DIR", type=Path,
                   help="also draw each transit signal folded (the diagnostic figure) from its light-curve file, "
                        "which must still be under $SKYSTREAM_SOURCES, into DIR")
    p.set_defaults(func=cmd_history)


def cmd_archive(args: argparse.Namespace) -> int:
    """Run `skystream archive`: write predictions, alerts and dead letters to the Parquet archive."""
    from stream.archive.writer import Archiver

    settings = Settings()
    broker = require_broker(args, settings)
    settings = dataclasses.replace(settings, broker=broker, archive=args.archive or settings.archive)
    archiver = Archiver(settings, max_rows=args.batch_rows, max_seconds=args.batch_seconds)
    print(f"archiving to {archiver.uri} (group {archiver.group})", file=sys.stderr, flush=True)

    async def main() -> None:
        """Create the topics, then archive until SIGINT/SIGTERM (or the end of the topics with --once)."""
        from stream.runtime.kafka import ensure_topics
        from stream.runtime.signals import stop_on_signals

        await ensure_topics(broker, settings)
        await archiver.run(stop_on_signals(), once=args.once)

    asyncio.run(main())
    stats = archiver.stats
    print(f"archived {stats.rows} records in {len(stats.files)} files"
          + (f"; {stats.undecodable} undecodable messages skipped" if stats.undecodable else ""),
          file=sys.stderr, flush=True)
    return 0


TABLE = "{:<14} {:<10} {:>6}  {:<12} {:<44} {:<20} {}"


def _answer(r: dict[str, Any]) -> str:
    """The prediction in a few words: the best transit signal, or the spectral class."""
    if r["kind"] == "lightcurve":
        if not r["signals"]:
            return "no signal"
        s = max(r["signals"], key=lambda s: s["planet_probability"])
        return (f"P={s['period_days']:.4f}d p={s['planet_probability']:.2f}"
                + (f" {s['known_toi']}" if s["known_toi"] else ""))
    prob = max((r["probabilities"] or {}).values(), default=0.0)
    return f"{r['main_group']} p={prob:.2f}" + (f" bus {r['bus_class']}" if r["bus_class"] else "")


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [TABLE.format("object", "kind", "sector", "observed", "answer", "model", "file"), "-" * 130]
    for r in rows:
        # Spectra carry no observation date (SMASS files have none): show when it was scored instead.
        day = (r["observation_start"] or "")[:10] or datetime.fromtimestamp(
            r["published_at_ms"] / 1000, UTC).strftime("(%Y-%m-%d)")
        lines.append(TABLE.format(r["object"][:14], r["kind"], sector_label(r),
                                  day, _answer(r)[:44], f"{r['model']} v{r['model_version']}"[:20],
                                  Path(r["source"]).name))
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """JSON-ready: bytes as base64 (none in predictions today, but every column is kept)."""
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


def cmd_history(args: argparse.Namespace) -> int:
    """Run `skystream history`: print an object's archived predictions as a table, JSON or CSV."""
    from stream.archive.query import history

    settings = Settings()
    rows = history(args.object, uri=args.archive, settings=settings)
    if args.format == "json":
        print(json.dumps(rows, default=_plain, indent=1))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["object"])
        writer.writeheader()
        for r in rows:  # nested values (probabilities, signals) as JSON in their cell
            writer.writerow({k: json.dumps(v, default=_plain) if isinstance(v, dict | list) else _plain(v)
                             for k, v in r.items()})
    else:
        if not rows:
            print(f"no archived predictions for {args.object!r}", file=sys.stderr)
            return 1
        print(_signals_table(rows) if args.signals else _table(rows))
    if args.figures:
        return _write_figures(rows, args.figures, settings)
    return 0


SIGNALS = "{:<14} {:>6}  {:>3}  {:>10} {:>11} {:>6} {:>8} {:>6} {:>3} {:>6}  {:<24} {}"


def _signals_table(rows: list[dict[str, Any]]) -> str:
    """One line per transit signal of the light-curve predictions, in sector order."""
    lines = [SIGNALS.format("object", "sector", "#", "period(d)", "epoch(BTJD)", "dur(h)", "depth", "SNR", "n",
                            "P(pl)", "TOI", "file"), "-" * 130]
    for r in rows:
        if r["kind"] != "lightcurve":
            continue
        if not r["signals"]:
            lines.append(SIGNALS.format(r["object"][:14], sector_label(r), "", "no signal", "", "", "", "", "", "",
                                        "", Path(r["source"]).name))
        for i, s in enumerate(r["signals"] or []):
            lines.append(SIGNALS.format(
                r["object"][:14], sector_label(r), i + 1, f"{s['period_days']:.5f}", f"{s['epoch_btjd']:.4f}",
                f"{s['duration_hours']:.2f}", f"{s['depth_ppm']:.0f}", f"{s['snr']:.1f}", s["n_transits"],
                f"{s['planet_probability']:.2f}", (s["known_toi"] or "new")[:24], Path(r["source"]).name))
    return "\n".join(lines)


def _write_figures(rows: list[dict[str, Any]], folder: Path, settings: Settings) -> int:
    """Each transit signal's diagnostic figure as DIR/<object>_s<sector>_<n>.png; 1 when some could not be drawn."""
    from stream.alerts.figures import signal_png
    from stream.errors import Rejected

    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for r in (r for r in rows if r["kind"] == "lightcurve"):
        for i in range(len(r["signals"] or [])):
            sectors = "-".join(f"{n:02d}" for n in r.get("sectors") or [r["sector"] or 0])
            path = folder / f"{r['object'].replace(' ', '')}_s{sectors}_{i + 1}_v{r['model_version']}.png"
            try:
                path.write_bytes(signal_png(r, i, settings))
                print(f"wrote {path}", file=sys.stderr)
            except Rejected as exc:
                failed += 1
                print(f"cannot draw {r['object']} sector {sector_label(r)} signal {i + 1}: {exc}", file=sys.stderr)
    return 1 if failed else 0
