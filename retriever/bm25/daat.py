"""Exact top-k BM25, document at a time: block-max MaxScore over the bm25s CSC matrix.

Each term's column is a posting list sorted by row, cut into blocks whose maximum score and
last row ``blockmax`` stores. Per query, one cursor per term walks its column:

- Terms are ordered by their bound (weight x the term's largest score). Once the heap holds
  ``k`` hits, the k-th score ``theta`` splits them: the lowest-bound terms whose bounds sum to
  at most ``theta`` are *non-essential* (a row they alone match cannot enter the top k), the
  others *essential*. Candidates are only the rows of essential cursors, in row order.
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
No per-document scratch is needed (``acc``/``seen`` are accepted for the common signature).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import _push, _sift_down, _worse

END = np.int64(1 << 62)  # cursor past its last posting


@njit(nogil=True, cache=True, inline="always")
def _doc(indices, p, e):
    return np.int64(indices[p]) if p < e else END


@njit(nogil=True, cache=True)
def _seek_block(blast, b, bend, d):
    """First block in ``[b, bend)`` whose last row is >= ``d`` (``bend`` if none): galloping."""
    if b >= bend or blast[b] >= d:
        return b
    step = 1
    while b + step < bend and blast[b + step] < d:
        b += step
        step <<= 1
    lo, hi = b + 1, min(b + step, bend)
    while lo < hi:
        mid = (lo + hi) >> 1
        if blast[mid] < d:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(nogil=True, cache=True)
def _seek_in_block(indices, lo, hi, d):
    """First posting in ``[lo, hi]`` with row >= ``d``, given that ``indices[hi] >= d``."""
    while hi - lo > 8:
        mid = (lo + hi) >> 1
        if indices[mid] < d:
            lo = mid + 1
        else:
            hi = mid
    while indices[lo] < d:
        lo += 1
    return lo


@njit(nogil=True, cache=True)
def _one_query(
    tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, out_r, out_s
):  # fmt: skip
    nt = len(tids)
    if nt == 0:
        return 0
    slack = 1.0 + (nt + 4) * 1e-6  # float32 products and sums stay within nt * 2**-24
    ub0 = np.empty(nt, dtype=np.float64)
    for i in range(nt):
        ub0[i] = np.float64(tw[i]) * np.float64(tmax[tids[i]])
    order = np.argsort(ub0)  # ascending bound: [0, ne) non-essential, [ne, nt) essential
    w = np.empty(nt, dtype=np.float32)
    ub = np.empty(nt, dtype=np.float64)
    pos = np.empty(nt, dtype=np.int64)
    end = np.empty(nt, dtype=np.int64)
    base = np.empty(nt, dtype=np.int64)
    b0 = np.empty(nt, dtype=np.int64)
    b1 = np.empty(nt, dtype=np.int64)
    cur = np.empty(nt, dtype=np.int64)
    prefix = np.zeros(nt + 1, dtype=np.float64)  # prefix[i]: bounds of sorted terms [0, i)
    for i in range(nt):
        q = order[i]
        t = tids[q]
        w[i] = tw[q]
        ub[i] = ub0[q]
        base[i] = indptr[t]
        pos[i] = indptr[t]
        end[i] = indptr[t + 1]
        b0[i] = bptr[t]
        b1[i] = bptr[t + 1]
        cur[i] = _doc(indices, pos[i], end[i])
        prefix[i + 1] = prefix[i] + ub[i]
    contrib = np.zeros(nt, dtype=np.float32)  # by query position
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    theta = -1.0  # k-th score once the heap is full
    ne = 0
    while ne < nt:
        d = END
        for i in range(ne, nt):
            if cur[i] < d:
                d = cur[i]
        if d == END:
            break
        # essential terms: block-max bound first (cheap), then their exact contributions
        if n == k:
            bound = prefix[ne]
            for i in range(ne, nt):
                if cur[i] == d:
                    bl = b0[i] + (pos[i] - base[i]) // bsize
                    bound += np.float64(w[i]) * np.float64(bmax[bl])
            if bound * slack <= theta:
                for i in range(ne, nt):
                    if cur[i] == d:
                        pos[i] += 1
                        cur[i] = _doc(indices, pos[i], end[i])
                continue
        partial = 0.0
        for i in range(ne, nt):
            if cur[i] == d:
                c = w[i] * data[pos[i]]
                contrib[order[i]] = c
                partial += np.float64(c)
                pos[i] += 1
                cur[i] = _doc(indices, pos[i], end[i])
            else:
                contrib[order[i]] = 0.0
        # non-essential terms, highest bound first, while the candidate can still enter
        ok = True
        for j in range(ne - 1, -1, -1):
            if (partial + prefix[j + 1]) * slack <= theta:
                ok = False
                break
            contrib[order[j]] = 0.0
            if cur[j] < d:
                bl = b0[j] + (pos[j] - base[j]) // bsize
                bl = _seek_block(blast, bl, b1[j], d)
                if bl == b1[j]:
                    pos[j] = end[j]
                    cur[j] = END
                    continue
                start = base[j] + (bl - b0[j]) * bsize
                if start > pos[j]:
                    pos[j] = start
                    cur[j] = np.int64(indices[start])
                if (partial + np.float64(w[j]) * np.float64(bmax[bl]) + prefix[j]) * slack <= theta:
                    ok = False
                    break
                if cur[j] < d:
                    last = min(start + bsize, end[j]) - 1
                    pos[j] = _seek_in_block(indices, pos[j], last, d)
                    cur[j] = np.int64(indices[pos[j]])
            if cur[j] == d:
                c = w[j] * data[pos[j]]
                contrib[order[j]] = c
                partial += np.float64(c)
        if not ok:
            continue
        s = np.float32(0.0)
        for q in range(nt):
            s += contrib[q]
        if s > 0 and (n < k or _worse(hs[0], hr[0], s, d)):
            n = _push(hs, hr, n, k, s, np.int32(d))
            if n == k:
                theta = np.float64(hs[0])
                while ne < nt and prefix[ne + 1] * slack <= theta:
                    ne += 1
    m = n
    while m > 0:
        out_s[m - 1] = hs[0]
        out_r[m - 1] = hr[0]
        m -= 1
        hs[0], hr[0] = hs[m], hr[m]
        _sift_down(hs, hr, 0, m)
    return n


@njit(nogil=True, cache=True)
def _query_range(
    qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, lo, hi,
    rows, scores, counts,
):  # fmt: skip
    for q in range(lo, hi):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query(
            tids[a:b], tw[a:b], data, indices, indptr, bptr, bmax, blast, tmax, bsize, k,
            rows[q], scores[q],
        )  # fmt: skip


@njit(nogil=True, cache=True)
def search_serial(
    qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, acc, seen
):
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32); rows past counts are -1.

    Same signature as ``pruned.search_serial``; ``bail``, ``acc`` and ``seen`` are unused.
    """
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    _query_range(qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, 0, nq,
                 rows, scores, counts)  # fmt: skip
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
                     lo, hi, rows, scores, counts)  # fmt: skip
    return rows, scores, counts
