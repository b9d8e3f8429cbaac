"""The exhaustive BM25 kernel: every posting of the query terms scored, over a bm25s CSC score
matrix. It is the reference the pruned kernel (``bmp``) must equal, the fallback ``bmp``
finishes flat queries with, and the home of the heap both share (numba: imported lazily).

Per query: add each query term's precomputed scores into a dense float32 accumulator (exactly
bm25s's sums, in query-term order), remembering which documents were touched; select the top
``k`` of the touched documents only with a heap ordered by (score desc, row asc); reset only
what was touched. Rows with no matching term are never returned.

Every row id read from the postings is checked against the number of documents before it is
used as an index (one compare a posting, predicted; BENCHMARKS.md "BM25 load checks"): a
damaged ``indices`` file makes the query return ``DAMAGED`` instead of writing outside the
scratch arrays, and the retriever raises naming the file.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

DAMAGED = -2  # a query's hit count when its postings hold a row id outside [0, num_docs)

# The threading layer is a process-wide choice, made by the entry points (retriever.cli.
# configure_process sets NUMBA_THREADING_LAYER=workqueue: OpenMP's spinning threads slowed torch
# encoding in the same process 16x); parallel calls are serialised by a lock in retriever.py.


@njit(nogil=True, cache=True, inline="always")
def _worse(s1, r1, s2, r2):
    """True when (s1, r1) ranks below (s2, r2): lower score, or same score and higher row."""
    return s1 < s2 or (s1 == s2 and r1 > r2)


@njit(nogil=True, cache=True)
def _sift_down(hs, hr, pos, n):
    """Restore the min-heap (worst hit at the root) below ``pos``."""
    s, r = hs[pos], hr[pos]
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        right = child + 1
        if right < n and _worse(hs[right], hr[right], hs[child], hr[child]):
            child = right
        if _worse(hs[child], hr[child], s, r):
            hs[pos], hr[pos] = hs[child], hr[child]
            pos = child
        else:
            break
    hs[pos], hr[pos] = s, r


@njit(nogil=True, cache=True)
def _sift_up(hs, hr, pos):
    s, r = hs[pos], hr[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if _worse(s, r, hs[parent], hr[parent]):
            hs[pos], hr[pos] = hs[parent], hr[parent]
            pos = parent
        else:
            break
    hs[pos], hr[pos] = s, r


@njit(nogil=True, cache=True)
def _push(hs, hr, n, k, s, d):
    """Offer hit (s, d) to the heap of size ``n`` (capacity ``k``); returns the new size."""
    if n < k:
        hs[n] = s
        hr[n] = d
        _sift_up(hs, hr, n)
        return n + 1
    if _worse(hs[0], hr[0], s, d):
        hs[0] = s
        hr[0] = d
        _sift_down(hs, hr, 0, n)
    return n


@njit(nogil=True, cache=True)
def _drain(hs, hr, n, out_s, out_r):
    """Empty the min-heap of ``n`` hits into ``out_s`` / ``out_r`` best first (popping the
    worst first, filling from the back); returns ``n``."""
    m = n
    while m > 0:
        out_s[m - 1] = hs[0]
        out_r[m - 1] = hr[0]
        m -= 1
        hs[0], hr[0] = hs[m], hr[m]
        _sift_down(hs, hr, 0, m)
    return n


@njit(nogil=True, cache=True, inline="always")
def _lower_bound(indices, lo, hi, d):
    """First position in ``[lo, hi)`` whose row is >= ``d`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < d:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(nogil=True, cache=True)
def _gallop(indices, lo, hi, d):
    """``_lower_bound`` from a cursor ``lo`` expected to be close to the answer."""
    if lo >= hi or indices[lo] >= d:
        return lo
    step = 1
    while lo + step < hi and indices[lo + step] < d:
        lo += step
        step <<= 1
    return _lower_bound(indices, lo + 1, min(lo + step, hi), d)


@njit(nogil=True, cache=True)
def _one_query(tids, tw, data, indices, indptr, k, acc, seen, out_r, out_s):
    """Top ``k`` of one query into ``out_r``/``out_s`` (best first); returns the hit count
    (``DAMAGED`` for a row id outside the documents: skipped, the scratch still left zeroed).

    ``acc`` and ``seen`` are all zero on entry and are left all zero. Queries whose postings
    cover a good part of the corpus scan ``acc`` linearly (cheaper than tracking documents);
    the others visit only the documents they touched. Both give the same hits.
    """
    num_docs = len(acc)
    postings = 0
    for t in range(len(tids)):
        postings += indptr[tids[t] + 1] - indptr[tids[t]]
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    # Once the heap is full only scores above its worst can enter (an equal score has a
    # higher row when scanning rows upwards); the test is rarely true, so the loops stay fast.
    floor = np.float32(0.0)
    bad = False
    if postings * 8 >= num_docs:
        for t in range(len(tids)):
            w = tw[t]
            for j in range(indptr[tids[t]], indptr[tids[t] + 1]):
                d = indices[j]
                if d < 0 or d >= num_docs:
                    bad = True
                    continue
                acc[d] += w * data[j]
        for d in range(num_docs):
            s = acc[d]
            if s > floor:
                n = _push(hs, hr, n, k, s, d)
                if n == k:
                    floor = hs[0]
        acc[:] = 0.0
    else:
        touched = np.empty(postings, dtype=np.int32)
        nt = 0
        for t in range(len(tids)):
            w = tw[t]
            for j in range(indptr[tids[t]], indptr[tids[t] + 1]):
                d = indices[j]
                if d < 0 or d >= num_docs:
                    bad = True
                    continue
                if not seen[d]:
                    seen[d] = True
                    touched[nt] = d
                    nt += 1
                acc[d] += w * data[j]
        for i in range(nt):
            d = touched[i]
            s = acc[d]
            if s > floor or (s == floor and n == k and d < hr[0]):
                n = _push(hs, hr, n, k, s, d)
                if n == k:
                    floor = hs[0]
        for i in range(nt):
            acc[touched[i]] = 0.0
            seen[touched[i]] = False
    if bad:
        return DAMAGED
    return _drain(hs, hr, n, out_s, out_r)


@njit(nogil=True, cache=True)
def _query_range(qptr, tids, tw, data, indices, indptr, k, lo, hi, acc, seen, rows, scores, counts):
    for q in range(lo, hi):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query(
            tids[a:b], tw[a:b], data, indices, indptr, k, acc, seen, rows[q], scores[q]
        )


@njit(nogil=True, cache=True)
def search_serial(qptr, tids, tw, data, indices, indptr, k, acc, seen):
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32); rows past counts are -1.

    ``acc`` (float32) and ``seen`` (bool) are zeroed scratch arrays of one entry per document.
    """
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    _query_range(qptr, tids, tw, data, indices, indptr, k, 0, nq, acc, seen, rows, scores, counts)
    return rows, scores, counts


@njit(nogil=True, cache=True, parallel=True)
def search_parallel(qptr, tids, tw, data, indices, indptr, k, acc2, seen2):
    """``search_serial`` with the queries split into ``len(acc2)`` contiguous chunks, one per
    thread, each with its own scratch row of ``acc2``/``seen2``."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    chunks = min(acc2.shape[0], nq)
    for c in prange(chunks):
        lo = c * nq // chunks
        hi = (c + 1) * nq // chunks
        _query_range(
            qptr,
            tids,
            tw,
            data,
            indices,
            indptr,
            k,
            lo,
            hi,
            acc2[c],
            seen2[c],
            rows,
            scores,
            counts,
        )
    return rows, scores, counts
