# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Issue 13: train one model with a protocol on the whole SMASSII development split (80 %), export it to
ONNX (two inputs: reflectance, coverage), check ONNX vs Keras, and score SMASS I through onnxruntime.
Also reports the calibrated ECE with a given temperature and the border-flag counts.

cd . && PYTHONPATH=.:scratch13 .venv/bin/python scratch13/final_model.py \
    --name NAME [--temperature T] [--members 3] [--epochs 80] [--config FIELD=VALUE ...]
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from calib import temper  # noqa: E402
from recipe_eval import conf_wrong, flags, slopes  # noqa: E402
from s1common import SMASS2_DIR, ece, load_smass1, weighted_f1  # noqa: E402
from stream.features import spectra  # noqa: E402
from training import smass  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--all", action="store_true", help="train on all 1,341 SMASSII spectra (as a shipped model is)")
    a = ap.parse_args()
    cfg = smass.override_config(dataclasses.replace(smass.ModelConfig(), members=a.members, epochs=a.epochs), a.config)
    data = smass.load_smass(SMASS2_DIR)
    dev, _ = smass.development_split(data.group)
    d = data if a.all else smass.data.subset(data, dev)
    m = np.stack([spectra.coverage_mask(q) for q in d.quality])
    sigma = np.stack([smass.grid_sigma(s, v) for s, v in zip(d.spectra, d.features, strict=True)])
    model = smass.train_model(cfg, d.features, sigma, d.group, d.bus, seed=a.seed, threads=1, log=lambda s: None, mask=m)
    from training.keras_export import compare_onnx_keras, export_onnx
    shapes = {smass.INPUT_NAME: (None, d.features.shape[1])}
    feed = {smass.INPUT_NAME: d.features}
    if cfg.coverage_mask:
        shapes[smass.COVERAGE_NAME] = (None, d.features.shape[1]); feed[smass.COVERAGE_NAME] = m
    onnx_bytes = export_onnx(model, shapes)
    check = compare_onnx_keras(model, onnx_bytes, feed)
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    s1 = [r for r in load_smass1(min_coverage=spectra.MIN_COVERAGE_MASKED if cfg.coverage_mask else None)
          if r["group"] and r["values"] is not None]
    x1 = np.stack([r["values"] for r in s1]); m1 = np.stack([r["mask"] for r in s1])
    y1 = np.array([smass.GROUP_NAMES.index(r["group"]) for r in s1])
    f1 = {smass.INPUT_NAME: x1}
    if cfg.coverage_mask:
        f1[smass.COVERAGE_NAME] = m1
    p1, pb1 = sess.run(None, f1)
    pc = temper(p1, a.temperature)
    sd = slopes(d.features)  # the C|X slope boundary from the dev split, as in recipe_eval.py
    cx = 0.5 * (np.median(sd[d.group == 0]) + np.median(sd[d.group == 2]))
    fl = flags(pc, pb1, slopes(x1), cx)
    c, cu, au = conf_wrong(pc, y1, fl)
    res = {"name": a.name, "trained_on": "all SMASSII" if a.all else "SMASSII dev split", "config": dataclasses.asdict(cfg), "onnx_max_abs_diff": check["max_abs_diff"],
           "onnx_argmax_agreement": check["argmax_agreement"], "onnx_kib": len(onnx_bytes) / 1024,
           "smass1_n": len(y1), "smass1_f1": weighted_f1(y1, p1.argmax(1)),
           "smass1_s_to_other": int(np.sum((y1 == 1) & (p1.argmax(1) == 3))),
           "temperature": a.temperature, "smass1_ece_raw": ece(p1, y1), "smass1_ece_T": ece(pc, y1),
           "conf_wrong_across_border": c, "conf_wrong_across_border_unflagged": cu, "flagged_fraction": float(fl.mean()),
           "wrong": [(s1[i]["object"], s1[i]["bus"], smass.GROUP_NAMES[int(p1[i].argmax())], round(float(pc[i].max()), 3),
                      bool(fl[i])) for i in np.flatnonzero(p1.argmax(1) != y1)]}
    print(json.dumps(res))
    Path(f"scratch13/results/final_{a.name}.onnx").write_bytes(onnx_bytes)
    with open("scratch13/results/final.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
