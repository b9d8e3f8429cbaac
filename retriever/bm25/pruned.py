"""Exact top-k BM25 with dynamic pruning: block-max MaxScore over the bm25s CSC matrix.

Document-at-a-time over the query terms' columns (rows ascending). Terms are ordered by their
bound (weight x the term's largest score); the longest prefix whose bounds add up to less than
the current k-th score is *non-essential*: a row found only there cannot enter the top k, so
candidates come from the essential terms alone. A candidate is then checked against the
per-block maxima of the non-essential terms (``blockmax``) before they are searched, and
dropped as soon as its bound falls below the k-th score.

Exactness: a candidate that survives is scored by adding its terms' float32 contributions in
query-term order, the very sums of the exhaustive kernel (``kernels``); bounds are float64 and
widened by a relative slack far above float32 rounding, so pruning never drops a row the
exhaustive kernel would keep. Rows come in ascending order, so a later row with a score equal
to the k-th never enters: ties go to the lower row, as in the exhaustive kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import _push, _sift_down

_NO_DOC = np.int64(1) << np.int64(40)


@njit(nogil=True, cache=True)
def _seek(indices, indptr, bptr, blast, bsize, t, blk, pos, d):
    """(block, position) of the first posting of term ``t`` with row >= ``d`` at or after
    ``pos``/``blk`` (position = end of the column when there is none)."""
    bend = bptr[t + 1]
    while blk < bend and blast[blk] < d:
        blk += 1
    end = indptr[t + 1]
    if blk == bend:
        return blk, end
    start = indptr[t] + (blk - bptr[t]) * bsize
    lo = max(pos, start)
    hi = min(start + bsize, end) - 1  # blast[blk] >= d: the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < d:
            lo = mid + 1
        else:
            hi = mid
    return blk, lo


@njit(nogil=True, cache=True)
def _one_query(tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, out_r, out_s):
    nt = len(tids)
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    if nt == 0:
        return 0
    pos = np.empty(nt, dtype=np.int64)
    blk = np.empty(nt, dtype=np.int64)
    ub = np.empty(nt, dtype=np.float64)
    for i in range(nt):
        t = tids[i]
        pos[i] = indptr[t]
        blk[i] = bptr[t]
        ub[i] = np.float64(tw[i]) * np.float64(tmax[t])
    order = np.argsort(ub)  # ascending bound: non-essential terms are a prefix
    prefix = np.empty(nt, dtype=np.float64)
    acc = 0.0
    for i in range(nt):
        acc += ub[order[i]]
        prefix[i] = acc
    contrib = np.zeros(nt, dtype=np.float32)
    has = np.zeros(nt, dtype=np.bool_)
    slack = 1.0 + (nt + 4) * 1e-6  # float32 sums stay within nt * 2**-24 of the exact sum
    theta = np.float32(0.0)  # the k-th score once the heap is full
    ne = 0  # order[:ne] are non-essential
    while True:
        d = _NO_DOC
        for i in range(ne, nt):
            q = order[i]
            if pos[q] < indptr[tids[q] + 1]:
                r = np.int64(indices[pos[q]])
                if r < d:
                    d = r
        if d == _NO_DOC:
            break
        for i in range(nt):
            has[i] = False
        bound = 0.0
        for i in range(ne, nt):
            q = order[i]
            if pos[q] < indptr[tids[q] + 1] and indices[pos[q]] == d:
                c = tw[q] * data[pos[q]]
                contrib[q] = c
                has[q] = True
                bound += np.float64(c)
                pos[q] += 1
        if n == k and ne > 0:
            if (bound + prefix[ne - 1]) * slack < theta:
                continue
            # tighter: the non-essential terms' maxima in the blocks that could hold d
            bb = bound
            for i in range(ne):
                q = order[i]
                t = tids[q]
                b = blk[q]
                while b < bptr[t + 1] and blast[b] < d:
                    b += 1
                blk[q] = b
                if b < bptr[t + 1]:
                    bb += np.float64(tw[q]) * np.float64(bmax[b])
            if bb * slack < theta:
                continue
        dropped = False
        for i in range(ne - 1, -1, -1):
            q = order[i]
            t = tids[q]
            b, p = _seek(indices, indptr, bptr, blast, bsize, t, blk[q], pos[q], d)
            blk[q] = b
            pos[q] = p
            if p < indptr[t + 1] and indices[p] == d:
                c = tw[q] * data[p]
                contrib[q] = c
                has[q] = True
                bound += np.float64(c)
            if n == k and i > 0 and (bound + prefix[i - 1]) * slack < theta:
                dropped = True
                break
        if dropped:
            continue
        s = np.float32(0.0)
        for q in range(nt):  # query-term order: the exhaustive kernel's float32 sum
            if has[q]:
                s += contrib[q]
        if n < k:
            if s > 0:
                n = _push(hs, hr, n, k, s, np.int32(d))
                if n == k:
                    theta = hs[0]
        elif s > theta:
            n = _push(hs, hr, n, k, s, np.int32(d))
            theta = hs[0]
        if n == k:
            while ne < nt and prefix[ne] * slack < theta:
                ne += 1
            if ne == nt:
                break
    m = n
    while m > 0:
        out_s[m - 1] = hs[0]
        out_r[m - 1] = hr[0]
        m -= 1
        hs[0], hr[0] = hs[m], hr[m]
        _sift_down(hs, hr, 0, m)
    return n


@njit(nogil=True, cache=True)
def search_serial(qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k):
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32); rows past counts are -1."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    for q in range(nq):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query(
            tids[a:b], tw[a:b], data, indices, indptr, bptr, bmax, blast, tmax, bsize, k,
            rows[q], scores[q],
        )  # fmt: skip
    return rows, scores, counts


@njit(nogil=True, cache=True, parallel=True)
def search_parallel(qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k):
    """``search_serial`` with the queries spread over numba's threads (no shared scratch)."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    for q in prange(nq):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query(
            tids[a:b], tw[a:b], data, indices, indptr, bptr, bmax, blast, tmax, bsize, k,
            rows[q], scores[q],
        )  # fmt: skip
    return rows, scores, counts
