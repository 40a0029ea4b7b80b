"""Issue 17, item 2: a temperature fitted on other surveys, cross-fitted by source (an experiment script).

Reads the out-of-fold main-group probabilities written by mixed_training.py (--out), and for each
model ("baseline", "mixed") fits one temperature T (p ∝ p^(1/T), as stream/scoring/calibration.py
serves it) by negative log-likelihood on every source but one, applies it to the one left out, and
pools: so no spectrum is calibrated with a T fitted on its own source. Prints the T range, pooled
top-class ECE (15 bins), the share wrong with p > 0.9, the share answered with p > 0.9, and the ECE
of each source with 40 or more spectra.

    .venv/bin/python docs/experiments/issue17/calibrate.py oof.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from stream.scoring.calibration import temper  # noqa: E402
from training.reliability import expected_calibration_error as ece  # noqa: E402


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    def nll(t: float) -> float:
        return float(-np.mean(np.log(np.clip(temper(p, t)[np.arange(len(y)), y], 1e-12, 1.0))))

    return float(minimize_scalar(nll, bounds=(0.3, 20.0), method="bounded").x)


def main() -> None:
    oof = json.loads(Path(sys.argv[1]).read_text())
    y, source = np.array(oof["group"]), np.array(oof["source"])
    for name in ("baseline", "mixed"):
        p = np.array(oof[name])
        out, temps = np.zeros_like(p), []
        for s in sorted(set(source)):
            held = source == s
            t = fit_temperature(p[~held], y[~held])
            temps.append(t)
            out[held] = temper(p[held], t)
        for label, q in (("raw", p), ("tempered, source-held-out", out)):
            conf, correct = q.max(1), (q.argmax(1) == y).astype(float)
            print(f"{name} {label}: ECE {ece(conf, correct):.3f}, wrong with p>0.9 "
                  f"{((conf > 0.9) & (correct == 0)).mean():.3f}, answered with p>0.9 {(conf > 0.9).mean():.3f}, "
                  f"accuracy {correct.mean():.3f}")
        print(f"  T over the {len(temps)} fits: {min(temps):.2f}-{max(temps):.2f}")
        conf, correct = out.max(1), (out.argmax(1) == y).astype(float)
        for s in sorted(set(source), key=lambda s: -(source == s).sum()):
            m = source == s
            if m.sum() >= 40:
                error = ece(conf[m], correct[m])
                print(f"  source {s} ({m.sum()}): accuracy {correct[m].mean():.3f}, ECE {error:.3f}")


if __name__ == "__main__":
    main()
