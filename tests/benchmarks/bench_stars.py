"""What following stars across sectors costs (a script): the stars stage of stream/stars, per event.

For the real stars with several sectors in ../shared/data/tess/lc (HD 21749 = TIC 279741379, sectors
1-4; WASP-126 = TIC 25155310, sectors 1 and 6), each sector goes through the worker's own extract and
scorer once, then through the stars agent's logic (stream.stars.agent.on_sector) on a plain dict in
place of the Faust table, and this prints, in CPU time of this process (median of --repeat):

- per light curve, what every sector pays whether or not its star has other sectors: encoding and
  decoding the features message with its 10-minute bins, against the same message without them;
- per new sector of a star already followed: the search over its sectors stitched, scored, with the
  diagnostic figure of each alert (what a worker spends), by the number of sectors stitched;
- per sector seen again (a redelivery, the same file under another name): the state read and the
  check that nothing changed;
- the bytes of each star's state (the changelog message).

    .venv/bin/python tests/benchmarks/bench_stars.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import schemas  # noqa: E402
from stream import kinds  # noqa: E402
from stream.features import detect  # noqa: E402
from stream.scoring.publish import CollectingSink, score_and_publish  # noqa: E402
from stream.scoring.scorer import scorer_for  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.stars import agent  # noqa: E402
from stream.stars.state import sector_message  # noqa: E402

LIGHT_CURVES = ROOT.parent / "shared" / "data" / "tess" / "lc"
STARS = {
    "HD 21749": [f"tic279741379_s0{i}_lc.fits" for i in range(1, 5)],
    "WASP-126": ["hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits", "tic25155310_s06_lc.fits"],
}


def cpu_ms(func, repeat: int) -> float:
    """Median CPU milliseconds of ``func()`` over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        func()
        times.append(time.process_time() - t0)
    return 1e3 * statistics.median(times)


def new_sector(key: bytes, sectors: list[bytes], scorer: object) -> tuple[float, int, int]:
    """(CPU seconds, alerts, state bytes) of the last of ``sectors`` arriving at a star that has the others."""
    table: dict[bytes, bytes] = {}
    for m in sectors[:-1]:
        table[key] = asyncio.run(agent.on_sector(key, m, table, scorer, CollectingSink()))  # type: ignore[arg-type]
    sink = CollectingSink()
    t0 = time.process_time()
    state = asyncio.run(agent.on_sector(key, sectors[-1], table, scorer, sink))  # type: ignore[arg-type]
    return time.process_time() - t0, sum(1 for t, _, _ in sink.sent if t.endswith(".alerts")), len(state or b"")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    settings = Settings(sources=str(LIGHT_CURVES))
    scorer = scorer_for(settings)
    kind = kinds.by_name("lightcurve")

    print("per light curve: the features message with and without its bins (ms of CPU)")
    messages: dict[str, list[bytes]] = {}
    for star, names in STARS.items():
        messages[star] = []
        for name in names:
            path = LIGHT_CURVES / name
            data = path.read_bytes()
            _, features = detect.extract("lightcurve", data, uri=str(path), file_id=hashlib.sha256(data).hexdigest(),
                                         detected_at_ms=1)
            raw = schemas.encode("LightCurveFeatures", features)
            bare = dict(features, bins=None)
            raw_bare = schemas.encode("LightCurveFeatures", bare)
            encode = [cpu_ms(lambda f=f: schemas.encode("LightCurveFeatures", f), args.repeat)
                      for f in (features, bare)]
            decode = [cpu_ms(lambda r=r: schemas.decode(r), args.repeat) for r in (raw, raw_bare)]
            print(f"  {name:<62} encode {encode[0]:5.2f} (without bins {encode[1]:4.2f})  decode {decode[0]:5.2f} "
                  f"({decode[1]:4.2f})  bytes {len(raw):,} ({len(raw_bare):,})")
            (outcome,) = asyncio.run(score_and_publish(scorer, kind, [raw], CollectingSink()))
            messages[star].append(sector_message(outcome.prediction, raw, outcome.alerts))

    print("\nper new sector of a followed star: state, stitched search, scores, alert figures (ms of CPU)")
    for star, sectors in messages.items():
        for n in range(2, len(sectors) + 1):
            runs = [new_sector(star.encode(), sectors[:n], scorer) for _ in range(args.repeat)]
            ms = 1e3 * statistics.median(r[0] for r in runs)
            print(f"  {star:<10} {n} sectors: {ms:7.0f} ms  ({runs[-1][1]} alert(s) drawn; "
                  f"state {runs[-1][2]:,} bytes)")

    print("\nper sector seen again (same light curve under another file name): ms of CPU")
    for star, sectors in messages.items():
        key, table = star.encode(), {}
        for m in sectors:
            table[key] = asyncio.run(agent.on_sector(key, m, table, scorer, CollectingSink()))
        record = schemas.decode(sectors[0], expect="StarSector")[1]
        again = schemas.encode("StarSector", dict(record, file_id="0" * 64))
        ms = cpu_ms(lambda t=table, k=key, a=again: asyncio.run(agent.on_sector(k, a, t, scorer, CollectingSink())),
                    max(args.repeat, 20))
        print(f"  {star:<10} ({len(sectors)} sectors in the state): {ms:5.2f} ms (asyncio.run included)")


if __name__ == "__main__":
    main()
