# ruff: noqa  (research script, phase 1 of issue 13: kept as it ran; see README.md)
"""Markdown table of every exp.py run (results/summary.jsonl) and calib.py output (results/calibration.jsonl)."""
import json
from collections import defaultdict
from pathlib import Path
R = Path("scratch13/results")
rows = [json.loads(l) for l in open(R / "summary.jsonl")]
cal = {}
if (R / "calibration.jsonl").exists():
    for l in open(R / "calibration.jsonl"):
        c = json.loads(l); cal[c["name"]] = c
print("| variant | seed | members | SMASSII dev 4-fold CV F1 | dev perturbed F1 | dev cut 0.49-0.83 F1 | SMASS I F1 (n) | SMASS I S→Other | SMASS I ECE raw | T (instr) | SMASS I ECE T_instr | T (instr_b) | SMASS I ECE T_instr_b |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    c = cal.get(f"{r['name']}_s{r['seed']}", {})
    f = lambda k, fmt="{:.3f}": fmt.format(c[k]) if k in c else "–"
    print(f"| {r['name']} | {r['seed']} | {r['config']['members']} | {r['dev_f1']:.4f} | {r['dev_perturbed_f1']:.4f} | "
          f"{r['dev_cut_049_083_f1']:.4f} | {r['smass1_f1']:.4f} ({r['smass1_n']}) | {r['smass1_s_to_other']} | "
          f"{r['smass1_ece_raw']:.3f} | {f('T_instr_dev', '{:.2f}')} | {f('ece_smass1_T_instr')} | {f('T_instr_b_dev', '{:.2f}')} | {f('ece_smass1_T_instr_b')} |")
by = defaultdict(list)
for r in rows:
    by[r["name"]].append(r)
print("\nMeans over seeds (variants with >1 seed):")
for k, v in by.items():
    if len(v) > 1:
        print(f"- {k}: seeds {[r['seed'] for r in v]}: dev {sum(r['dev_f1'] for r in v)/len(v):.4f}, "
              f"SMASS I {sum(r['smass1_f1'] for r in v)/len(v):.4f}, S→Other {[r['smass1_s_to_other'] for r in v]}")
