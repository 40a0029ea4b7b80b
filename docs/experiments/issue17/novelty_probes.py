"""Issue 17 item 3: what the novelty head says of made-up spectra (an experiment script).

Straight lines, noise, a sawtooth, a step, a deep narrow band, an emission line, each on 0.44-0.92 µm,
through the stream's reader and predictor with a registry's smass version (default: the bundled
champion). Prints novelty p-value, main group, Bus class and top probability per case.

    .venv/bin/python docs/experiments/issue17/novelty_probes.py [--registry DIR --version V]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from stream.features import spectra  # noqa: E402
from stream.models.registry import BUNDLED, LocalRegistry  # noqa: E402
from stream.scoring.onnx_model import OnnxModel  # noqa: E402
from stream.scoring.spectrum_predictor import predict_spectra  # noqa: E402


def cases(w: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "flat": np.ones_like(w),
        "flat + 5 % noise": 1 + 0.05 * rng.standard_normal(len(w)),
        "straight, +2 per µm": 1 + 2.0 * (w - 0.55),
        "straight, -0.8 per µm": 1 - 0.8 * (w - 0.55),
        "sawtooth 10 %": 1 + 0.1 * ((w * 50) % 1 - 0.5),
        "step of 30 % at 0.7 µm": np.where(w < 0.7, 1.0, 1.3),
        "band 30 % deep at 0.7 µm": 1 - 0.3 * np.exp(-0.5 * ((w - 0.7) / 0.03) ** 2),
        "emission line at 0.65 µm": 1 + 0.5 * np.exp(-0.5 * ((w - 0.65) / 0.01) ** 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=BUNDLED)
    parser.add_argument("--version", default=None)
    args = parser.parse_args()
    model = OnnxModel(LocalRegistry(args.registry, seed_from=None).load("smass", args.version))
    w = np.linspace(0.44, 0.92, 200)
    print(f"smass v{model.version}")
    for name, r in cases(w).items():
        table = "".join(f"{a:.4f} {b:.5f}\n" for a, b in zip(w, r, strict=True)).encode()
        record = spectra.spectrum_features(table, uri=name, file_id=name, detected_at_ms=0)
        [p] = predict_spectra(model, [record])
        print(f"  {name:26s} novelty p {p['novelty']:.4f}  {p['main_group']:5s} {p['bus_class']:4s} "
              f"top p {max(p['probabilities'].values()):.2f}")


if __name__ == "__main__":
    main()
