"""Fault scenarios as a table: files in, resolved, lost, duplicates, time to recover (a benchmark, not a test).

    .venv/bin/python tests/benchmarks/bench_faults.py [--files 240] [--broker tansu|kafka]
    .venv/bin/python tests/benchmarks/bench_faults.py --broker kafka --files 5000 --only broker-restart

The same processes an operator starts (`skystream broker`, two `skystream worker`, `skystream watch`),
the same harness as tests/test_faults.py (which asserts; this prints), real SMASSII spectra:

- worker-kill: SIGKILL one of two workers mid-stream;
- broker-restart: SIGKILL the broker mid-stream (tansu: it comes back empty; Kafka: with its log),
  start it again on the same port, add new files;
- watcher-restart: SIGKILL the watcher mid-stream, add files while it is down, start it again;
- operator-probe: worker SIGKILL mid-stream, then broker SIGKILL + restart, then new files.

"resolved" is the watcher ledger's count of files whose prediction or dead letter was seen;
"duplicates" counts prediction messages beyond one per file (at-least-once delivery) on the broker at
the end (after a broker restart: on the new broker only), and "differ" the files whose repeated
predictions, wherever seen, were not identical; "recover" is the time from the fault (or the
restart) to every file resolved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "benchmarks")]

from bench_stream import make_inputs  # noqa: E402
from stack import CliBrokerStack, Recorder, file_ids  # noqa: E402

from stream.devstack.localstack import collect  # noqa: E402


def spectra(dest: Path, n: int) -> list[Path]:
    """``n`` real SMASSII spectra in ``dest``; beyond the archive's 1,341 files, copies that differ by a
    trailing comment line, so each is a file of its own (bench_stream.make_inputs)."""
    make_inputs(dest, n)
    return sorted(dest.iterdir())


def wait(stack: CliBrokerStack, ids: set[str], timeout: float = 300) -> float:
    """Seconds until every id is resolved (or the timeout)."""
    t0 = time.monotonic()
    while not ids <= stack.resolved() and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    return time.monotonic() - t0


def wait_some(stack: CliBrokerStack, n: int = 20) -> None:
    while len(stack.resolved()) < n:
        time.sleep(0.05)


def scenario(name: str, files: list[Path], n_old: int, tmp: Path, engine: str = "tansu") -> dict:
    old, new = files[:n_old], files[n_old:]
    tmp.mkdir()
    stack = CliBrokerStack(tmp, engine, broker_engine=engine)
    stack.start_broker()
    try:
        workers = [stack.start_worker(), stack.start_worker()]
        stack.start_watcher()
        with Recorder(stack.broker) as seen:
            if name == "watcher-restart":
                stack.add(old)
                while len(stack.published()) < 20:
                    time.sleep(0.05)
                stack.watcher.send_signal(signal.SIGKILL)
                stack.watcher.wait()
                stack.add(new)
                t_fault = time.monotonic()
                stack.start_watcher()
            else:
                stack.add(old)
                wait_some(stack)
                if name in ("worker-kill", "operator-probe"):
                    workers[0].send_signal(signal.SIGKILL)
                    workers[0].wait()
                    t_fault = time.monotonic()
                if name == "operator-probe":
                    wait_some(stack, len(stack.resolved()) + 20)
                if name in ("broker-restart", "operator-probe"):
                    stack.kill_broker()
                    stack.start_broker()
                    t_fault = time.monotonic()
                stack.add(new)
            wait(stack, file_ids(files))
            recover = time.monotonic() - t_fault
            time.sleep(2)  # let the recorder catch the last messages
        # Duplicates are counted on the broker as it is at the end, read once from its start: the
        # recorder reads some messages twice when it reconnects across a broker restart.
        final = asyncio.run(collect(stack.broker, lambda c: False, 3))
        resolved = file_ids(files) & stack.resolved()
        answers: dict[str, set] = defaultdict(set)
        for p in seen.out.predictions + final.predictions:
            answers[p["file_id"]].add((p["prediction_id"], p["main_group"], p["bus_class"]))
        count: dict[str, int] = defaultdict(int)
        for p in final.predictions:
            count[p["file_id"]] += 1
        alive = all(w.poll() is None for w in workers[1:]) and stack.watcher.poll() is None
        return {"scenario": name, "in": len(files), "resolved": len(resolved), "lost": len(files) - len(resolved),
                "duplicates": sum(c - 1 for c in count.values()),
                "differ": sum(len(a) > 1 for a in answers.values()), "recover_s": recover, "alive": alive}
    finally:
        stack.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=240, help="files before the fault (80 more arrive after it)")
    ap.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    ap.add_argument("--keep", type=Path, help="work (and keep the processes' logs and ledgers) in this new directory")
    ap.add_argument("--broker", choices=("tansu", "kafka"), default="tansu",
                    help="the broker `skystream broker --engine` starts: tansu (a restart is empty) or kafka "
                    "(durable: a restart keeps everything, so nothing should be republished)")
    args = ap.parse_args()
    names = args.only or ["worker-kill", "broker-restart", "watcher-restart", "operator-probe"]
    rows = []
    with (contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory()) as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        files = spectra(Path(tmp), args.files + 80)
        for i, name in enumerate(names):
            rows.append(scenario(name, files, args.files, Path(tmp) / f"run{i}", args.broker))
            print(rows[-1], flush=True)
    print("\n| scenario | files in | resolved | lost | duplicate predictions | differing answers | "
          "time to recover (s) | processes up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scenario']} | {r['in']} | {r['resolved']} | {r['lost']} | {r['duplicates']} | {r['differ']} | "
              f"{r['recover_s']:.1f} | {'yes' if r['alive'] else 'NO'} |")


if __name__ == "__main__":
    main()
