"""Where a PLAID query's time goes: the stages of ``latelex.index.plaid.search.search_one`` timed one by one on a
SciFact index, one thread, over the 300 test queries, with the exact stage also run by the numba loop it replaced
and with the int64 lookups it had before (kept here as references: they must give the same scores).

    latelex index runs/scifact-v2-int8 --kind plaid --collection ../shared/datasets/scifact --backend onnx --quantize int8
    .venv/bin/python scripts/plaid_stage_profile.py --index runs/scifact-v2-int8                  # warm caches
    .venv/bin/python scripts/plaid_stage_profile.py --index runs/scifact-v2-int8 --flush-mb 64    # cold, as after encoding

The queries are encoded first (with the index's encoder); then each query runs every stage in turn, as search_one
does at its defaults ("auto" settings, k=10), and the script checks that it found the documents
``PlaidIndex.search`` returns. Printed: p50 and mean milliseconds of each stage, of their sum, and of a whole
``PlaidIndex.search`` and ``Retriever.search`` of the encoded query (the index's own overhead included).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import SHARED, machine, print_table  # noqa: E402

from latelex.index.plaid.search import FAST  # noqa: E402


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def exact_loop(scores_t, score_row, lq, table, codes, packed, row_base, doc_offsets, docs, scales, scale_table):  # pragma: no cover
    """The exact stage as a numba loop over each token's packed bytes (latelex's kernel until December 2026): the
    Lqp running sums live in memory, so every byte's update waits on the previous one's store."""
    lqp = scores_t.shape[1]
    width = packed.shape[1]
    main = width - width % 8
    scaled = scales.shape[0] > 0
    out = np.empty(docs.shape[0], dtype=np.float32)
    best = np.empty(lqp, dtype=np.float32)
    acc = np.empty(lqp, dtype=np.float32)
    for i in range(docs.shape[0]):
        d = docs[i]
        for q in range(lqp):
            best[q] = -np.inf
        for t in range(doc_offsets[d], doc_offsets[d + 1]):
            r = t - row_base
            c = score_row[codes[t]]
            for q in range(lqp):
                acc[q] = scores_t[c, q]
            for j in range(0, main, 8):
                b0, b1, b2, b3 = packed[r, j], packed[r, j + 1], packed[r, j + 2], packed[r, j + 3]
                b4, b5, b6, b7 = packed[r, j + 4], packed[r, j + 5], packed[r, j + 6], packed[r, j + 7]
                for q in range(lqp):
                    acc[q] += (((table[j, b0, q] + table[j + 1, b1, q]) + (table[j + 2, b2, q] + table[j + 3, b3, q]))
                               + ((table[j + 4, b4, q] + table[j + 5, b5, q]) + (table[j + 6, b6, q] + table[j + 7, b7, q])))
            for j in range(main, width):
                b = packed[r, j]
                for q in range(lqp):
                    acc[q] += table[j, b, q]
            f = scale_table[scales[t]] if scaled else np.float32(1.0)
            for q in range(lqp):
                v = acc[q] * f
                best[q] = v if v > best[q] else best[q]
        s = np.float32(0.0)
        for q in range(lq):
            s += best[q]
        out[i] = s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="a retriever index of SciFact (kind plaid)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the queries; the last one is reported")
    parser.add_argument("--flush-mb", type=int, default=0,
                        help="write a buffer of this many MB before each query, as encoding it would, so that the "
                             "search starts from cold caches (default 0: warm)")
    args = parser.parse_args()

    import torch

    from latelex import Retriever
    from latelex.data.auto import read_queries_any
    from latelex.index.plaid import search as S
    from latelex.index.plaid.codec import SCALE_TABLE
    from latelex.index.plaid.config import search_settings

    torch.set_num_threads(1)
    texts = [t for _, t in read_queries_any(SHARED / "datasets" / "scifact", split="test")]
    retriever = Retriever.open(args.index)
    index = retriever.index
    if retriever.kind != "plaid" or len(retriever._state.segments) != 1:
        raise SystemExit(f"{args.index}: a PLAID index of one segment is needed (build it with `latelex index --kind plaid`)")
    encoded = [torch.as_tensor(np.asarray(q, dtype=np.float32)) for q in retriever.encode_queries(texts)]
    data = index._search_data()
    chosen = search_settings("auto", 10)
    allowed = np.ones(len(index._stored_ids), dtype=np.bool_)
    n_exact = max(10, chosen.ndocs // 4)

    def chunks(docs):
        doc_chunk = np.searchsorted(data.part_first_doc, docs, side="right") - 1
        bounds = np.flatnonzero(np.diff(doc_chunk)) + 1
        for a, b in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [docs.shape[0]]]).tolist()):
            c = int(doc_chunk[a])
            data.check_part(c)
            yield a, b, data.residual_parts[c], int(data.part_starts[c])

    flush = np.zeros(args.flush_mb << 20, dtype=np.uint8) if args.flush_mb else None
    stages: dict[str, list[float]] = {}
    reads: dict[str, list[int]] = {"token codes": [], "kept centroids' list entries": []}
    worst_gap, mismatched, mismatched_pruned, mismatched_int64 = 0.0, 0, 0, 0
    exact_rows: list[int] = []  # float32 centroid rows stage 5 computes per query (all of them on the float32 path)
    for _ in range(args.rounds):
        stages.clear()
        for v in reads.values():
            v.clear()
        for Q in encoded:
            if flush is not None:
                flush += 1
            clock = [time.perf_counter()]

            def tick(name: str) -> None:
                now = time.perf_counter()
                stages.setdefault(name, []).append((now - clock[0]) * 1000)
                clock[0] = now

            lq = Q.shape[0]
            Qp = S.pad_query(Q)
            scores = S.centroid_scores(data, Qp, lq, chosen.centroid_score_threshold)
            tick("1 centroid scores (int8, u8s8 or float32 product, best_cells)")
            ncells = chosen.ncells
            candidates = S.gather_candidates(S.probe_cells(scores, lq, ncells), data.ivf_offsets, data.ivf_docs, allowed)
            while candidates.shape[0] < chosen.min_candidates and ncells < chosen.max_ncells:
                ncells *= 2
                candidates = S.gather_candidates(S.probe_cells(scores, lq, ncells), data.ivf_offsets, data.ivf_docs, allowed)
            tick("2 candidates (probe cells, inverted lists)")
            reads["token codes"].append(int(np.diff(data.doc_offsets)[candidates].sum()))
            reads["kept centroids' list entries"].append(int(np.diff(data.ivf_offsets)[scores.keep].sum()))
            clock[0] = time.perf_counter()
            approx = S.pruned_interaction(scores.cells, scores.cell_scale, lq, data.codes, data.doc_offsets, candidates,
                                          scores.keep, data.ivf_offsets, data.ivf_docs)
            ranked = candidates
            candidates = candidates[S.order_by_score(approx, candidates, max(chosen.ndocs, n_exact))]
            tick("3 pruned centroid interaction (inverted lists or token codes)")
            if flush is not None:  # the reference starts from the caches the pruned pass had
                flush += 1
                S.centroid_scores(data, Qp, lq, chosen.centroid_score_threshold)
            clock[0] = time.perf_counter()
            by_codes = S.centroid_interaction(scores.cells, scores.cell_scale, lq, data.codes, data.doc_offsets, ranked,
                                              scores.keep)
            tick("(reference) pruned pass through the token codes only")
            mismatched_pruned += not np.array_equal(by_codes, approx)
            clock[0] = time.perf_counter()
            full = np.ones(scores.keep.shape[0], dtype=np.bool_)
            approx = S.centroid_interaction(scores.cells, scores.cell_scale, lq, data.codes, data.doc_offsets, candidates, full)
            candidates = np.sort(candidates[S.order_by_score(approx, candidates, n_exact)])
            tick("4 centroid interaction")
            rows, row_of = S.exact_rows(data, Qp, scores, candidates)
            table = S.query_table(Qp, data.byte_weights_t)
            tick("5 exact-stage inputs (float32 centroid rows, query table)")
            exact_rows.append(int(rows.shape[0]))
            exact = np.empty(candidates.shape[0], dtype=np.float32)
            for a, b, packed, base in chunks(candidates):
                exact[a:b] = S.exact_interaction(rows, row_of, lq, table, data.codes, packed, base, data.doc_offsets,
                                                 candidates[a:b], data.scales, SCALE_TABLE)
            tick("6 exact stage (embedding_bag + document_maxsim)")
            best = S.order_by_score(exact, candidates, 10)
            tick("7 top k")
            found = candidates[best]
            stages.setdefault("sum of the stages", []).append(sum(v[-1] for k, v in stages.items() if k[0].isdigit()))

            table_np = table.numpy()
            if flush is not None:  # the reference starts from the caches the exact stage had
                flush += 1
                rows, row_of = S.exact_rows(data, Qp, scores, candidates)
                table_np = S.query_table(Qp, data.byte_weights_t).numpy()
            clock[0] = time.perf_counter()
            loop = np.empty(candidates.shape[0], dtype=np.float32)
            for a, b, packed, base in chunks(candidates):
                loop[a:b] = exact_loop(rows, row_of, lq, table_np, data.codes, packed, base, data.doc_offsets,
                                       candidates[a:b], data.scales, SCALE_TABLE)
            tick("(reference) exact stage as the former numba loop")
            # the lookups' index type, A/B: the exact stage run again with int32 (as search_one) and int64 lookups,
            # the order alternating query by query (whichever runs second finds more in the caches)
            kernels = [("int32", np.int32), ("int64", np.int64)]
            for name, index_dtype in kernels if len(stages.get("sum of the stages", [])) % 2 else kernels[::-1]:
                if flush is not None:
                    flush += 1
                    rows, row_of = S.exact_rows(data, Qp, scores, candidates)
                    table = S.query_table(Qp, data.byte_weights_t)
                clock[0] = time.perf_counter()
                again = np.empty(candidates.shape[0], dtype=np.float32)
                for a, b, packed, base in chunks(candidates):
                    again[a:b] = S.exact_interaction(rows, row_of, lq, table, data.codes, packed, base,
                                                     data.doc_offsets, candidates[a:b], data.scales, SCALE_TABLE,
                                                     index_dtype=index_dtype)
                tick(f"(A/B) exact stage again, {name} lookups, alternating order")
                if name == "int64":
                    wide = again
            mismatched_int64 += not np.array_equal(wide, exact)
            last = {name: v[-1] for name, v in stages.items()}
            stages.setdefault("sum of the stages, with the two references instead", []).append(
                last["sum of the stages"] - last["3 pruned centroid interaction (inverted lists or token codes)"]
                - last["6 exact stage (embedding_bag + document_maxsim)"]
                + last["(reference) pruned pass through the token codes only"]
                + last["(reference) exact stage as the former numba loop"])
            worst_gap = max(worst_gap, float(np.abs(loop - exact).max() / max(1e-6, np.abs(loop).max())))
            if flush is not None:
                flush += 1
            clock[0] = time.perf_counter()
            hits = index.search([Q], k=10, threads=1)[0]
            tick("PlaidIndex.search, whole")
            if flush is not None:
                flush += 1
            clock[0] = time.perf_counter()
            retriever.search("q", k=10, with_text=False, encoded=[Q])
            tick("Retriever.search, whole (encoded query, no texts)")
            mismatched += [h.doc_id for h in hits] != [index._stored_ids[d] for d in found.tolist()]

    print(machine())
    caches = (f"cold caches (a {args.flush_mb} MB buffer written before each query and whole search)"
              if flush is not None else "warm caches")
    print(f"{caches}; {args.index}: {len(index)} documents, {data.codes.shape[0]:,} token vectors, {data.centroids_np.shape[0]:,} "
          f"centroids, {data.byte_weights.shape[0]} residual bytes per vector; {len(encoded)} queries, k=10, 'auto' settings, "
          "1 thread")
    print_table(["stage", "p50 ms", "mean ms"],
                [[name, f"{np.median(v):.3f}", f"{np.mean(v):.3f}"] for name, v in stages.items()])
    print("the pruned pass's two reads, median per query: " + ", ".join(f"{k} {np.median(v):,.0f}" for k, v in reads.items()))
    print(f"float32 centroid rows of the exact stage, median per query: {np.median(exact_rows[-len(encoded):]):,.0f} of "
          f"{data.centroids_np.shape[0]:,} ({index.info()['centroid_scores']} centroid scores)")
    print(f"largest relative gap between the exact stage and the reference loop: {worst_gap:.1e}; queries whose pruned "
          f"scores differ from the token-code pass's: {mismatched_pruned // args.rounds}; queries whose top 10 differ "
          f"from PlaidIndex.search's: {mismatched // args.rounds}; queries whose exact scores differ with int64 "
          f"lookups: {mismatched_int64 // args.rounds}")


if __name__ == "__main__":
    main()
