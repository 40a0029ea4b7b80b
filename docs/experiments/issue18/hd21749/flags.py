# ruff: noqa  (research script of issue 18, item 2: kept as it ran; README.md)
import numpy as np, glob
from astropy.io import fits
for p in sorted(glob.glob(str(__import__('pathlib').Path(__file__).resolve().parents[5] / 'shared/data/tess/lc/*.fits'))):
    with fits.open(p) as h:
        d=h[1].data; q=np.array(d['QUALITY']).astype(int); t=np.array(d['TIME']); f=np.array(d['PDCSAP_FLUX'])
        hdr=h[0].header
        bits={b:int(((q&b)>0).sum()) for b in [2**i for i in range(16)] if ((q&b)>0).any()}
        print(p.split('/')[-1], hdr.get('SECTOR'), hdr.get('TICID'), h[0].header.get('DATA_REL'), 'n',len(t),'finite',np.isfinite(f).sum(), bits)
        # momentum dumps: bit 32 events (group contiguous)
        dump = (q & 32)>0
        tt=t[dump]
        if tt.size:
            groups = np.split(tt, np.flatnonzero(np.diff(tt)>0.05)+1)
            print('   dumps(32):', [round(float(np.nanmean(g)),2) for g in groups])
        d1024=(q&1024)>0
        if d1024.any():
            tt=t[d1024]; groups=np.split(tt, np.flatnonzero(np.diff(tt)>0.05)+1)
            print('   1024:', len(groups), [round(float(np.nanmean(g)),2) for g in groups][:12])
