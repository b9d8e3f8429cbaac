"""Exact top-k BM25 with dynamic pruning: MaxScore with block maxima over the bm25s CSC matrix.

Term-at-a-time; ``BM25Retriever(pruning=True)`` now uses the document-at-a-time kernel
(``daat``), which measured faster at 5.3M passages. This one is kept as a second exact
reference (tests compare both with the exhaustive kernel).

Per query, terms are taken in decreasing order of their bound (weight x the term's largest
score, ``blockmax``):

1. Term-at-a-time, as the exhaustive kernel, into a float32 accumulator, until the k-th best
   partial score exceeds the sum of the bounds of the terms left: no row that those terms alone
   match can enter the top k, so they add no new candidates.
2. The candidates whose partial score plus the bounds left can still reach the k-th are sorted
   by row; each remaining term (the frequent ones, with the longest columns) is merged against
   them with a forward cursor that skips whole blocks by their last row and looks inside a
   block by binary search. A candidate whose bound, with this term's block maximum in place of
   its term bound, falls below the k-th partial score is dropped without a lookup.
3. The survivors are scored exactly: each term's contribution added in query-term order in
   float32, the very sums of the exhaustive kernel (``kernels``), and ranked by (score desc, row
   asc) as there.

Exactness: partial sums (another order, float rounding) only decide which rows to drop, with a
relative slack far above float32 rounding, so pruning never drops a row the exhaustive kernel
would return, and the returned scores are bit-identical to it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import _drain, _push
from .kernels import _one_query as _exhaustive

SAMPLE = 1 << 15  # rows whose partial scores estimate the k-th score during the first phase
BAIL = 8  # default ``bail``: more candidates than 1/8 of the corpus -> the exhaustive kernel


@njit(nogil=True, cache=True)
def _kth_largest(values, m, k):
    """The k-th largest of ``values[:m]`` (0 when there are fewer than k)."""
    if m < k:
        return 0.0
    heap = np.empty(k, dtype=np.float64)
    n = 0
    for i in range(m):
        v = np.float64(values[i])
        if n < k:
            pos = n
            n += 1
            while pos > 0 and heap[(pos - 1) >> 1] > v:
                heap[pos] = heap[(pos - 1) >> 1]
                pos = (pos - 1) >> 1
            heap[pos] = v
        elif v > heap[0]:
            pos = 0
            while True:
                c = 2 * pos + 1
                if c >= k:
                    break
                if c + 1 < k and heap[c + 1] < heap[c]:
                    c += 1
                if heap[c] < v:
                    heap[pos] = heap[c]
                    pos = c
                else:
                    break
            heap[pos] = v
    return heap[0]


@njit(nogil=True, cache=True)
def _gather(cand, alive, m, out, w, t, data, indices, indptr, bptr, bmax, blast, bsize, cut):
    """Add term ``t``'s contribution ``w * data`` to ``out[i]`` for every live candidate row
    ``cand[i]`` (ascending) it holds. With ``cut`` > 0, a candidate whose ``out`` plus this
    term's block maximum stays under ``cut`` is marked dead instead (``cut`` already net of the
    bounds of the terms after this one)."""
    b, bend = bptr[t], bptr[t + 1]
    base, end = indptr[t], indptr[t + 1]
    p = base
    for i in range(m):
        if not alive[i]:
            continue
        d = cand[i]
        if b < bend and blast[b] < d:  # gallop to the first block whose last row is >= d
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
            b = lo
        if b == bend:  # no more postings: the rest get nothing from t
            if cut > 0:
                for j in range(i, m):
                    if alive[j] and np.float64(out[j]) < cut:
                        alive[j] = False
            break
        if cut > 0 and np.float64(out[i]) + np.float64(w) * np.float64(bmax[b]) < cut:
            alive[i] = False
            continue
        start = base + (b - bptr[t]) * bsize
        lo = max(p, start)
        hi = min(start + bsize, end) - 1  # blast[b] >= d: the first row >= d is in [lo, hi]
        while lo < hi:
            mid = (lo + hi) >> 1
            if indices[mid] < d:
                lo = mid + 1
            else:
                hi = mid
        p = lo
        if indices[lo] == d:
            out[i] += w * data[lo]
        elif cut > 0 and np.float64(out[i]) < cut:
            alive[i] = False


@njit(nogil=True, cache=True)
def _one_query(
    tids,
    tw,
    data,
    indices,
    indptr,
    bptr,
    bmax,
    blast,
    tmax,
    bsize,
    k,
    bail,
    acc,
    seen,
    out_r,
    out_s,
):
    nt = len(tids)
    if nt == 0:
        return 0
    slack = 1.0 + (nt + 4) * 1e-6  # float32 sums stay within nt * 2**-24 of the exact sum
    ub = np.empty(nt, dtype=np.float64)
    postings = 0
    for i in range(nt):
        ub[i] = np.float64(tw[i]) * np.float64(tmax[tids[i]])
        postings += indptr[tids[i] + 1] - indptr[tids[i]]
    order = np.argsort(-ub)  # decreasing bound
    rest = np.zeros(nt + 1, dtype=np.float64)  # rest[i]: bounds of order[i:]
    for i in range(nt - 1, -1, -1):
        rest[i] = rest[i + 1] + ub[order[i]]
    # 1. term-at-a-time while terms left could still bring new rows into the top k
    touched = np.empty(postings, dtype=np.int32)
    m = 0
    theta = 0.0  # k-th best partial score so far: a lower bound of the final k-th score
    i = 0
    while i < nt:
        q = order[i]
        t, w = tids[q], tw[q]
        # a row first met in a block whose maximum plus the bounds of the terms after this one
        # stays under the k-th partial cannot enter the top k: such blocks add to known rows only
        cut = theta / (slack * slack) - rest[i + 1]
        start, end = indptr[t], indptr[t + 1]
        for bl in range(bptr[t], bptr[t + 1]):
            hi = min(start + bsize, end)
            if theta > 0 and np.float64(w) * np.float64(bmax[bl]) < cut:
                for j in range(start, hi):
                    d = indices[j]
                    if seen[d]:
                        acc[d] += w * data[j]
            else:
                for j in range(start, hi):
                    d = indices[j]
                    if not seen[d]:
                        seen[d] = True
                        touched[m] = d
                        m += 1
                    acc[d] += w * data[j]
            start = hi
        i += 1
        if i < nt and bail > 0 and m * bail > len(acc):
            # the bounds are too flat to prune (most rows stay candidates): the exhaustive
            # kernel is cheaper from here, and gives the same hits
            for j in range(m):
                acc[touched[j]] = 0.0
                seen[touched[j]] = False
            return _exhaustive(tids, tw, data, indices, indptr, k, acc, seen, out_r, out_s)
        if i < nt and m >= k and rest[0] - rest[i] > rest[i + 1]:
            # any k rows' partials bound the k-th score from below: the first rows met (those
            # of the highest-bound terms) are enough, and keep this step cheap
            few = min(m, SAMPLE)
            theta = max(theta, _kth_largest(acc[touched[:few]], few, k))
            if theta > rest[i] * slack * slack:
                # switch to lookups when merging the candidates against the terms left is
                # cheaper than adding those terms' postings (about 5 ns a posting)
                floor = theta / (slack * slack) - rest[i]
                c = 0
                for j in range(m):
                    if np.float64(acc[touched[j]]) >= floor:
                        c += 1
                left = 0
                for j in range(i, nt):
                    left += indptr[tids[order[j]] + 1] - indptr[tids[order[j]]]
                if c * (12 + 6 * (nt - i)) <= left:
                    break
    if i == nt and m >= k:  # every term added: the k-th partial is (about) the k-th score
        theta = _kth_largest(acc[touched[:m]], m, k)
    # 2. candidates that can still reach the k-th partial, sorted by row
    floor = theta / (slack * slack) - rest[i]
    c = 0
    cand = np.empty(m, dtype=np.int32)
    for j in range(m):
        d = touched[j]
        if np.float64(acc[d]) >= floor:
            cand[c] = d
            c += 1
    cand = np.sort(cand[:c])
    part = np.empty(c, dtype=np.float64)
    for j in range(c):
        part[j] = acc[cand[j]]
    for j in range(m):
        acc[touched[j]] = 0.0
        seen[touched[j]] = False
    alive = np.ones(c, dtype=np.bool_)
    while i < nt:
        q = order[i]
        cut = theta / (slack * slack) - rest[i + 1] if theta > 0 else 0.0
        _gather(cand, alive, c, part, tw[q], tids[q], data, indices, indptr, bptr, bmax, blast,
                bsize, cut)  # fmt: skip
        i += 1
        if i < nt:  # partial scores only grow: the k-th of them is a tighter lower bound
            theta = max(theta, _kth_largest(part, c, k))
    # 3. exact float32 scores of the survivors, terms added in query order
    live = np.empty(c, dtype=np.int32)
    nl = 0
    for j in range(c):
        if alive[j]:
            live[nl] = cand[j]
            nl += 1
    exact = np.zeros(nl, dtype=np.float32)
    ones = np.ones(nl, dtype=np.bool_)
    for q in range(nt):
        _gather(live, ones, nl, exact, tw[q], tids[q], data, indices, indptr, bptr, bmax, blast,
                bsize, 0.0)  # fmt: skip
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    for j in range(nl):
        if exact[j] > 0:
            n = _push(hs, hr, n, k, exact[j], live[j])
    return _drain(hs, hr, n, out_s, out_r)


@njit(nogil=True, cache=True)
def _query_range(
    qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, lo, hi, acc, seen,
    rows, scores, counts,
):  # fmt: skip
    for q in range(lo, hi):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query(
            tids[a:b], tw[a:b], data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, acc,
            seen, rows[q], scores[q],
        )  # fmt: skip


@njit(nogil=True, cache=True)
def search_serial(
    qptr, tids, tw, data, indices, indptr, bptr, bmax, blast, tmax, bsize, k, bail, acc, seen
):
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32); rows past counts are -1.

    ``acc`` (float32) and ``seen`` (bool) are zeroed scratch arrays of one entry per document,
    left zeroed.
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
    """``search_serial`` with the queries split into ``len(acc2)`` contiguous chunks, one per
    thread, each with its own scratch row of ``acc2``/``seen2``."""
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
