# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
import json
rows=[json.loads(l) for f in ('results1.jsonl','results2.jsonl','results3.jsonl') for l in open(f)]
base=rows[0]
print("| variant | stitched #1 (P d, SNR, ppm, epoch) | b best? | c found | BLS b / best | b transit depths 1350.31/1385.93/1421.54 | single-file top P changed (>2%) | WASP-126 |")
for r in rows:
    s=r['hd_signals'][0].split()
    top=f"{s[0]} SNR {s[3]} {s[6]} ep {s[9]}"
    ch=[k for k,v in r['singles'].items() if (v[:1] and base['singles'][k][:1]) and abs(v[0][0]/base['singles'][k][0][0]-1)>0.02]
    dep=r['b_transits'].replace(' ppm','')
    c=f"#{r['hd_c_any'][0]+1}" if r['hd_c_any'] else "no"
    print(f"| {r['variant']} | {top} | {'yes' if r['hd_best_is_b'] else 'no'} | {c} | {r['bls_snr_b']} / {r['best_bls']} | {dep} | {len(ch)}/12: {', '.join(ch)} | {r['wasp126'][0][0]} ({r['wasp126'][0][1]}) |")
