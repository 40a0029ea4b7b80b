# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
import json, sys
rows=[json.loads(l) for f in sys.argv[1:] for l in open(f)]
base=json.loads(open('./results1.jsonl').readline())
for r in rows:
    print('==', r['variant'], 'n_valid', r['n_valid'], f"{r['seconds']}s")
    print('   HD:', ' | '.join(r['hd_signals']))
    print('   best is b:', r['hd_best_is_b'], 'b idx', r['hd_b_any'], 'c idx', r['hd_c_any'], 'BLS SNR b/c/best', r['bls_snr_b'], r['bls_snr_c'], r['best_bls'])
    print('   b transits:', r['b_transits']); print('   best transits:', r.get('best_transits'))
    ch=[f"{k}: {base['singles'][k][0]}->{v[0] if v else None}" for k,v in r['singles'].items() if v[:1]!=base['singles'][k][:1]]
    print('   singles changed top:', ch)
    print('   wasp126:', r['wasp126'])
