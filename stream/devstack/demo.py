"""`skystream demo`: the main job on one machine, from files to a printed summary."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from stream.archive.store import archive_uri
from stream.devstack.inputs import demo_inputs
from stream.devstack.localstack import Collected, LocalStack, collect
from stream.ingest.sources import DirectorySource
from stream.ingest.watcher import Ledger, Watcher, ledger_path
from stream.runtime.kafka import bootstrap_servers, client_kwargs
from stream.settings import Settings

__all__ = ["run_demo"]

ROW = "{:<14} {:<10} {:<6} {:>5}  {:<5} {:<16} {:>9}"


def _row(p: dict[str, Any], latency_s: float) -> str:
    if p["kind"] == "spectrum":
        prob = max(p["probabilities"].values())
        return ROW.format(p["object"][:14], "spectrum", p["main_group"], f"{prob:.2f}", p["bus_class"] or "",
                          f"{p['model']} v{p['model_version']}", f"{latency_s * 1000:.0f} ms")
    sig = max(p["signals"] or [{}], key=lambda s: s.get("planet_probability", 0))
    label = f"P={sig['period_days']:.3f}d" if sig else "no signal"
    prob = f"{sig['planet_probability']:.2f}" if sig else ""
    return ROW.format(p["object"][:14], "lightcurve", label[:6], prob, "", f"{p['model']} v{p['model_version']}",
                      f"{latency_s * 1000:.0f} ms")


def run_demo(args: argparse.Namespace) -> int:
    """Run `skystream demo`: stream demo inputs through an embedded broker and a worker, printing each result."""
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings = Settings()
    workdir = Path("var/demo") / time.strftime("%Y%m%d-%H%M%S")
    if args.source:
        if not args.source.is_dir():
            raise SystemExit(f"demo: --source {args.source} is not a directory")
        inputs, origin = args.source.resolve(), f"files under {args.source.resolve()}"
    else:
        inputs, origin = demo_inputs(workdir, args.limit, settings)
    print(f"inputs: {origin}")
    broker = args.broker or settings.broker
    # The state (and so the archive) lives in SKYSTREAM_STATE_DIR, so `skystream alerts --archive` and
    # `skystream history` find this run's results afterwards with the same settings; the run's own
    # inputs, logs and watcher ledger stay in its work directory.
    engine = getattr(args, "engine", "tansu")
    started = ("Apache Kafka on loopback (durable, its log in the work directory)" if engine == "kafka"
               else "embedded tansu on loopback (in-memory)")
    print(f"broker: {broker or started}; workers: {args.workers}; "
          f"state: {settings.state_dir}; inputs and logs: {workdir}", flush=True)
    with LocalStack(state_dir=settings.state_dir, log_dir=workdir / "logs", broker=broker,
                    registry=settings.registry, partitions=settings.partitions, archive=settings.archive,
                    sources=str(Path(inputs).resolve()), engine=engine, broker_dir=workdir / "kafka") as stack:
        for _ in range(args.workers):
            stack.start_worker()
        stack.start_archiver()
        print(f"workers ready in {stack.wait_ready():.1f} s (joined the group, own all partitions)", flush=True)
        out, stats = asyncio.run(_stream(stack, inputs, args, workdir))
        print("stopping workers, archiver and broker...", flush=True)
    _summary(out, stats)
    archive = archive_uri(stack.settings())
    _archive_hint(out, archive)
    if getattr(args, "serve", None) is not None:
        _serve(settings, archive, args.serve)
    return 0 if stats["complete"] else 1


async def _stream(stack: LocalStack, inputs: Path, args: argparse.Namespace,
                  workdir: Path) -> tuple[Collected, dict[str, Any]]:
    settings = stack.settings()
    source = DirectorySource(inputs, settle_seconds=0.5)
    ledger = Ledger(ledger_path(workdir, source))  # per run: streaming the same --source again re-streams it
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(stack.broker), acks="all", linger_ms=5,
                                **client_kwargs(settings))
    await producer.start()
    watcher = Watcher(source, lambda t, k, v: producer.send(t, v, key=k), ledger)
    stats: dict[str, Any] = {"expected": 0, "t0": time.time(), "complete": False}
    seen: set[str] = set()
    if not args.quiet:
        print(ROW.format("object", "kind", "class", "p", "bus", "model", "latency"))
        print("-" * 75, flush=True)

    def on_message(name: str, rec: dict[str, Any]) -> None:
        """Print each new prediction or dead letter (once per file)."""
        key = rec.get("file_id") or rec.get("uri") or ""
        if name == "Prediction" and key not in seen:
            seen.add(key)
            if not args.quiet:
                print(_row(rec, time.time() - rec["detected_at_ms"] / 1000), flush=True)
        elif name == "Rejected" and key not in seen:
            seen.add(key)
            if not args.quiet:
                print(f"REJECTED {Path(rec['uri'] or '?').name}: [{rec['stage']}/{rec['reason']}] {rec['error']}",
                      flush=True)
        elif name == "Alert" and not args.quiet:
            print(f"ALERT    {rec['summary']}", flush=True)
        if args.quiet and len(seen) % 200 == 0:
            print(f"  {len(seen)}/{stats['expected']} done", flush=True)

    async def feed() -> None:
        """Poll the watcher until the input directory has been quiet for two polls."""
        # Poll like `skystream watch` does until the directory has been quiet for two polls, so
        # files still being written (or just settling) are streamed too.
        quiet = 0
        while quiet < 2:
            res = await watcher.poll()
            stats["expected"] += res.published + res.rejected
            quiet = quiet + 1 if not (res.published or res.rejected) else 0
            await asyncio.sleep(0.5)
        stats["fed_at"] = time.time()

    feeding = asyncio.create_task(feed())

    def done(_: Collected) -> bool:
        """Whether feeding is over and every file it published or rejected has an outcome."""
        return feeding.done() and len(seen) >= stats["expected"]

    out = await collect(stack.broker, done, args.timeout, on_message, settings)
    await feeding
    stats["complete"] = len(seen) >= stats["expected"]
    stats["t1"] = time.time()
    await producer.stop()
    ledger.close()
    return out, stats


def _summary(out: Collected, stats: dict[str, Any]) -> None:
    preds = {p["file_id"]: p for p in out.predictions}
    lat = np.array([out.received_at[p["prediction_id"]] - p["detected_at_ms"] / 1000 for p in preds.values()])
    rejected = {(r["file_id"] or r["uri"]): r for r in out.rejected}
    groups = Counter(p["main_group"] or "lightcurve" for p in preds.values())
    reasons = Counter(f"{r['stage']}/{r['reason']}" for r in rejected.values())
    elapsed = max(1e-9, stats["t1"] - stats["t0"])
    print("\nsummary")
    print(f"  files in: {stats['expected']}   predictions: {len(preds)}   rejected: {len(rejected)}   "
          f"alerts: {len({a['alert_id'] for a in out.alerts})}")
    if groups:
        print("  predicted: " + ", ".join(f"{k} {v}" for k, v in groups.most_common()))
    if reasons:
        print("  rejected: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    print(f"  wall time {elapsed:.1f} s from the first poll to the last result: "
          f"{len(preds) / elapsed:.1f} predictions/s")
    if lat.size:
        print(f"  latency file seen -> prediction received: p50 {np.percentile(lat, 50) * 1000:.0f} ms, "
              f"p99 {np.percentile(lat, 99) * 1000:.0f} ms")
    models = Counter(f"{p['model']} v{p['model_version']}" for p in preds.values())
    print("  models: " + ", ".join(f"{k} ({v})" for k, v in models.items()))
    if not stats["complete"]:
        print(f"  INCOMPLETE: {stats['expected'] - len(preds) - len(rejected)} files without an outcome "
              "before the timeout")


def _archive_hint(out: Collected, uri: str) -> None:
    """Where the results were archived, and a command that shows one object's history from it."""
    if not out.predictions:
        return
    # The object seen in the most files (a star observed in several sectors, when there is one).
    files = Counter((p["object"], p["file_id"]) for p in out.predictions)
    example = Counter(obj for obj, _ in files).most_common(1)[0][0]
    print(f"\narchive: {uri} (Parquet; readable now the stream has stopped)")
    print(f"  skystream history --archive {shlex.quote(uri)} {shlex.quote(example)}")
    print(f"  SKYSTREAM_ARCHIVE={shlex.quote(uri)} skystream alerts --archive       # the run's alerts")
    print(f"  skystream api --archive {shlex.quote(uri)}    # REST API and web view on http://127.0.0.1:8080/ "
          "(or run the demo with --serve)")


def _serve(settings: Settings, uri: str, port: int) -> None:
    """Keep the API and web view of the run's archive up until Ctrl-C (the stream itself has stopped)."""
    import dataclasses

    from stream.api.app import run

    print("", flush=True)
    run(dataclasses.replace(settings, archive=uri), "127.0.0.1", port, announce=lambda line: print(line, flush=True))
