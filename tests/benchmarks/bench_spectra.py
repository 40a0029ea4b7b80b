"""Spectrum hot path on every real SMASSII file: sniffing, parsing, resampling, scoring.

    python tests/benchmarks/bench_spectra.py [--repeat 3]

Times per file (median over files, best of ``--repeat`` passes) for stream.spectra.looks_like_spectrum,
read_spectrum, resample and spectrum_features, plus plain np.loadtxt for comparison, and
predict_spectra with the bundled model (batch of 64 and one at a time). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stream.features import spectra  # noqa: E402
from stream.models.registry import BUNDLED, LocalRegistry  # noqa: E402

ARCHIVE = ROOT.parent / "shared" / "data" / "smass2" / "smass2data.tar.gz"


def per_file(fn, items, repeat: int) -> tuple[float, float]:
    """(median, 99th percentile) seconds per call over items, best pass of ``repeat``."""
    best = None
    for _ in range(repeat):
        times = []
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t0)
        times = np.array(times)
        if best is None or np.median(times) < np.median(best):
            best = times
    return float(np.median(best)), float(np.percentile(best, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tarfile.open(ARCHIVE) as tar:
        files = [(Path(m.name).name, tar.extractfile(m).read()) for m in tar.getmembers()
                 if m.isfile() and m.name.endswith(".[2]") and ".spfit" not in m.name]
    data = [d for _, d in files]
    parsed = [spectra.read_spectrum(d) for d in data]
    print(f"{len(files)} SMASSII spectra, mean {np.mean([len(d) for d in data]):.0f} bytes")
    rows = [
        ("looks_like_spectrum(first 16 KiB)", lambda d: spectra.looks_like_spectrum(d[:16384]), data),
        ("np.loadtxt(BytesIO) alone", lambda d: np.loadtxt(io.BytesIO(d), ndmin=2), data),
        ("read_spectrum (parse + clean)", spectra.read_spectrum, data),
        ("resample (grid + normalise)", spectra.resample, parsed),
        ("spectrum_features (whole record)", lambda d: spectra.spectrum_features(
            d, uri="file:///x/a000001.[2]", file_id="f", detected_at_ms=0), data),
    ]
    for label, fn, items in rows:
        med, p99 = per_file(fn, items, args.repeat)
        print(f"{label:36s} median {med * 1e3:7.3f} ms  p99 {p99 * 1e3:7.3f} ms")

    if (BUNDLED / "smass" / "champion.json").exists():
        from stream.scoring.onnx_model import OnnxModel
        from stream.scoring.spectrum_predictor import predict_spectra

        model = OnnxModel(LocalRegistry(BUNDLED, seed_from=None).load("smass"))
        records = [spectra.spectrum_features(d, uri=n, file_id=n, detected_at_ms=0) for n, d in files]
        batches = [records[i : i + 64] for i in range(0, len(records), 64)]
        for label, items in (("predict_spectra, batches of 64", batches), ("predict_spectra, one at a time",
                                                                            [[r] for r in records])):
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                for b in items:
                    predict_spectra(model, b)
            per = (time.perf_counter() - t0) / args.repeat / len(records)
            print(f"{label:36s} {per * 1e3:7.3f} ms per spectrum ({model.name} v{model.version})")


if __name__ == "__main__":
    main()
