"""Exact top-k BM25 by block-max pruning over row ranges (after Mallia, Suel and Tonellotto's
BMP, SIGIR 2024), over the bm25s CSC matrix and the range maxima of ``rowmax``.

Per query:

1. Bound every range of ``2**shift`` rows: the sum over query terms of ``weight x`` the term's
   largest score in the range (read off a rare term's postings, from the precomputed bytes of a
   frequent one), accumulated in the caller's zeroed float32 scratch.
2. Score the ``first`` ranges of highest bound (each term's postings located by binary search):
   the top-k found there gives a k-th score ``theta`` close to the final one at once.
3. Sweep the other ranges in row order, scoring only those whose bound, with a slack above
   float32 rounding, still exceeds ``theta`` (which keeps rising); each term keeps a cursor that
   gallops forward to the range. At each sixteenth of the sweep up to half, the ranges scored
   so far are extrapolated: past the query's postings / ``FALLBACK`` (a large k, flat bounds)
   the exhaustive kernel is cheaper and finishes the query.

A range is scored like the exhaustive kernel scores a row (``exhaustive``): each term's
``w * score`` added in query-term order into a zeroed float32 slot, so scores are bit-identical,
and hits enter one heap ordered by (score desc, row asc), so the top k and its ties are the
exhaustive kernel's whatever order ranges are visited in. A skipped range's bound is below
``theta``, so none of its rows could have entered.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .exhaustive import DAMAGED, _drain, _gallop, _lower_bound, _push, _worse
from .exhaustive import _one_query as _exhaustive

GROUP = 64  # ranges whose largest bound is kept together
FALLBACK = 64  # bmp scores a range in about the time the exhaustive kernel adds 64+ postings


@njit(nogil=True, cache=True)
def _score_range(b, shift, tids, tw, slots, qmax, data, indices, indptr, pos, gallop, loc, hs,
                 hr, n, k, num_docs, err):  # fmt: skip
    """Score the rows of range ``b`` and offer them to the heap; returns the heap size.
    ``gallop``: move each term's cursor ``pos`` forward (ranges visited in row order). A row id
    outside the range or the documents (a damaged file) is skipped and sets ``err[0]``."""
    lo_row = np.int64(b) << shift
    hi_row = lo_row + (1 << shift)
    width = 1 << shift
    for i in range(len(tids)):
        t = tids[i]
        if slots[i] >= 0 and qmax[slots[i], b] == 0:
            continue  # the term has no posting in this range
        e = indptr[t + 1]
        if gallop:
            p = _gallop(indices, pos[i], e, lo_row)
        else:
            p = _lower_bound(indices, indptr[t], e, lo_row)
        w = tw[i]
        while p < e and indices[p] < hi_row:
            d = indices[p]
            if d < lo_row or d >= num_docs:
                err[0] = True
            else:
                loc[d - lo_row] += w * data[p]
            p += 1
        if gallop:
            pos[i] = p
    for j in range(width):
        s = loc[j]
        if s > 0:
            loc[j] = 0.0
            if n < k or _worse(hs[0], hr[0], s, lo_row + j):
                n = _push(hs, hr, n, k, s, np.int32(lo_row + j))
    return n


@njit(nogil=True, cache=True)
def _group_max(ub, gmax, g_lo, g_hi, lo_r, hi_r):
    """``gmax[g - g_lo]``: the largest bound of group ``g``'s ranges within ``[lo_r, hi_r]``.
    Bounds are >= 0, so their bits order as int32 and the max is taken on those: a float max
    does not vectorise (its NaN rules), and this pass reads every range (at 5.3M passages it
    was a fifth of a query's time, now a twentieth)."""
    ubi = ub.view(np.int32)
    gmi = gmax.view(np.int32)
    for g in range(g_lo, g_hi + 1):
        seg = ubi[max(g * GROUP, lo_r) : min((g + 1) * GROUP, hi_r + 1)]
        top = np.int32(0)
        for j in range(len(seg)):
            top = max(top, seg[j])
        gmi[g - g_lo] = top


@njit(nogil=True, cache=True)
def _one_query(tids, tw, data, indices, indptr, tmax, slot, qmax, shift, k, first, fallback, ub,
               seen, out_r, out_s):  # fmt: skip
    """Top ``k`` into ``out_r``/``out_s`` (best first); returns the hit count. ``ub`` (float32)
    and ``seen`` (bool), one entry per document, are zeroed on entry and left zeroed.
    ``fallback`` > 0: when the ranges to score, extrapolated from the first part of the sweep,
    pass postings / ``fallback`` (a large k, or bounds too flat to prune), the exhaustive
    kernel is cheaper and finishes the query."""
    nt = len(tids)
    if nt == 0:
        return 0
    num_docs = len(ub)
    nr = ((num_docs - 1) >> shift) + 1
    slots = np.empty(nt, dtype=np.int64)
    err = np.zeros(1, dtype=np.bool_)
    lo_r, hi_r = nr, -1  # ranges with a bound: [lo_r, hi_r]
    for i in range(nt):
        t = tids[i]
        slots[i] = slot[t]
        w = tw[i]
        if slots[i] >= 0:  # frequent: one byte a range
            scale = np.float32(np.float64(w) * np.float64(tmax[t]) / 255.0)
            row = qmax[slots[i]]
            for r in range(nr):  # no branch: vectorised
                ub[r] += scale * np.float32(row[r])
            lo_r, hi_r = 0, nr - 1
        else:  # rare: the maxima of its postings, range by range
            cur, m, first_r = -1, np.float32(0.0), -1
            for p in range(indptr[t], indptr[t + 1]):
                if indices[p] < 0 or indices[p] >= num_docs:
                    err[0] = True
                    continue
                r = indices[p] >> shift
                if first_r < 0:
                    first_r = r
                if r != cur:
                    if cur >= 0:
                        ub[cur] += w * m
                    cur, m = r, data[p]
                elif data[p] > m:
                    m = data[p]
            if cur >= 0:
                ub[cur] += w * m
                lo_r = min(lo_r, first_r)
                hi_r = max(hi_r, cur)
    # float32 products and sums of the bounds stay within nt * 2**-24 of their real values,
    # and ``tmax * q / 255`` within a few ulps of a byte's real bound
    slack = 1.0 + (nt + 4) * 1e-6
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    loc = np.zeros(1 << shift, dtype=np.float32)
    pos = np.empty(nt, dtype=np.int64)
    for i in range(nt):
        pos[i] = indptr[tids[i]]
    # groups of GROUP ranges carry their largest bound, so that both passes below skip whole
    # groups that cannot hold a better range
    g_lo, g_hi = lo_r // GROUP, hi_r // GROUP
    gmax = np.zeros(max(g_hi - g_lo + 1, 1), dtype=np.float32)
    _group_max(ub, gmax, g_lo, g_hi, lo_r, hi_r)
    # 2. the ``first`` ranges of highest bound: a min-heap of (bound, range)
    m = max(min(first, hi_r - lo_r + 1), 1)
    top_v = np.zeros(m, dtype=np.float32)
    top_r = np.full(m, -1, dtype=np.int64)
    for g in range(g_lo, g_hi + 1):
        if gmax[g - g_lo] <= top_v[0]:
            continue
        for r in range(max(g * GROUP, lo_r), min((g + 1) * GROUP, hi_r + 1)):
            v = ub[r]
            if v > top_v[0]:
                j = 0
                while True:
                    c = 2 * j + 1
                    if c >= m:
                        break
                    if c + 1 < m and top_v[c + 1] < top_v[c]:
                        c += 1
                    if top_v[c] < v:
                        top_v[j] = top_v[c]
                        top_r[j] = top_r[c]
                        j = c
                    else:
                        break
                top_v[j] = v
                top_r[j] = r
    for j in range(m):
        r = top_r[j]
        if r >= 0:
            n = _score_range(r, shift, tids, tw, slots, qmax, data, indices, indptr, pos, False,
                             loc, hs, hr, n, k, num_docs, err)  # fmt: skip
            ub[r] = 0.0  # done
    theta = np.float64(hs[0]) if n == k else -1.0
    postings = 0
    for i in range(nt):
        postings += indptr[tids[i] + 1] - indptr[tids[i]]
    # 3. the rest in row order, while their bound can beat theta. At every sixteenth of the
    # groups up to half, the ranges scored so far are extrapolated over all groups: when that
    # passes postings / ``fallback`` (a large k, flat bounds), the exhaustive kernel finishes
    span = g_hi - g_lo + 1
    step = max(span // 16, 1)
    check = g_lo + step
    scored = 0
    for g in range(g_lo, g_hi + 1):
        if fallback > 0 and g == check and 2 * (g - g_lo) <= span:
            if scored * span * fallback > postings * (g - g_lo):
                ub[lo_r : hi_r + 1] = 0.0
                got = _exhaustive(tids, tw, data, indices, indptr, k, ub, seen, out_r, out_s)
                return DAMAGED if err[0] else got
            check += step
        if np.float64(gmax[g - g_lo]) * slack <= theta:
            continue
        for r in range(max(g * GROUP, lo_r), min((g + 1) * GROUP, hi_r + 1)):
            v = ub[r]
            if v > 0 and np.float64(v) * slack > theta:
                n = _score_range(r, shift, tids, tw, slots, qmax, data, indices, indptr, pos,
                                 True, loc, hs, hr, n, k, num_docs, err)  # fmt: skip
                scored += 1
                if n == k:
                    theta = np.float64(hs[0])
    ub[lo_r : hi_r + 1] = 0.0
    if err[0]:
        return DAMAGED
    return _drain(hs, hr, n, out_s, out_r)


@njit(nogil=True, cache=True)
def _query_range(qptr, tids, tw, data, indices, indptr, tmax, slot, qmax, shift, k, first,
                 fallback, lo, hi, ub, seen, rows, scores, counts):  # fmt: skip
    for q in range(lo, hi):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query(tids[a:b], tw[a:b], data, indices, indptr, tmax, slot, qmax,
                               shift, k, first, fallback, ub, seen, rows[q], scores[q])  # fmt: skip


@njit(nogil=True, cache=True)
def search_serial(qptr, tids, tw, data, indices, indptr, tmax, slot, qmax, shift, k, first,
                  fallback, ub, seen):  # fmt: skip
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32); rows past counts are -1.
    ``ub``/``seen``: zeroed float32/bool scratch, one entry per document (left zeroed)."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    _query_range(qptr, tids, tw, data, indices, indptr, tmax, slot, qmax, shift, k, first,
                 fallback, 0, nq, ub, seen, rows, scores, counts)  # fmt: skip
    return rows, scores, counts


@njit(nogil=True, cache=True, parallel=True)
def search_parallel(qptr, tids, tw, data, indices, indptr, tmax, slot, qmax, shift, k, first,
                    fallback, ub2, seen2):  # fmt: skip
    """``search_serial`` with the queries split into ``len(ub2)`` contiguous chunks."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    chunks = min(ub2.shape[0], nq)
    for ch in prange(chunks):
        lo = ch * nq // chunks
        hi = (ch + 1) * nq // chunks
        _query_range(qptr, tids, tw, data, indices, indptr, tmax, slot, qmax, shift, k, first,
                     fallback, lo, hi, ub2[ch], seen2[ch], rows, scores, counts)  # fmt: skip
    return rows, scores, counts
