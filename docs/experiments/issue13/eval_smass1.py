# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Issue 13, step 1: the shipped SMASS model on SMASS I (another instrument), through the repo's own code.

Run: cd . && PYTHONPATH=.:scratch13 .venv/bin/python scratch13/eval_smass1.py
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from s1common import GRID, SMASS2_DIR, ece, load_smass1, ls_slope, weighted_f1  # noqa: E402
from stream.scoring.onnx_model import OnnxModel  # noqa: E402
from stream.models.registry import BUNDLED  # noqa: E402
from stream.scoring.spectrum_predictor import predict_spectra  # noqa: E402
from training import smass  # noqa: E402

REG = Path("./stream/bundled/registry/smass/1")


def main() -> None:
    out_dir = Path("scratch13/results"); out_dir.mkdir(exist_ok=True)
    s1 = load_smass1()
    print(f"SMASS I files: {len(s1)}; labelled (Bus class in Bus.Taxonomy.txt): "
          f"{sum(bool(r['bus']) for r in s1)}; rejected: {Counter(r['reason'] for r in s1 if r['reason'])}")
    # coverage of SMASS I
    lo = np.array([r["spectrum"].wavelength_um[0] for r in s1 if "spectrum" in r])
    hi = np.array([r["spectrum"].wavelength_um[-1] for r in s1 if "spectrum" in r])
    print(f"SMASS I start µm: min {lo.min():.3f} median {np.median(lo):.3f} max {lo.max():.3f}; "
          f"end µm: min {hi.min():.3f} median {np.median(hi):.3f} max {hi.max():.3f}")
    print(f"  start > 0.44: {np.sum(lo > 0.44)}; start > 0.45: {np.sum(lo > 0.45)}; start > 0.48: {np.sum(lo > 0.48)}; "
          f"start > 0.50: {np.sum(lo > 0.50)}; end < 0.92: {np.sum(hi < 0.92)}")
    lab = [r for r in s1 if r["bus"] and r["group"]]
    scored = [r for r in lab if r["values"] is not None]
    print(f"labelled with a main group: {len(lab)}; scored: {len(scored)}; rejected: "
          f"{[(r['object'], r['reason']) for r in lab if r['values'] is None]}")
    # shipped model through the serving code
    from stream.models.registry import ModelVersion  # noqa: F401
    meta = json.loads((REG / "metadata.json").read_text())
    import types
    mv = types.SimpleNamespace(onnx=(REG / "model.onnx").read_bytes(), task="smass", version="1", name=meta["name"],
                               metadata=meta)
    model = OnnxModel(mv, threads=1)
    feats = [{"file_id": r["file"], "uri": r["file"], "object": r["object"], "detected_at_ms": 0,
              "wavelength_um": GRID.tolist(), "reflectance": r["values"].tolist()} for r in scored]
    preds = predict_spectra(model, feats)
    names = list(smass.GROUP_NAMES)
    y = np.array([names.index(r["group"]) for r in scored])
    prob = np.array([[p["probabilities"][n] for n in names] for p in preds])
    pred = prob.argmax(1)
    from sklearn.metrics import confusion_matrix
    print(f"\nshipped model on SMASS I: n={len(y)} weighted F1 {weighted_f1(y, pred):.4f} acc {np.mean(pred == y):.4f} "
          f"ECE15 {ece(prob, y):.4f}")
    print("confusion (rows true C,S,X,Other):\n", confusion_matrix(y, pred, labels=range(4)))
    s_other = [(r["object"], r["bus"], preds[i]["bus_class"], round(prob[i].max(), 3))
               for i, r in enumerate(scored) if r["group"] == "S" and pred[i] == 3]
    print(f"S called Other: {len(s_other)}; with p>0.85: {sum(p > 0.85 for *_, p in s_other)}: {s_other}")
    wrong = [(r["object"], r["bus"], names[pred[i]], preds[i]["bus_class"], round(prob[i].max(), 3))
             for i, r in enumerate(scored) if pred[i] != y[i]]
    print(f"all wrong ({len(wrong)}): {wrong}")
    # per-object slope difference SMASS I vs SMASSII
    s2 = smass.load_smass(SMASS2_DIR)
    by_obj = {o: (f, q) for o, f, q in zip(s2.objects, s2.features, s2.quality, strict=True)}
    rows = []
    for r in scored:
        if r["object"] not in by_obj:
            continue
        f2, q2 = by_obj[r["object"]]
        q1 = r["quality"]
        lo_, hi_ = max(q1["min_um"], q2["min_um"]), min(q1["max_um"], q2["max_um"])
        sel = (GRID >= lo_) & (GRID <= hi_)
        ratio = r["values"][sel] / f2[sel]
        rows.append((r["object"], r["bus"], r["group"], ls_slope(GRID[sel], ratio)))
    d = np.array([x[3] for x in rows])
    print(f"\nslope of SMASS I / SMASSII (per µm) over common coverage, n={len(d)}: mean {d.mean():+.3f} "
          f"median {np.median(d):+.3f} sd {d.std():.3f}; |d| median {np.median(np.abs(d)):.3f}, "
          f"90th pct {np.percentile(np.abs(d), 90):.3f}, max {np.abs(d).max():.3f}")
    for gname in names:
        dg = np.array([x[3] for x in rows if x[2] == gname])
        if len(dg):
            print(f"  {gname}: n={len(dg)} mean {dg.mean():+.3f} sd {dg.std():.3f} |d| median {np.median(np.abs(dg)):.3f}")
    s_wrong = {o for o, *_ in s_other}
    dsw = np.array([x[3] for x in rows if x[0] in s_wrong])
    if len(dsw):
        print(f"  the S called Other: mean slope diff {dsw.mean():+.3f} (values {np.round(dsw, 3).tolist()})")
    json.dump({"n": int(len(y)), "weighted_f1": weighted_f1(y, pred), "ece15": ece(prob, y),
               "s_to_other": len(s_other), "slope_diff": [list(x) for x in rows],
               "prob": prob.tolist(), "y": y.tolist(), "objects": [r["object"] for r in scored]},
              open(out_dir / "shipped_smass1.json", "w"), indent=1)


if __name__ == "__main__":
    main()
