# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Issue 13 step 4 (sketch): novelty score = GMM log-likelihood of a small dense autoencoder's latent code.

Input: the spectrum divided by its least-squares line over the covered grid (slope-normalised, so an
instrument's slope error alone does not make a spectrum novel), covered points only (held ends = 1).
Fit on the SMASSII development split (80 %) only; novelty = percentile of -loglik among the training set.
cd . && PYTHONPATH=.:scratch13 .venv/bin/python scratch13/novelty.py
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from s1common import GRID, SMASS2_DIR, load_smass1  # noqa: E402
from stream.features import spectra  # noqa: E402
from training import smass  # noqa: E402


def slope_normalised(v, mask):
    lam = GRID[mask > 0]
    a = np.vstack([np.ones_like(lam), lam - 0.68]).T
    coef, *_ = np.linalg.lstsq(a, v[mask > 0], rcond=None)
    line = coef[0] + coef[1] * (GRID - 0.68)
    out = v / line
    out[mask == 0] = 1.0
    return ((out - 1.0) * 10).astype(np.float32)


def main():
    from training.keras_export import configure_tensorflow
    configure_tensorflow(0, 1)
    import keras
    from keras import layers
    from sklearn.mixture import GaussianMixture

    data = smass.load_smass(SMASS2_DIR)
    dev, _ = smass.development_split(data.group)
    d = smass.data.subset(data, dev)
    m = np.stack([spectra.coverage_mask(q) for q in d.quality])
    x = np.stack([slope_normalised(v, mm) for v, mm in zip(d.features, m)])
    s1 = [r for r in load_smass1(min_coverage=0.6) if r["values"] is not None]
    x1 = np.stack([slope_normalised(r["values"], r["mask"]) for r in s1])
    inp = keras.Input((x.shape[1],))
    h = layers.Dense(48, activation="relu")(inp)
    z = layers.Dense(6, name="z")(h)
    h = layers.Dense(48, activation="relu")(z)
    out = layers.Dense(x.shape[1])(h)
    ae = keras.Model(inp, out)
    ae.compile(keras.optimizers.Adam(2e-3), "mse")
    rng = np.random.default_rng(0)
    xn = np.concatenate([x + 0.05 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(20)])
    ae.fit(xn, np.tile(x, (20, 1)), epochs=15, batch_size=64, verbose=0)
    enc = keras.Model(inp, z)
    zt, z1 = enc.predict(x, verbose=0), enc.predict(x1, verbose=0)
    rec_t = np.mean((ae.predict(x, verbose=0) - x) ** 2, 1)
    rec_1 = np.mean((ae.predict(x1, verbose=0) - x1) ** 2, 1)
    gmm = GaussianMixture(8, covariance_type="full", random_state=0).fit(zt)
    lt, l1 = gmm.score_samples(zt), gmm.score_samples(z1)
    pct = lambda l: np.array([np.mean(lt >= v) * 100 for v in l])  # % of training at least as likely = novelty pct
    nt, n1 = pct(lt), pct(l1)  # high = unusual (e.g. 99 = only 1 % of training less likely)
    nt, n1 = 100 - nt, 100 - n1
    print(f"SMASSII dev: {len(x)}; SMASS I: {len(x1)}")
    for thr in (95, 99):
        print(f"  novelty >= {thr}th pct of training: SMASSII dev {np.mean(nt >= thr):.3f}, SMASS I {np.mean(n1 >= thr):.3f}")
    print(f"  reconstruction MSE median: SMASSII {np.median(rec_t):.4f}, SMASS I {np.median(rec_1):.4f}")
    top = np.argsort(-nt)[:10]
    print("most novel SMASSII (dev):", [(d.objects[i], d.bus_names[i], round(float(nt[i]), 1)) for i in top])
    top1 = np.argsort(-n1)[:10]
    print("most novel SMASS I:", [(s1[i]["object"], s1[i]["bus"] or "-", round(float(n1[i]), 1),
                                   f"{s1[i]['quality']['min_um']:.3f}-{s1[i]['quality']['max_um']:.3f}") for i in top1])
    json.dump({"smass1_frac_ge95": float(np.mean(n1 >= 95)), "smass1_frac_ge99": float(np.mean(n1 >= 99)),
               "dev_frac_ge95": float(np.mean(nt >= 95))}, open("scratch13/results/novelty.json", "w"))


if __name__ == "__main__":
    main()
