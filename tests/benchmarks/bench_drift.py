"""Drift monitor on real SMASSII spectra: cost per observation, false alarms on the unshifted
population by window fill, and the PSI each kind of shift produces.

    python tests/benchmarks/bench_drift.py [--registry DIR] [--trials 200]

Uses the serving model's drift reference (default: the bundled registry's SMASS champion) and the
same code path as a worker: stream.features.spectra features, an Avro round trip, the model's predictions,
stream.drift.DriftMonitor. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import schemas  # noqa: E402
from stream.errors import Rejected  # noqa: E402
from stream.features import spectra  # noqa: E402
from stream.models.registry import BUNDLED, LocalRegistry  # noqa: E402
from stream.scoring import drift  # noqa: E402
from stream.scoring.scorer import Scorer  # noqa: E402

ARCHIVE = ROOT.parent / "shared" / "data" / "smass2" / "smass2data.tar.gz"


def read_archive(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        files = [(Path(m.name).name, tar.extractfile(m).read()) for m in tar.getmembers()  # type: ignore[union-attr]
                 if m.isfile() and ".spfit" not in m.name and Path(m.name).name.startswith("a")]
    return sorted(files)


def rows(data: bytes) -> np.ndarray:
    return np.loadtxt(data.decode().splitlines(), ndmin=2)


def table(a: np.ndarray) -> bytes:
    return ("\n".join(" ".join(f"{v:.6g}" for v in row) for row in a) + "\n").encode()


def cut(lo: float, hi: float) -> Callable[[bytes], bytes]:
    def f(data: bytes) -> bytes:
        a = rows(data)
        return table(a[(a[:, 0] >= lo - 1e-9) & (a[:, 0] <= hi + 1e-9)])
    return f


def red_slope(per_um: float) -> Callable[[bytes], bytes]:
    """A multiplicative slope through 0.55 µm, as a solar-analogue or airmass error would leave."""
    def f(data: bytes) -> bytes:
        a = rows(data)
        a[:, 1] *= 1 + per_um * (a[:, 0] - 0.55)
        return table(a)
    return f


SHIFTS: dict[str, Callable[[bytes], bytes]] = {
    "none (re-delivered unchanged)": lambda d: d,
    "cut 0.49-0.92 um (S3OS2 range)": cut(0.49, 0.92),
    "cut 0.44-0.85 um": cut(0.44, 0.85),
    "red slope +0.05 /um": red_slope(0.05),
    "red slope +0.10 /um": red_slope(0.10),
    "red slope +0.20 /um": red_slope(0.20),
}


def features(name: str, data: bytes) -> dict | None:
    try:
        rec = spectra.spectrum_features(data, uri=name, file_id=hashlib.sha256(data).hexdigest(), detected_at_ms=0)
    except Rejected:
        return None
    return schemas.decode(schemas.encode("SpectrumFeatures", rec), expect="SpectrumFeatures")[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registry", type=Path, default=BUNDLED, help="registry with a SMASS model (default bundled)")
    ap.add_argument("--archive", type=Path, default=ARCHIVE)
    ap.add_argument("--trials", type=int, default=200, help="random windows per fill level (default 200)")
    args = ap.parse_args()

    registry = LocalRegistry(args.registry, seed_from=None)
    meta = registry.metadata("smass")
    reference = meta["drift_reference"]
    window = int(reference["window"])
    scorer = Scorer(registry)
    files = read_archive(args.archive)
    records = [r for r in (features(n, d) for n, d in files) if r is not None]
    labels = [p["main_group"] for p in scorer.score("spectrum", records)]
    print(f"model smass v{meta['version']} ({meta.get('name')}); reference window {window}, threshold "
          f"{reference['threshold']}; {len(records)} real spectra")

    # Cost of one observation (summary features + binning; an export every 50 included).
    monitor = drift.DriftMonitor("bench", reference)
    t0 = time.perf_counter()
    for r, label in zip(records, labels, strict=True):
        monitor.observe(r, label)
    per = (time.perf_counter() - t0) / len(records)
    print(f"DriftMonitor.observe: {per * 1e6:.0f} us per spectrum (incl. export every 50)")

    # False alarms: random samples of the real population, PSI over the first n observations.
    summaries = {id(r): drift.spectrum_summary(r) for r in records}
    rng = np.random.default_rng(0)
    print(f"\nunshifted population, {args.trials} random orders: largest feature PSI after n observations")
    print(f"{'n':>6} {'median':>8} {'p95':>8} {'max':>8} {'P(>thr)':>8}  features over 0.15")
    for n in sorted({max(50, window // 5), 150, 250, window}):
        worst, names = [], Counter()
        for _ in range(args.trials):
            m = drift.DriftMonitor("bench-noise", dict(reference, window=window))
            m.summarise = lambda rec: summaries[id(rec)]  # only the monitor's own work
            for i in rng.choice(len(records), n, replace=False):
                m.observe(records[i], labels[i])
            v = m.values()
            worst.append(max(v.values()))
            names.update(k for k, x in v.items() if x > 0.15)
        w = np.array(worst)
        print(f"{n:>6} {np.median(w):8.3f} {np.quantile(w, 0.95):8.3f} {w.max():8.3f} "
              f"{np.mean(w > reference['threshold']):8.3f}  {dict(names.most_common(3))}")

    # Shifted populations: a full window of each, PSI per feature.
    print(f"\nPSI over a full window ({window}) of each population (random sample of the same spectra)")
    idx = rng.choice(len(files), min(window, len(files)), replace=False)
    for name, shift in SHIFTS.items():
        recs = [r for r in (features(files[i][0], shift(files[i][1])) for i in idx) if r is not None]
        preds = scorer.score("spectrum", recs)
        m = drift.DriftMonitor("bench-shift", reference)
        for r, p in zip(recs, preds, strict=True):
            if isinstance(p, dict):
                m.observe(r, p["main_group"])
        v = m.values()
        top = ", ".join(f"{k} {x:.2f}" for k, x in sorted(v.items(), key=lambda kv: -kv[1])[:4])
        flag = "DRIFT" if max(v.values()) > reference["threshold"] else "ok"
        print(f"  {name:<32} {len(recs):>4} scored  {flag:<5}  {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
