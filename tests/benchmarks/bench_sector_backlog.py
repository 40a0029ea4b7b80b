"""A TESS sector backlog through the stream: light curves per second and CPU per light curve (a script).

A sector holds about 20,000 two-minute light curves, and a new one arrives every 27 days (with
every earlier one waiting when a user starts). This replays the 12 real light curves of
../shared/data/tess/lc as --files distinct files (each copy has its own header card, so its own
content hash) through a watcher, --workers workers (with their preprocessing children) and a
local broker, everything SkyStream runs per file: read, detrend, period search, views, Avro,
scoring, alert policy and the diagnostic figure of every alert. It is tests/benchmarks/bench_stream.py
with the light-curve kind, plus the extrapolation to a sector:

- measured rate: files per second from the watcher's start to the last prediction received;
- CPU per light curve of each process (from /proc, so it holds on a busy machine, where the rate
  does not); the watcher's start-up (interpreter, imports: measured on an empty folder in the same
  run) is set apart, since a watcher that runs for a sector pays it once;
- a sector of --sector light curves: minutes at the measured rate, and at the CPU bound
  (cores x seconds / CPU per light curve), on this machine's cores.

The 12 files are richer in planets than a sector (2 of 12 alert; in a sector about 1 in 100 stars
is a TOI), so the figures drawn per alert weigh more here than in a real sector.

    .venv/bin/python tests/benchmarks/bench_sector_backlog.py                  # 600 files, 2 workers, Kafka
    .venv/bin/python tests/benchmarks/bench_sector_backlog.py --files 1200 --broker tansu
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=600, help="light curves streamed and measured (default 600)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=12, help="light curves streamed first and not counted")
    ap.add_argument("--broker", choices=("tansu", "kafka"), default="kafka")
    ap.add_argument("--sector", type=int, default=20_000, help="light curves in a sector (default 20,000)")
    args = ap.parse_args()
    args.kind = "lightcurve"
    figures = run(args, args.broker)

    n = figures["files"]
    cpu = dict(figures["cpu_s"])
    watcher = cpu.pop("watcher (incl. interpreter start)")
    cpu["watcher (start-up set apart)"] = max(0.0, watcher - figures["watcher_start_s"])
    per_file = sum(cpu.values()) / n
    cores = os.cpu_count() or 1
    print(f"\n== sector backlog: {n} light curves, {figures['alerts']} alerts "
          f"({figures['alerts'] / n:.1%} of files drew a figure), {figures['dead_letters']} dead letters")
    print(f"measured: {figures['rate']:.1f} light curves/s with {args.workers} workers")
    print("CPU per light curve:")
    for name, seconds in cpu.items():
        print(f"  {name}: {seconds / n * 1000:.1f} ms")
    print(f"  total: {per_file * 1000:.1f} ms (the watcher's start-up, {figures['watcher_start_s'] * 1000:.0f} ms "
          f"once, not included)")
    print(f"a sector of {args.sector:,}: {args.sector / figures['rate'] / 60:.1f} min at the measured rate; "
          f"{args.sector * per_file / cores / 60:.1f} min at the CPU bound of this machine's {cores} cores")


if __name__ == "__main__":
    main()
