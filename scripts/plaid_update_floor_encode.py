import os
import numpy as np, torch
from latelex import ColBERT
from latelex.data.auto import read_collection_documents
from latelex.data.beir import BeirDataset
from latelex.models import DEFAULT_COLBERT_MODEL
sci = os.path.join(os.environ.get("LATELEX_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")), "datasets", "scifact")
docs = list(read_collection_documents(sci))
data = BeirDataset(sci, split="test")
q = dict(data.queries())
enc = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu")
Q = enc.encode_queries(list(q.values()))
D = enc.encode_documents([d.text for d in docs], show_progress=False)
lens = np.array([d.shape[0] for d in D])
np.savez("/tmp/plx/scifact.npz", ids=np.array([d.id for d in docs]), lens=lens, vecs=torch.cat(D).half().numpy(),
         qids=np.array(list(q)), qlens=np.array([x.shape[0] for x in Q]), qvecs=torch.cat(Q).numpy())
print("done", lens.sum())
