"""Exact top-k BM25, document at a time: block-max MaxScore over the bm25s CSC matrix.

Each term's column is a posting list sorted by row, cut into blocks whose maximum score and
last row ``blockmax`` stores. Per query, one cursor per term walks its column, window by window:

- Terms are ordered by their bound (weight x the term's largest score). Once the heap holds
  ``k`` hits, the k-th score ``theta`` makes the lowest-bound terms whose bounds sum to at most
  ``theta`` *non-essential* (a row they alone match cannot enter the top k).
- A window runs from the next row to the first block end among the essential terms; in it each
  essential term is bounded by its current block's maximum (the others by their term bound),
  and the split is redone with these tighter bounds. A window where all terms are
  non-essential is skipped whole; otherwise candidates are the rows of the window's essential
  cursors, in row order.
- A candidate's essential contributions are added; the non-essential terms are then looked up,
  highest bound first, each skipping whole blocks by their last row, and the candidate is
  dropped as soon as its partial score plus the bounds left (the block maximum in place of the
  term bound once the block is known) cannot beat ``theta``.
- A surviving candidate's score is the exhaustive kernel's float32 sum (``kernels``): each
  term's ``w * score`` added in query-term order, absent terms adding 0.0, which changes no
  float. It enters the heap ordered by (score desc, row asc); rows come in ascending order,
  so a later row with the k-th score never displaces an earlier one, as in the exhaustive kernel.

Exactness: bounds are compared in float64 with a relative slack above float32 rounding, so
no row the exhaustive kernel would return is dropped, and scores are bit-identical to it.
Queries whose bounds are too flat to prune (the work so far, extrapolated over all rows, passes
``bail`` / 4 times their postings) finish with the exhaustive kernel, which needs ``acc``/``seen``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import DAMAGED, _drain, _gallop, _lower_bound, _push, _worse
from .kernels import _one_query as _exhaustive

END = np.int64(1 << 62)  # cursor past its last posting


@njit(nogil=True, cache=True, inline="always")
def _doc(indices, p, e):
    return np.int64(indices[p]) if p < e else END


@njit(nogil=True, cache=True)
def _one_query(
    tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, num_docs, out_r,
    out_s,
):  # fmt: skip
    """Top ``k`` into ``out_r``/``out_s``; returns the hit count, or -1 (outputs untouched)
    when ``bail`` > 0 and the work so far, extrapolated over all rows, passes ``bail`` / 4
    times the query's postings (the exhaustive kernel is then cheaper), or ``DAMAGED`` for a
    row id outside the documents."""
    nt = len(tids)
    if nt == 0:
        return 0
    postings = 0
    for i in range(nt):
        postings += indptr[tids[i] + 1] - indptr[tids[i]]
    work = 0
    check = num_docs >> 6  # next row at which the work is extrapolated
    slack = 1.0 + (nt + 4) * 1e-6  # float32 products and sums stay within nt * 2**-24
    w = np.empty(nt, dtype=np.float32)
    pos = np.empty(nt, dtype=np.int64)
    end = np.empty(nt, dtype=np.int64)
    base = np.empty(nt, dtype=np.int64)
    b0 = np.empty(nt, dtype=np.int64)
    b1 = np.empty(nt, dtype=np.int64)
    cur = np.empty(nt, dtype=np.int64)
    wb = np.empty(nt, dtype=np.int64)  # each term's block holding its first row >= ws
    lb = np.empty(nt, dtype=np.float64)  # its bound in the window: weight x that block's max
    lo = np.empty(nt, dtype=np.int64)  # terms by ascending window bound
    lpre = np.zeros(nt + 1, dtype=np.float64)  # lpre[j]: window bounds of lo[:j]
    for i in range(nt):
        t = tids[i]
        w[i] = tw[i]
        base[i] = indptr[t]
        pos[i] = indptr[t]
        end[i] = indptr[t + 1]
        b0[i] = bptr[t]
        b1[i] = bptr[t + 1]
        cur[i] = _doc(indices, pos[i], end[i])
    ub = np.empty(nt, dtype=np.float64)  # each term's bound: weight x its largest score
    for i in range(nt):
        ub[i] = np.float64(w[i]) * np.float64(tmax[tids[i]])
    gord = np.argsort(ub)  # ascending: gord[:gne] can only add to rows the others match
    gpre = np.zeros(nt + 1, dtype=np.float64)
    for j in range(nt):
        gpre[j + 1] = gpre[j] + ub[gord[j]]
    gne = 0
    contrib = np.zeros(nt, dtype=np.float32)
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    theta = -1.0  # k-th score once the heap is full
    ws = np.int64(0)  # window start
    while True:
        # 1. the window [ws, upto]: up to the first block end among the essential terms (the
        # others keep their term bound, so that windows stay wide)
        upto = END
        for j in range(nt):
            i = gord[j]
            if j < gne:
                lb[i] = ub[i]
                continue
            if cur[i] == END:
                lb[i] = 0.0
                continue
            bl = _gallop(blast, b0[i] + (pos[i] - base[i]) // bsize, b1[i], ws)
            if bl == b1[i]:
                pos[i] = end[i]
                cur[i] = END
                lb[i] = 0.0
                continue
            wb[i] = bl
            lb[i] = np.float64(w[i]) * np.float64(bmax[bl])
            if blast[bl] < upto:
                upto = np.int64(blast[bl])
        if upto == END:
            break
        if upto < ws:
            return DAMAGED  # block ends that do not rise (a damaged blocks.last.npy)
        # 2. split by window bounds: rows only the lowest terms match cannot beat theta
        for i in range(nt):  # insertion sort: queries have few terms
            x = lb[i]
            j = i
            while j > 0 and lb[lo[j - 1]] > x:
                lo[j] = lo[j - 1]
                j -= 1
            lo[j] = i
        for j in range(nt):
            lpre[j + 1] = lpre[j] + lb[lo[j]]
        ne = 0
        while ne < nt and lpre[ne + 1] * slack <= theta:
            ne += 1
        if ne < nt:
            for j in range(ne, nt):  # essential cursors to the window start
                i = lo[j]
                if cur[i] < ws:
                    bl = _gallop(blast, b0[i] + (pos[i] - base[i]) // bsize, b1[i], ws)
                    if bl == b1[i]:
                        pos[i] = end[i]
                        cur[i] = END
                        continue
                    start = base[i] + (bl - b0[i]) * bsize
                    if start > pos[i]:
                        pos[i] = start
                    last = min(start + bsize, end[i]) - 1
                    pos[i] = _lower_bound(indices, pos[i], last + 1, ws)
                    cur[i] = _doc(indices, pos[i], end[i])
        # 3. candidates of the window, from the essential cursors, in row order
        while ne < nt:
            d = END
            for j in range(ne, nt):
                if cur[lo[j]] < d:
                    d = cur[lo[j]]
            if d > upto:
                break
            if d < 0 or d >= num_docs:
                return DAMAGED  # a damaged postings file (no scratch to reset here)
            work += nt - ne
            bound = lpre[ne]
            for j in range(ne, nt):
                if cur[lo[j]] == d:
                    bound += lb[lo[j]]
            if bound * slack <= theta:
                for j in range(ne, nt):
                    i = lo[j]
                    if cur[i] == d:
                        pos[i] += 1
                        cur[i] = _doc(indices, pos[i], end[i])
                continue
            partial = 0.0
            for j in range(ne, nt):
                i = lo[j]
                if cur[i] == d:
                    c = w[i] * data[pos[i]]
                    contrib[i] = c
                    partial += np.float64(c)
                    pos[i] += 1
                    cur[i] = _doc(indices, pos[i], end[i])
                else:
                    contrib[i] = 0.0
            ok = True
            for j in range(ne - 1, -1, -1):  # the others, highest window bound first
                if (partial + lpre[j + 1]) * slack <= theta:
                    ok = False
                    break
                i = lo[j]
                contrib[i] = 0.0
                work += 1
                if cur[i] < d:
                    bl = _gallop(blast, b0[i] + (pos[i] - base[i]) // bsize, b1[i], d)
                    if bl == b1[i]:
                        pos[i] = end[i]
                        cur[i] = END
                        continue
                    start = base[i] + (bl - b0[i]) * bsize
                    if start > pos[i]:
                        pos[i] = start
                        cur[i] = _doc(indices, start, end[i])
                    if (
                        partial + np.float64(w[i]) * np.float64(bmax[bl]) + lpre[j]
                    ) * slack <= theta:
                        ok = False
                        break
                    if cur[i] < d:
                        last = min(start + bsize, end[i]) - 1
                        pos[i] = _lower_bound(indices, pos[i], last + 1, d)
                        cur[i] = _doc(indices, pos[i], end[i])
                if cur[i] == d:
                    c = w[i] * data[pos[i]]
                    contrib[i] = c
                    partial += np.float64(c)
            if not ok:
                continue
            s = np.float32(0.0)
            for q in range(nt):  # query-term order: the exhaustive kernel's float32 sum
                s += contrib[q]
            if s > 0 and (n < k or _worse(hs[0], hr[0], s, d)):
                n = _push(hs, hr, n, k, s, np.int32(d))
                if n == k:
                    theta = np.float64(hs[0])
                    while ne < nt and lpre[ne + 1] * slack <= theta:
                        ne += 1
                    while gne < nt and gpre[gne + 1] * slack <= theta:
                        gne += 1
        ws = upto + 1
        if bail > 0 and ws >= check and ws < num_docs:
            if work * num_docs * 4 > bail * postings * ws:
                return -1
            check = ws + (ws >> 1)
    return _drain(hs, hr, n, out_s, out_r)


@njit(nogil=True, cache=True)
def _query_range(
    qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, lo, hi,
    acc, seen, rows, scores, counts,
):  # fmt: skip
    for q in range(lo, hi):
        a, b = qptr[q], qptr[q + 1]
        n = _one_query(
            tids[a:b], tw[a:b], data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail,
            len(acc), rows[q], scores[q],
        )  # fmt: skip
        if n == -1:  # bailed out (DAMAGED is passed on)
            n = _exhaustive(tids[a:b], tw[a:b], data, indices, indptr, k, acc, seen, rows[q],
                            scores[q])  # fmt: skip
        counts[q] = n


@njit(nogil=True, cache=True)
def search_serial(
    qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, acc, seen
):
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32); rows past counts are -1.

    Same signature as ``pruned.search_serial``; ``acc``/``seen`` serve queries that bail out.
    """
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    _query_range(qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, 0, nq,
                 acc, seen, rows, scores, counts)  # fmt: skip
    return rows, scores, counts


@njit(nogil=True, cache=True, parallel=True)
def search_parallel(
    qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, acc2, seen2
):
    """``search_serial`` with the queries split into ``len(acc2)`` contiguous chunks."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    chunks = min(acc2.shape[0], nq)
    for ch in prange(chunks):
        lo = ch * nq // chunks
        hi = (ch + 1) * nq // chunks
        _query_range(qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k,
                     bail, lo, hi, acc2[ch], seen2[ch], rows, scores, counts)  # fmt: skip
    return rows, scores, counts
