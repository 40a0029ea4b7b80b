"""CPU per alert figure (a script): what a worker spends drawing the diagnostic figure of a transit alert.

For the first signal of each real light curve in ../shared/data/tess/lc that the stream alerts on (the
shipped model and policy; WASP-126 in sectors 1 and 6), draws `stream.alerts.figures.diagnostic_png`
--repeat times after one unmeasured draw, and prints the median CPU seconds of this process per figure
and the PNG size. Figures are drawn in one thread, as a worker's thread pool does.

    .venv/bin/python tests/benchmarks/bench_figures.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import predict_file  # noqa: E402

from stream.alerts.figures import diagnostic_png  # noqa: E402
from stream.scoring.scorer import scorer_for  # noqa: E402
from stream.scoring.transit_predictor import transit_alerts  # noqa: E402
from stream.settings import Settings  # noqa: E402

LIGHT_CURVES = ROOT.parent / "shared" / "data" / "tess" / "lc"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    scorer = scorer_for(Settings())
    for path in sorted(LIGHT_CURVES.glob("*.fits")):
        _, prediction = predict_file(path, scorer)
        found = transit_alerts(prediction)
        if not found:
            continue
        signal = prediction["signals"][found[0]["signal_index"]]
        data = path.read_bytes()
        png = diagnostic_png(data, signal)
        seconds = []
        for _ in range(args.repeat):
            t0 = time.process_time()
            diagnostic_png(data, signal)
            seconds.append(time.process_time() - t0)
        print(f"{path.name}: {statistics.median(seconds) * 1000:.0f} ms CPU per figure (median of {args.repeat}), "
              f"{len(png) / 1000:.0f} KB")


if __name__ == "__main__":
    main()
