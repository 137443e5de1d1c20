"""How far a PLAID index built from half of SciFact and updated with the other half (minus every 20th document)
is from a fresh build, against the floor of two fresh builds with different seeds, at default and wide search
settings; `nbits` as argument (2 or 4). The built-in model's vectors are encoded once into /tmp/plx/scifact.npz.

    .venv/bin/python scripts/plaid_update_floor.py 2
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.path.exists("/tmp/plx/scifact.npz"):
    os.makedirs("/tmp/plx", exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "plaid_update_floor_encode.py")], check=True)
import sys, shutil, time
import numpy as np, torch
from pathlib import Path
from latelex.index.plaid import PlaidIndex, PlaidConfig
from latelex.index.flat import FlatIndex
z = np.load("/tmp/plx/scifact.npz")
ids = [str(x) for x in z["ids"]]; offs = np.concatenate([[0], np.cumsum(z["lens"])]); V = z["vecs"]
D = [V[offs[i]:offs[i+1]] for i in range(len(ids))]
qoffs = np.concatenate([[0], np.cumsum(z["qlens"])]); QV = z["qvecs"]
Q = [torch.from_numpy(QV[qoffs[i]:qoffs[i+1]].copy()) for i in range(len(z["qids"]))]
root = Path(f"/tmp/plx/idx{sys.argv[1]}"); shutil.rmtree(root, ignore_errors=True); root.mkdir()
half = len(ids)//2
gone = set(ids[::20])
keep = [i for i, d in enumerate(ids) if d not in gone]
def top(ix, **kw): return [[h.doc_id for h in hs] for hs in ix.search(Q, k=10, **kw)]
def ov(a, b): return np.mean([len(set(x)&set(y))/len(y) for x, y in zip(a, b)])
flat = FlatIndex.build(root/"flat", [ids[i] for i in keep], [D[i] for i in keep])
exact = top(flat)
nbits = int(sys.argv[1])
fresh = {}
t=time.time()
for seed in (0, 1):
    fresh[seed] = PlaidIndex.build(root/f"fresh{seed}", [ids[i] for i in keep], [D[i] for i in keep], config=PlaidConfig(seed=seed, nbits=nbits), show_progress=False)
print("build s", (time.time()-t)/2, flush=True)
upd = PlaidIndex.build(root/"upd", ids[:half], D[:half], config=PlaidConfig(nbits=nbits), show_progress=False)
upd.add(ids[half:], D[half:]); upd.delete(sorted(gone))
print("nbits", nbits, "centroids fresh/upd", fresh[0].codec.n_centroids, upd.codec.n_centroids, flush=True)
for name, kw in [("default", {}), ("wide", dict(ncells=32, ndocs=8192, centroid_score_threshold=-1.0))]:
    f0, f1, u = top(fresh[0], **kw), top(fresh[1], **kw), top(upd, **kw)
    print(name, "f0~exact %.3f f1~exact %.3f upd~exact %.3f | f0~f1 %.3f upd~f0 %.3f" % (ov(f0, exact), ov(f1, exact), ov(u, exact), ov(f1, f0), ov(u, f0)), flush=True)
