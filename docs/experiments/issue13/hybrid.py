# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Which wavelength region makes the shipped model call SMASS I S-types 'Other'? Replace one region of each
SMASS I spectrum by the same asteroid's SMASSII spectrum (scaled to match at the region's edge) and re-score."""
import sys
import numpy as np
import onnxruntime as ort
sys.path.insert(0, "scratch13")
from s1common import GRID, SMASS2_DIR, load_smass1, ls_slope, weighted_f1
from training import smass
sess = ort.InferenceSession(open("./stream/bundled/registry/smass/1/model.onnx", "rb").read(), providers=["CPUExecutionProvider"])
s1 = [r for r in load_smass1() if r["group"] and r["values"] is not None]
s2 = smass.load_smass(SMASS2_DIR); by = dict(zip(s2.objects, s2.features))
s1 = [r for r in s1 if r["object"] in by]
y = np.array([smass.GROUP_NAMES.index(r["group"]) for r in s1])
X1 = np.stack([r["values"] for r in s1]); X2 = np.stack([by[r["object"]] for r in s1])
def score(X, label):
    p = sess.run(None, {"reflectance": X.astype(np.float32)})[0].argmax(1)
    print(f"{label:55s} F1 {weighted_f1(y, p):.4f}  S->Other {np.sum((y == 1) & (p == 3))}  wrong {np.sum(p != y)}")
score(X1, "SMASS I as is")
score(X2, "SMASSII spectra of the same asteroids")
for lo, hi in [(0.44, 0.50), (0.44, 0.55), (0.55, 0.70), (0.65, 0.80), (0.75, 0.92), (0.82, 0.92)]:
    sel = (GRID >= lo - 1e-9) & (GRID <= hi + 1e-9)
    X = X1.copy()
    edge = np.flatnonzero(sel)[-1] + 1 if hi < 0.92 else np.flatnonzero(sel)[0] - 1
    X[:, sel] = X2[:, sel] * (X1[:, edge] / X2[:, edge])[:, None]
    score(X, f"SMASS I with {lo}-{hi} from SMASSII")
# slope-corrected: remove each object's LS slope difference
Xs = []
for a, b in zip(X1, X2):
    s = ls_slope(GRID, a / b); Xs.append(a / (1 + s * (GRID - 0.55)))
score(np.stack(Xs), "SMASS I with per-object slope difference removed")
Xq = []
for a, b in zip(X1, X2):
    r = a / b; c = np.polyfit(GRID - 0.55, r, 2); Xq.append(a / np.polyval(c, GRID - 0.55) * np.polyval(c, 0.0))
score(np.stack(Xq), "SMASS I with per-object quadratic difference removed")
