# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""The shipped report metric for a protocol: stratified 5-fold CV on all 1,341 SMASSII spectra
(training.smass.cross_validate with its survey variants), nothing published. Coverage-mask models get the
mask from each spectrum's quality (all SMASSII spectra cover >= 97 % of the grid).
cd . && PYTHONPATH=.:scratch13 python cv5.py NAME --config FIELD=VALUE ...
"""
import argparse
import dataclasses
import json
import sys
import numpy as np
sys.path.insert(0, "scratch13")
from exp import SMASS2_DIR  # noqa: E402
from training import smass  # noqa: E402

ap = argparse.ArgumentParser(); ap.add_argument("name"); ap.add_argument("--config", action="append", default=[])
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
cfg = smass.override_config(smass.ModelConfig(), a.config)
data = smass.load_smass(SMASS2_DIR)
# cross_validate feeds no mask: a coverage-mask model then sees full coverage, like 98 % of SMASSII.
cv = smass.cross_validate(data, cfg, 5, a.seed, 1, {}, log=lambda s: print(s, flush=True))
mg = cv["main_group"]
res = {"name": a.name, "config": dataclasses.asdict(cfg), "cv5_weighted_f1_mean": mg["weighted_f1_mean"],
       "cv5_weighted_f1_std": mg["weighted_f1_std"], "cv5_pooled": mg["weighted_f1_pooled"],
       "bus_accuracy": cv["bus_class"]["accuracy_pooled"]}
print(json.dumps(res))
with open("scratch13/results/cv5.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
