"""Numba kernels of inverted-index search over one segment: exact MaxScore (seeded threshold, impact-ordered heads,
block-max bounds), exact term-at-a-time accumulation, approximate impact-ordered accumulation, and exact scoring of a document list.

Shared conventions (all kernels):

- queries in CSR: ``q_indptr`` int64 (Q + 1,), ``q_indices`` int32 ascending within a query, ``q_values`` float32
  (every weight > 0, checked by the caller);
- impacts are codes (uint8, or the uint16 bits of a float16) decoded by ``table`` (float64); every stored weight
  ``w`` satisfies ``|w - table[code]| <= eps``;
- the final score of every returned document is its exact dot product, computed in float64 from the
  unquantised forward index (``fwd_indptr``, ``fwd_indices``, ``fwd_values``);
- ``init_theta`` float64 (Q,): a score a document must beat (strictly) to be returned, i.e. the k-th best score
  already found in earlier segments (documents there have lower numbers and so win ties), or -inf;
- ``allowed`` uint8 (n,) with ``use_allowed``: only documents whose flag is 1 are returned (deletions, subsets);
- exact MaxScore first scores a few documents from the heaviest terms' impact-ordered lists (a threshold theta),
  then takes each list's impact-ordered head long enough that the rest of every list ("tail") is bounded by the
  head's last impact; when those tail bounds sum below theta, only head documents can make the top k, and those
  whose head impacts plus the other lists' tail bounds reach theta are scored exactly. When the stored heads are
  too short for that, it walks the document-ordered lists in windows, accumulating the essential lists and
  bounding each document with the block maxima of the non-essential ones (as Lucene's MaxScore does);
- outputs ``out_docs`` int64 (Q, k), ``out_scores`` float64 (Q, k), ``out_counts`` int64 (Q,): each query's best
  documents (segment-local numbers), best first, ties by lower number.

Why exact search is exact: a document is skipped only when an upper bound of its score (term maxima, block maxima,
tail bounds or decoded impacts plus ``eps``, all multiplied by the query weight, enlarged by a relative slack that
covers floating-point rounding of the sums, float32 accumulators included) is below the current k-th best exact
score, and that threshold only ever comes from real documents' exact scores; every document that survives is
scored exactly from the forward index.
"""

from __future__ import annotations

import os

import numba
import numpy as np

#: Relative enlargement of every upper bound before it is compared with a threshold (float64 rounding of sums).
SLACK = 1.0 + 1e-9
_NO_DOC = np.iinfo(np.int64).max


@numba.njit(cache=True, nogil=True, inline="always")
def _worse(s1, d1, s2, d2):
    """True when (s1, d1) ranks below (s2, d2): lower score, or equal score and higher document number."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@numba.njit(cache=True, nogil=True)
def _sift_down(hs, hd, size, i):
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        worst = left
        right = left + 1
        if right < size and _worse(hs[right], hd[right], hs[left], hd[left]):
            worst = right
        if _worse(hs[worst], hd[worst], hs[i], hd[i]):
            hs[i], hs[worst] = hs[worst], hs[i]
            hd[i], hd[worst] = hd[worst], hd[i]
            i = worst
        else:
            return


@numba.njit(cache=True, nogil=True)
def _heap_offer(hs, hd, size, k, s, d):
    """Offer (s, d) to a min-heap of at most k entries (root = worst); returns the new size."""
    if size < k:
        i = size
        hs[i] = s
        hd[i] = d
        size += 1
        while i > 0:
            parent = (i - 1) // 2
            if _worse(hs[i], hd[i], hs[parent], hd[parent]):
                hs[i], hs[parent] = hs[parent], hs[i]
                hd[i], hd[parent] = hd[parent], hd[i]
                i = parent
            else:
                break
        return size
    if _worse(hs[0], hd[0], s, d):
        hs[0] = s
        hd[0] = d
        _sift_down(hs, hd, size, 0)
    return size


@numba.njit(cache=True, nogil=True)
def _emit(hs, hd, size, row, out_docs, out_scores, out_counts):
    """Write a heap's entries best first (score descending, number ascending) into output row ``row``.

    Pops the worst entry into the last free slot until the heap is empty (the heap is consumed).
    """
    out_counts[row] = size
    while size > 0:
        out_docs[row, size - 1] = hd[0]
        out_scores[row, size - 1] = hs[0]
        size -= 1
        hs[0] = hs[size]
        hd[0] = hd[size]
        _sift_down(hs, hd, size, 0)


@numba.njit(cache=True, nogil=True, inline="always")
def _exact(dense, fwd_indptr, fwd_indices, fwd_values, d):
    s = 0.0
    for j in range(fwd_indptr[d], fwd_indptr[d + 1]):
        s += np.float64(dense[fwd_indices[j]]) * np.float64(fwd_values[j])
    return s


def run_chunked(kernel, n_queries: int, threads: int | None, make_args) -> None:
    """Run ``kernel(lo, hi, *make_args(chunk))`` over ``threads`` query ranges (default: every core) in parallel.

    The kernels release the GIL; ``make_args(chunk)`` gives each range its own scratch arrays.
    """
    threads = (os.cpu_count() or 1) if threads is None else threads
    n = max(1, min(n_queries, threads))
    bounds = (np.arange(n + 1, dtype=np.int64) * n_queries) // n
    if n == 1:
        kernel(0, n_queries, *make_args(0))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(kernel, int(bounds[c]), int(bounds[c + 1]), *make_args(c)) for c in range(n)]
        for future in futures:
            future.result()


@numba.njit(cache=True, nogil=True, inline="always")
def _offer_new(hs, hd, size, k, s, d):
    """:func:`_heap_offer`, unless ``d`` is already in the heap (documents seen while seeding come back later)."""
    for i in range(size):
        if hd[i] == d:
            return size
    return _heap_offer(hs, hd, size, k, s, d)


@numba.njit(cache=True, nogil=True, inline="always")
def _prune_at(theta, factor):
    """The threshold bounds are compared with: ``theta`` scaled by ``factor`` (1 for exact search) when positive."""
    return theta * factor if theta > 0 else theta


@numba.njit(cache=True, nogil=True, inline="always")
def _offer_scored(hs, hd, size, k, s, d, theta, dedupe):
    """Offer exactly scored document ``d`` (score ``s``) to the top-k heap; returns ``(size, theta)``, ``theta``
    raised to the heap's minimum once the heap is full. ``dedupe`` skips a document already in the heap."""
    if dedupe:
        size = _offer_new(hs, hd, size, k, s, d)
    else:
        size = _heap_offer(hs, hd, size, k, s, d)
    if size == k and hs[0] > theta:
        theta = hs[0]
    return size, theta


@numba.njit(cache=True, nogil=True, inline="always")
def _tail_cap(i, h, w, terms, imp_offsets, imp_codes, df, table, eps, tcap):
    """Bound of list ``i``'s contribution to a document outside its first ``h`` impact-ordered postings."""
    if h >= df[i]:
        return 0.0
    a = imp_offsets[terms[i]]
    stored = imp_offsets[terms[i] + 1] - a
    code = imp_codes[a + h] if h < stored else imp_codes[a + stored - 1]
    return w[i] * min(table[code] + eps, tcap[i])


@numba.njit(cache=True, nogil=True, inline="always")
def _next_head(imp_codes, a, h, stored):
    """The next head length to try after ``h``: at least a quarter (and 16) longer, then to the end of the run of
    equal codes it stops in (so that the tail bound really drops)."""
    x = min(stored, h + max(16, h >> 2))
    if x == stored:
        return x
    code = imp_codes[a + x - 1]
    lo, hi = x, stored
    while lo < hi:
        mid = (lo + hi) >> 1
        if imp_codes[a + mid] < code:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, nogil=True)
def _walk(m, raw_t, raw_w, raw_ub, k, hs, hd, size, theta, factor, dedupe, post_offsets, post_docs, codes, table, eps,
          block_size, block_offsets, block_last, block_max, term_max, fwd_indptr, fwd_indices, fwd_values, allowed,
          use_allowed, dense, window):
    """MaxScore over the document-ordered lists of the ``m`` terms ``raw_t`` (weights ``raw_w``, bounds ``raw_ub``),
    offering to the heap ``hs``, ``hd`` (``size`` entries, threshold ``theta``; ``dedupe``: it may already hold some
    documents); returns the heap's new size."""
    order = np.argsort(raw_ub[:m], kind="mergesort")
    terms = raw_t[order]
    w = raw_w[order]
    ub = raw_ub[order]
    prefix = np.zeros(m + 1, dtype=np.float64)
    for i in range(m):
        prefix[i + 1] = prefix[i] + ub[i]
    cur = np.empty(m, dtype=np.int64)
    end = np.empty(m, dtype=np.int64)
    bcur = np.empty(m, dtype=np.int64)
    bend = np.empty(m, dtype=np.int64)
    for i in range(m):
        cur[i] = post_offsets[terms[i]]
        end[i] = post_offsets[terms[i] + 1]
        bcur[i] = block_offsets[terms[i]]
        bend[i] = block_offsets[terms[i] + 1]
    ptheta = _prune_at(theta, factor)
    p = 0
    while p < m and prefix[p + 1] * SLACK < ptheta:
        p += 1
    # Documents are taken in windows of WINDOW numbers: the essential lists are accumulated term at a time into
    # the window (upper bounds from decoded impacts + eps), then each accumulated document is bounded with the
    # block maxima of the non-essential lists and, if it may still beat theta, scored exactly. The essential /
    # non-essential split is fixed for a window (its sums already hold the essential terms) and moves between them.
    acc = window
    while p < m:
        w0 = _NO_DOC
        for i in range(p, m):
            if cur[i] < end[i]:
                x = np.int64(post_docs[cur[i]])
                if x < w0:
                    w0 = x
        if w0 == _NO_DOC:
            break
        w1 = w0 + acc.shape[0]
        p0 = p
        # Block-max bound of the whole window; a window that cannot reach theta is skipped unread.
        wbound = prefix[p0]
        for i in range(p0, m):
            b = bcur[i]
            while b < bend[i] and block_last[b] < w0:
                b += 1
            bcur[i] = b
            if b == bend[i]:
                continue
            top = 0.0
            while b < bend[i]:
                v = table[block_max[b]]
                if v > top:
                    top = v
                if block_last[b] >= w1 - 1:
                    break
                b += 1
            wbound += w[i] * min(top + eps, np.float64(term_max[terms[i]]))
        if wbound * SLACK < ptheta:
            for i in range(p0, m):
                b = bcur[i]
                while b < bend[i] and block_last[b] < w1:
                    b += 1
                first = post_offsets[terms[i]] + (b - block_offsets[terms[i]]) * block_size
                if first > cur[i]:
                    cur[i] = min(first, end[i])
                while cur[i] < end[i] and post_docs[cur[i]] < w1:
                    cur[i] += 1
            continue
        for i in range(p0, m):
            wi = w[i]
            c = cur[i]
            e = end[i]
            while c < e:
                d = np.int64(post_docs[c])
                if d >= w1:
                    break
                acc[d - w0] += wi * (table[codes[c]] + eps)
                c += 1
            cur[i] = c
        rest = prefix[p0]
        for j in range(acc.shape[0]):
            partial = acc[j]
            if partial == 0.0:
                continue
            acc[j] = 0.0
            d = w0 + j
            if use_allowed and allowed[d] == 0:
                continue
            bound = partial + rest
            if bound * SLACK < ptheta:
                continue
            pruned = False
            i = p0 - 1
            while i >= 0:
                while bcur[i] < bend[i] and block_last[bcur[i]] < d:
                    bcur[i] += 1
                contrib = 0.0
                if bcur[i] < bend[i]:
                    contrib = w[i] * min(table[block_max[bcur[i]]] + eps, np.float64(term_max[terms[i]]))
                bound = bound - ub[i] + contrib
                if bound * SLACK < ptheta:
                    pruned = True
                    break
                i -= 1
            if pruned:
                continue
            s = _exact(dense, fwd_indptr, fwd_indices, fwd_values, d)
            if s > theta:
                size, theta = _offer_scored(hs, hd, size, k, s, d, theta, dedupe)
                ptheta = _prune_at(theta, factor)
        while p < m and prefix[p + 1] * SLACK < ptheta:
            p += 1
    return size


@numba.njit(cache=True, nogil=True)
def _maxscore_one(qi, q_indptr, q_indices, q_values, k, theta0, factor, post_offsets, post_docs, codes, table,
                  eps, block_size, block_offsets, block_last, block_max, term_max, imp_offsets, imp_docs, imp_codes,
                  seed_terms, seed_depth, head_ratio, fwd_indptr, fwd_indices, fwd_values, allowed, use_allowed, dense,
                  window, val, touched, out_docs, out_scores, out_counts):
    n_docs = fwd_indptr.shape[0] - 1
    qa, qb = q_indptr[qi], q_indptr[qi + 1]
    nq = qb - qa
    terms = np.empty(nq, dtype=np.int64)
    w = np.empty(nq, dtype=np.float64)
    ub = np.empty(nq, dtype=np.float64)
    m = 0
    for j in range(qa, qb):
        t = q_indices[j]
        dense[t] = np.float64(q_values[j])
        if post_offsets[t + 1] > post_offsets[t]:
            terms[m] = t
            w[m] = np.float64(q_values[j])
            ub[m] = w[m] * np.float64(term_max[t])
            m += 1
    df = np.empty(m, dtype=np.int64)
    tcap = np.empty(m, dtype=np.float64)  # largest weight of each list (a decoded impact + eps may claim more)
    for i in range(m):
        df[i] = post_offsets[terms[i] + 1] - post_offsets[terms[i]]
        tcap[i] = np.float64(term_max[terms[i]])
    hs = np.empty(k, dtype=np.float64)
    hd = np.empty(k, dtype=np.int64)
    size = 0
    theta = theta0
    ptheta = _prune_at(theta, factor)
    cap = ub[:m].copy()  # bound of each list's contribution to a document outside its head (all: no heads yet)
    use_heads = imp_offsets.shape[0] > 0 and seed_terms > 0 and m > 0
    n_touched = 0

    if use_heads:
        # 1. Seed: score exactly the first postings of the heaviest terms' impact-ordered heads (real documents
        # with exact scores, so the threshold they give is safe).
        heavy = np.argsort(-ub[:m], kind="mergesort")
        for r in range(min(m, seed_terms)):
            t = terms[heavy[r]]
            a = imp_offsets[t]
            b = min(imp_offsets[t + 1], a + seed_depth)
            for pp in range(a, b):
                d = np.int64(imp_docs[pp])
                if use_allowed and allowed[d] == 0:
                    continue
                s = _exact(dense, fwd_indptr, fwd_indices, fwd_values, d)
                if s > theta:
                    size, theta = _offer_scored(hs, hd, size, k, s, d, theta, True)
                    ptheta = _prune_at(theta, factor)
        # 2. Heads: take the first h_i impact-ordered postings of each list, growing (see :func:`_next_head`) the head
        # that lowers the tail bound most per posting, until the tail bounds sum below head_ratio * theta (or the stored
        # heads run out). A document outside every head then scores at most S = sum of the tail bounds.
        h = np.zeros(m, dtype=np.int64)
        stored = np.empty(m, dtype=np.int64)
        for i in range(m):
            stored[i] = min(imp_offsets[terms[i] + 1] - imp_offsets[terms[i]], df[i])
        total = 0.0
        for i in range(m):
            total += cap[i]
        target = head_ratio * ptheta if ptheta > 0 else -1.0
        # The next step of each head (its length, its tail bound, the bound it removes per posting), kept up to date.
        nxt_h = np.zeros(m, dtype=np.int64)
        nxt_c = np.zeros(m, dtype=np.float64)
        gain = np.full(m, -1.0)
        for i in range(m):
            if stored[i] > 0:
                nxt_h[i] = _next_head(imp_codes, imp_offsets[terms[i]], 0, stored[i])
                nxt_c[i] = _tail_cap(i, nxt_h[i], w, terms, imp_offsets, imp_codes, df, table, eps, tcap)
                gain[i] = (cap[i] - nxt_c[i]) / nxt_h[i]
        while total * SLACK >= target:
            bi = -1
            best = -1.0
            for i in range(m):
                if gain[i] > best:
                    best = gain[i]
                    bi = i
            if bi < 0:
                break
            total += nxt_c[bi] - cap[bi]
            cap[bi] = nxt_c[bi]
            h[bi] = nxt_h[bi]
            if h[bi] >= stored[bi]:
                gain[bi] = -1.0
            else:
                nxt_h[bi] = _next_head(imp_codes, imp_offsets[terms[bi]], h[bi], stored[bi])
                nxt_c[bi] = _tail_cap(bi, nxt_h[bi], w, terms, imp_offsets, imp_codes, df, table, eps, tcap)
                gain[bi] = (cap[bi] - nxt_c[bi]) / (nxt_h[bi] - h[bi])
        total = 0.0
        for i in range(m):
            total += cap[i]
        if total * SLACK < ptheta:
            # Accumulate the heads: val[d] = sum over the heads holding d of (impact bound - that list's tail
            # bound) >= 0, in float32 (rounding covered by hslack), so that S + val[d] bounds d's score. A document
            # whose head impacts all equal their tail bounds stays at 0 and is bounded by S like the others.
            hslack = SLACK + (m + 2) * 2.5e-7
            small = table.shape[0] <= 256
            lut = np.zeros(256 if small else 0, dtype=np.float32)
            n_head = 0
            for i in range(m):
                n_head += h[i]
            # Many head postings: accumulate blindly and find the head documents by one sequential pass over val;
            # few: remember each document when it is first touched.
            scan = n_head * 8 > n_docs
            for i in range(m):
                a = imp_offsets[terms[i]]
                wi = w[i]
                ci = cap[i]
                if small:  # the float32 increment of every uint8 code, once per list
                    for c in range(256):
                        lut[c] = np.float32(max(wi * min(table[c] + eps, tcap[i]) - ci, 0.0))
                if scan and small:
                    for pp in range(a, a + h[i]):
                        val[imp_docs[pp]] += lut[imp_codes[pp]]
                    continue
                for pp in range(a, a + h[i]):
                    d = np.int64(imp_docs[pp])
                    if small:
                        v = lut[imp_codes[pp]]
                    else:
                        v = np.float32(max(wi * min(table[imp_codes[pp]] + eps, tcap[i]) - ci, 0.0))
                    if scan:
                        val[d] += v
                    elif v > 0:
                        old = val[d]
                        if old == 0:
                            touched[n_touched] = d
                            n_touched += 1
                        val[d] = old + v
            # The head documents whose bound reaches theta, scored best bound first (theta rises early, and the
            # first bound below theta ends the loop).
            nc = 0
            if scan:
                # A float32 screen a little below the float64 test (so it lets every candidate through), then the test.
                need = np.float32(max((ptheta / hslack - total) * (1.0 - 1e-5), 1e-30))
                for d in range(n_docs):
                    v = val[d]
                    val[d] = 0.0
                    if v >= need:
                        if (total + np.float64(v)) * hslack >= ptheta and not (use_allowed and allowed[d] == 0):
                            val[d] = v
                            touched[nc] = d
                            nc += 1
            else:
                for j in range(n_touched):
                    d = touched[j]
                    if (total + np.float64(val[d])) * hslack >= ptheta and not (use_allowed and allowed[d] == 0):
                        touched[nc] = d
                        nc += 1
                    else:
                        val[d] = 0.0
            cv = np.empty(nc, dtype=np.float64)
            for j in range(nc):
                cv[j] = -np.float64(val[touched[j]])
            best_first = np.argsort(cv)
            for r in range(nc):
                j = best_first[r]
                if (total - cv[j]) * hslack < ptheta:
                    break
                d = touched[j]
                s = _exact(dense, fwd_indptr, fwd_indices, fwd_values, d)
                if s > theta:
                    size, theta = _offer_scored(hs, hd, size, k, s, d, theta, True)
                    ptheta = _prune_at(theta, factor)
            for j in range(nc):
                val[touched[j]] = 0.0
            m = 0  # no document outside the heads can reach theta
        else:
            # The stored heads cannot bound the rest below theta: walk the document-ordered lists for everything.
            for i in range(m):
                cap[i] = ub[i]

    # 3. Without heads (none stored, or too short to bound the rest below theta): MaxScore over the
    # document-ordered lists, block-max bounds on the non-essential lists, documents taken in windows.
    if m > 0:
        size = _walk(m, terms, w, ub, k, hs, hd, size, theta, factor, use_heads, post_offsets, post_docs, codes,
                     table, eps, block_size, block_offsets, block_last, block_max, term_max, fwd_indptr, fwd_indices,
                     fwd_values, allowed, use_allowed, dense, window)
    for j in range(qa, qb):
        dense[q_indices[j]] = 0.0
    _emit(hs, hd, size, qi, out_docs, out_scores, out_counts)


@numba.njit(cache=True, nogil=True)
def maxscore_search(lo, hi, q_indptr, q_indices, q_values, k, init_theta, factor, post_offsets, post_docs, codes,
                    table, eps, block_size, block_offsets, block_last, block_max, term_max, imp_offsets, imp_docs,
                    imp_codes, seed_terms, seed_depth, head_ratio, fwd_indptr, fwd_indices, fwd_values, allowed,
                    use_allowed, out_docs, out_scores, out_counts, dense, window, val, touched):
    """Exact top-k: a seeded threshold, then the impact-ordered heads, else MaxScore over the document-ordered lists.

    1. The first ``seed_depth`` documents of the ``seed_terms`` heaviest query terms' impact-ordered lists are
       scored exactly: a threshold theta from the start (real documents, exact scores, so it is safe).
    2. Each list's head (its first postings in impact order, at most the stored ones) is taken long enough that
       the bounds of the rest of the lists ("tail bounds": the head's last decoded impact + eps) sum to S below
       ``head_ratio`` * theta where the stored heads allow. A document outside every head scores at most S, below
       theta: it cannot be in the top k. The head postings are accumulated (float32, rounding covered by a slack),
       and every head document whose bound (S plus, per head holding it, its impact bound minus the tail bound)
       reaches theta is scored exactly, best bound first.
    3. If the stored heads cannot bring S below theta (short heads, or none): MaxScore over the document-ordered
       lists, with block-max bounds on the non-essential lists, documents taken in windows.

    ``imp_offsets``, ``imp_docs``, ``imp_codes``: the impact-ordered heads (empty arrays, or ``seed_terms`` = 0:
    steps 1-2 are skipped and step 3 covers every document). ``factor`` >= 1 multiplies the pruning threshold
    (1 = exact; larger prunes more and may miss documents). Scratch, left zero: ``dense`` float32 (V,),
    ``window`` float64 (W,), ``val`` float32 (n,); ``touched`` int64 (n,) (any content).
    """
    for qi in range(lo, hi):
        _maxscore_one(qi, q_indptr, q_indices, q_values, k, init_theta[qi], factor, post_offsets, post_docs,
                      codes, table, eps, block_size, block_offsets, block_last, block_max, term_max, imp_offsets,
                      imp_docs, imp_codes, seed_terms, seed_depth, head_ratio, fwd_indptr, fwd_indices, fwd_values,
                      allowed, use_allowed, dense, window, val, touched, out_docs, out_scores,
                      out_counts)


@numba.njit(cache=True, nogil=True)
def taat_search(lo, hi, q_indptr, q_indices, q_values, k, init_theta, post_offsets, post_docs, codes, table, eps,
                fwd_indptr, fwd_indices, fwd_values, allowed, use_allowed,
                out_docs, out_scores, out_counts, dense, acc_u, acc_m, touched, lows):
    """Exact top-k by term-at-a-time accumulation of impact bounds, then exact re-scoring of the candidates.

    Every matching document gets an upper bound U (decoded impacts + eps) and a lower bound L (decoded - eps) of
    its score; the k-th largest L is a floor under the k-th best exact score, so only documents whose U reaches it
    can be in the top k, and those are scored exactly. Scratch (left zero): ``dense`` float64 (V,), ``acc_u``,
    ``acc_m``, ``lows`` float64 (n,), ``touched`` int64 (n,).
    """
    hs = np.empty(k, dtype=np.float64)
    hd = np.empty(k, dtype=np.int64)
    for qi in range(lo, hi):
        n_touched = 0
        qa, qb = q_indptr[qi], q_indptr[qi + 1]
        for j in range(qa, qb):
            t = q_indices[j]
            wq = np.float64(q_values[j])
            dense[t] = wq
            for p in range(post_offsets[t], post_offsets[t + 1]):
                d = post_docs[p]
                if acc_m[d] == 0.0:
                    touched[n_touched] = d
                    n_touched += 1
                acc_u[d] += wq * (table[codes[p]] + eps)
                acc_m[d] += wq
        n_low = 0
        for i in range(n_touched):
            d = touched[i]
            if use_allowed and allowed[d] == 0:
                continue
            lows[n_low] = acc_u[d] - 2.0 * eps * acc_m[d]
            n_low += 1
        floor = -np.inf
        if n_low >= k:
            floor = np.partition(lows[:n_low], n_low - k)[n_low - k] / SLACK
        theta = init_theta[qi]
        size = 0
        for i in range(n_touched):
            d = touched[i]
            if use_allowed and allowed[d] == 0:
                continue
            u = acc_u[d] * SLACK
            if u < floor or u < theta:
                continue
            s = _exact(dense, fwd_indptr, fwd_indices, fwd_values, d)
            if s > theta:
                size = _heap_offer(hs, hd, size, k, s, d)
        for i in range(n_touched):
            acc_u[touched[i]] = 0.0
            acc_m[touched[i]] = 0.0
        for j in range(qa, qb):
            dense[q_indices[j]] = 0.0
        _emit(hs, hd, size, qi, out_docs, out_scores, out_counts)


@numba.njit(cache=True, nogil=True)
def approximate_search(lo, hi, q_indptr, q_indices, q_values, k, init_theta, query_terms, depth, rerank, imp_offsets,
                       imp_docs, imp_codes, table, fwd_indptr, fwd_indices, fwd_values, allowed, use_allowed,
                       out_docs, out_scores, out_counts, dense, acc, seen, touched):
    """Approximate top-k: the ``query_terms`` heaviest query terms, each term's ``depth`` largest postings
    (impact order), accumulated; the ``rerank`` best accumulated documents are scored exactly, the best k returned.

    The returned scores are exact dot products; only documents outside the scanned postings can be missed.
    Scratch (left zero): ``dense`` float64 (V,), ``acc`` float64 (n,), ``seen`` uint8 (n,), ``touched`` int64 (n,).
    """
    hs = np.empty(k, dtype=np.float64)
    hd = np.empty(k, dtype=np.int64)
    cs = np.empty(rerank, dtype=np.float64)
    cd = np.empty(rerank, dtype=np.int64)
    for qi in range(lo, hi):
        qa, qb = q_indptr[qi], q_indptr[qi + 1]
        nq = qb - qa
        weights = np.empty(nq, dtype=np.float64)
        for j in range(qa, qb):
            dense[q_indices[j]] = np.float64(q_values[j])
            weights[j - qa] = np.float64(q_values[j])
        order = np.argsort(-weights, kind="mergesort")
        n_touched = 0
        for r in range(min(nq, query_terms)):
            j = qa + order[r]
            t = q_indices[j]
            wq = weights[order[r]]
            a = imp_offsets[t]
            b = min(imp_offsets[t + 1], a + depth)
            for p in range(a, b):
                d = imp_docs[p]
                if seen[d] == 0:
                    seen[d] = 1
                    touched[n_touched] = d
                    n_touched += 1
                acc[d] += wq * table[imp_codes[p]]
        n_cand = 0
        for i in range(n_touched):
            d = touched[i]
            if use_allowed and allowed[d] == 0:
                continue
            n_cand = _heap_offer(cs, cd, n_cand, rerank, acc[d], d)
        theta = init_theta[qi]
        size = 0
        for i in range(n_cand):
            d = cd[i]
            s = _exact(dense, fwd_indptr, fwd_indices, fwd_values, d)
            if s > theta:
                size = _heap_offer(hs, hd, size, k, s, d)
        for i in range(n_touched):
            acc[touched[i]] = 0.0
            seen[touched[i]] = 0
        for j in range(qa, qb):
            dense[q_indices[j]] = 0.0
        _emit(hs, hd, size, qi, out_docs, out_scores, out_counts)


@numba.njit(cache=True, nogil=True)
def score_list(lo, hi, q_indptr, q_indices, q_values, k, init_theta, docs, fwd_indptr, fwd_indices, fwd_values,
               out_docs, out_scores, out_counts, dense):
    """Exact top-k among the documents ``docs`` int64 (S,) only (small subsets): each scored from the forward index.

    Documents with score 0 are not returned (the caller fills up with them). ``dense``: float64 (V,) zeros.
    """
    hs = np.empty(k, dtype=np.float64)
    hd = np.empty(k, dtype=np.int64)
    for qi in range(lo, hi):
        qa, qb = q_indptr[qi], q_indptr[qi + 1]
        for j in range(qa, qb):
            dense[q_indices[j]] = np.float64(q_values[j])
        theta = max(init_theta[qi], 0.0)
        size = 0
        for i in range(docs.shape[0]):
            d = docs[i]
            s = _exact(dense, fwd_indptr, fwd_indices, fwd_values, d)
            if s > theta:
                size = _heap_offer(hs, hd, size, k, s, d)
        for j in range(qa, qb):
            dense[q_indices[j]] = 0.0
        _emit(hs, hd, size, qi, out_docs, out_scores, out_counts)


__all__ = ["run_chunked", "maxscore_search", "taat_search", "approximate_search", "score_list", "SLACK"]
