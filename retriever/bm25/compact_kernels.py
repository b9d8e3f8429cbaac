"""The kernels of the compact layout (``compact``): ``exhaustive-compact`` and ``bmp-compact``.

They are ``exhaustive`` and ``bmp`` with each posting read from a decoded block instead of the
float32 score matrix: a block's rows and term frequencies are unpacked whole, each score is
computed with the build's float64 arithmetic and rounded to float32 (``compact``), and from
there on everything is the float kernels' (``w * score`` added in query-term order, one heap by
(score desc, row asc)), so hits and scores are bit-identical to theirs. ``bmp-compact`` keeps
the last decoded block of each query term, so the row ranges of one block cost one decode, and
finds a range's block by the blocks' first rows (galloping forward during the sweep).

Array arguments (``C``): indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
atire, as ``compact.Compact`` orders them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .bmp import GROUP, _group_max
from .compact import BLOCK, SKIP, decode, decode_rows, tf_at
from .exhaustive import DAMAGED, _drain, _gallop, _lower_bound, _push, _worse


@njit(nogil=True, cache=True, inline="always")
def _score(tf, norm, dl, idf64, k1, atire):
    """``formula.posting_scores`` of one posting of a document of length ``dl``: its saturated
    tf read off ``norm`` (``compact.norm_table``) or, for a large tf, computed from its norm."""
    if tf < norm.shape[1]:
        return np.float32(idf64 * norm[dl, tf])
    f = np.float64(tf)
    dn = norm[dl, 0]
    if atire:
        tfc = (f * (k1 + 1)) / (f + dn)
    else:
        tfc = f / (dn + f)
    return np.float32(idf64 * tfc)


@njit(nogil=True, cache=True)
def _unpack_block(t, b, indptr, bptr, first, offset, bits, words, rows, tfb):
    """Decode block ``b`` of term ``t`` into ``rows`` and ``tfb``; returns its posting count."""
    n = min(BLOCK, indptr[t + 1] - indptr[t] - (b - np.int64(bptr[t])) * BLOCK)
    decode(words, first, offset, bits, b, n, rows, tfb)
    return n


@njit(nogil=True, cache=True)
def _block(t, b, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1, atire,
           rows, tfb, scores, err):  # fmt: skip
    """Decode block ``b`` of term ``t`` into ``rows`` and float32 ``scores``; returns its
    posting count. A row outside the documents (a damaged file) gets score 0 and sets
    ``err[0]``."""
    n = _unpack_block(t, b, indptr, bptr, first, offset, bits, words, rows, tfb)
    idf64 = np.float64(idf[t])
    num_docs = len(lengths)
    for i in range(n):
        d = rows[i]
        if d < 0 or d >= num_docs:
            err[0] = True
            scores[i] = 0.0
            continue
        scores[i] = _score(tfb[i], norm, lengths[d], idf64, k1, atire)
    return n


@njit(nogil=True, cache=True)
def _one_query_ex(tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
                  atire, k, acc, seen, out_r, out_s):  # fmt: skip
    """``exhaustive._one_query`` over decoded blocks: same sums, same selection."""
    num_docs = len(acc)
    postings = 0
    for t in range(len(tids)):
        postings += indptr[tids[t] + 1] - indptr[tids[t]]
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    floor = np.float32(0.0)
    err = np.zeros(1, dtype=np.bool_)
    rows = np.empty(BLOCK, dtype=np.int32)
    tfb = np.empty(BLOCK, dtype=np.int32)
    sc = np.empty(BLOCK, dtype=np.float32)
    dense = postings * 8 >= num_docs
    touched = np.empty(0 if dense else postings, dtype=np.int32)
    nt = 0
    for i in range(len(tids)):
        t = tids[i]
        w = tw[i]
        for b in range(np.int64(bptr[t]), np.int64(bptr[t + 1])):
            m = _block(t, b, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
                       atire, rows, tfb, sc, err)  # fmt: skip
            for j in range(m):
                d = rows[j]
                if d < 0 or d >= num_docs:
                    continue
                if not dense and not seen[d]:
                    seen[d] = True
                    touched[nt] = d
                    nt += 1
                acc[d] += w * sc[j]
    if dense:
        for d in range(num_docs):
            s = acc[d]
            if s > floor:
                n = _push(hs, hr, n, k, s, d)
                if n == k:
                    floor = hs[0]
        acc[:] = 0.0
    else:
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
    if err[0]:
        return DAMAGED
    return _drain(hs, hr, n, out_s, out_r)


@njit(nogil=True, cache=True)
def _score_range(r, shift, tids, tw, slots, qmax, indptr, bptr, first, offset, bits, words,
                 lengths, idf, norm, k1, atire, cur, cb, cn, crow, ctf, csc, cs, gallop, loc, hs,
                 hr, n, k, err):  # fmt: skip
    """``bmp._score_range`` over the terms' cached blocks (``cb``: block whose rows ``crow``
    holds, ``cn``: its size, ``cs``: whether ``csc`` holds its scores; ``cur``: the sweep's
    block cursor). Only the postings of the range are scored, each reading its own term
    frequency off the packed words (a range holds few of a block's 128 postings), unless the
    block's scores are there already (a rare term's, from the bounds)."""
    lo_row = np.int64(r) << shift
    hi_row = lo_row + (1 << shift)
    num_docs = len(lengths)
    for i in range(len(tids)):
        t = tids[i]
        if slots[i] >= 0 and qmax[slots[i], r] == 0:
            continue
        b0, b1 = np.int64(bptr[t]), np.int64(bptr[t + 1])
        if gallop:
            j = _gallop(first, max(cur[i], b0), b1, lo_row + 1) - 1
        else:
            j = _lower_bound(first, b0, b1, lo_row + 1) - 1
        j = max(j, b0)
        if gallop:
            cur[i] = j
        w = tw[i]
        rows = crow[i]
        sc = csc[i]
        idf64 = np.float64(idf[t])
        while j < b1:
            if cb[i] != j:
                cn[i] = min(BLOCK, indptr[t + 1] - indptr[t] - (j - b0) * BLOCK)
                decode_rows(words, first, offset, bits, j, cn[i], rows)  # tf read when scored
                cb[i] = j
                cs[i] = False
            m = cn[i]
            p = _lower_bound(rows, 0, m, lo_row)
            while p < m and rows[p] < hi_row:
                d = rows[p]
                if d < lo_row or d >= num_docs:
                    err[0] = True
                elif cs[i]:
                    loc[d - lo_row] += w * sc[p]
                else:
                    tf = tf_at(words, offset, bits, j, m, p)
                    loc[d - lo_row] += w * _score(tf, norm, lengths[d], idf64, k1, atire)
                p += 1
            if p < m:
                break
            j += 1
            if j < b1 and first[j] >= hi_row:
                break
    for j in range(1 << shift):
        s = loc[j]
        if s > 0:
            loc[j] = 0.0
            if n < k or _worse(hs[0], hr[0], s, lo_row + j):
                n = _push(hs, hr, n, k, s, np.int32(lo_row + j))
    return n


@njit(nogil=True, cache=True)
def _sparse_bound(t, indptr, b0, b1, first, offset, bits, words, j, e, sq, scale, shift,
                  num_docs, ub):  # fmt: skip
    """Add ``scale x`` each sparse range byte ``sq[j:e]`` of term ``t`` to its range in ``ub``,
    the ranges found by decoding the term's row gaps (unpacked, summed and shifted in one
    pass; no term frequency, no score); returns (first range, last range), (-1, -1) for a
    damaged block or byte count."""
    c = np.int64(-1)
    lo = np.int64(-1)
    for b in range(b0, b1):
        n = min(BLOCK, indptr[t + 1] - indptr[t] - (b - b0) * BLOCK)
        at = np.int64(offset[b])
        w = np.int64(bits[b, 0])
        mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
        d = np.int64(first[b])
        if d < 0:
            return -1, -1
        for p in range(n):
            if p:
                bit = p * w
                i = at + (bit >> 5)
                x = np.uint64(words[i]) | (np.uint64(words[i + 1]) << np.uint64(32))
                d += np.int64((x >> np.uint64(bit & 31)) & mask) + 1
            r = d >> shift
            if r != c:
                if j >= e or d >= num_docs:
                    return -1, -1
                if lo < 0:
                    lo = r
                ub[r] += scale * np.float32(sq[j])
                j += 1
                c = r
    if lo < 0:
        return 0, -1
    return lo, c


@njit(nogil=True, cache=True)
def _gap_bound(gaps, g0, g1, sq, j, e, scale, nr, ub):
    """Add ``scale x`` each sparse range byte ``sq[j:e]`` of a term to its range in ``ub``,
    the ranges read off the term's gap bytes ``gaps[g0:g1]`` (``compact.sparse_gaps``);
    returns (first range, last range), (-1, -1) for gaps that leave the ranges or do not
    match the byte count."""
    r = np.int64(-1)
    lo = np.int64(-1)
    for x in range(g0, g1):
        v = np.int64(gaps[x])
        if v == 0:
            r += SKIP
            continue
        r += v
        if j >= e or r >= nr:
            return -1, -1
        if lo < 0:
            lo = r
        ub[r] += scale * np.float32(sq[j])
        j += 1
    if j != e:
        return -1, -1
    if lo < 0:
        return 0, -1
    return lo, r


@njit(nogil=True, cache=True)
def _one_query_bmp(tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
                   atire, tmax, slot, qmax, shift, sterms, sptr, sq, sgptr, sg, k, first_n,
                   fallback, ub, seen, out_r, out_s):  # fmt: skip
    """``bmp._one_query`` over decoded blocks (same bounds, order and heap). A term of
    ``sterms`` (sparse range bytes ``sq[sptr[s]:sptr[s + 1]]``, one per range that holds one
    of its postings, in row order) gets the bound a dense row of bytes would give: its rows
    are decoded to find those ranges, no score is computed."""
    nt = len(tids)
    if nt == 0:
        return 0
    num_docs = len(ub)
    nr = ((num_docs - 1) >> shift) + 1
    slots = np.empty(nt, dtype=np.int64)
    err = np.zeros(1, dtype=np.bool_)
    crow = np.empty((nt, BLOCK), dtype=np.int32)
    csc = np.empty((nt, BLOCK), dtype=np.float32)
    ctf = np.empty((nt, BLOCK), dtype=np.int32)
    cs = np.zeros(nt, dtype=np.bool_)
    cb = np.full(nt, -1, dtype=np.int64)
    cn = np.zeros(nt, dtype=np.int64)
    cur = np.empty(nt, dtype=np.int64)
    lo_r, hi_r = nr, -1
    for i in range(nt):
        t = tids[i]
        b0, b1 = np.int64(bptr[t]), np.int64(bptr[t + 1])
        cur[i] = b0
        slots[i] = slot[t]
        w = tw[i]
        scale = np.float32(np.float64(w) * np.float64(tmax[t]) / 255.0)
        s = _lower_bound(sterms, 0, len(sterms), t) if slots[i] < 0 else 0
        if slots[i] >= 0:
            row = qmax[slots[i]]
            for r in range(nr):
                ub[r] += scale * np.float32(row[r])
            lo_r, hi_r = 0, nr - 1
        elif s < len(sterms) and sterms[s] == t:
            if len(sgptr) > 1:  # compact-v3: the ranges from the gap bytes
                got = _gap_bound(sg, sgptr[s], sgptr[s + 1], sq, sptr[s], sptr[s + 1], scale, nr,
                                 ub)  # fmt: skip
            else:  # compact-v2: from the term's decoded rows
                got = _sparse_bound(t, indptr, b0, b1, first, offset, bits, words, sptr[s],
                                    sptr[s + 1], sq, scale, shift, num_docs, ub)  # fmt: skip
            if got[0] < 0:
                err[0] = True
            elif got[0] <= got[1]:
                lo_r, hi_r = min(lo_r, got[0]), max(hi_r, got[1])
        else:
            c, m, first_r = -1, np.float32(0.0), -1
            rows, sc = crow[i], csc[i]
            for b in range(b0, b1):
                nb = _block(t, b, indptr, bptr, first, offset, bits, words, lengths, idf, norm,
                            k1, atire, rows, ctf[i], sc, err)  # fmt: skip
                cb[i], cn[i], cs[i] = b, nb, True
                for p in range(nb):
                    if rows[p] < 0 or rows[p] >= num_docs:
                        continue
                    r = rows[p] >> shift
                    if first_r < 0:
                        first_r = r
                    if r != c:
                        if c >= 0:
                            ub[c] += w * m
                        c, m = r, sc[p]
                    elif sc[p] > m:
                        m = sc[p]
            if c >= 0:
                ub[c] += w * m
                lo_r = min(lo_r, first_r)
                hi_r = max(hi_r, c)
    slack = 1.0 + (nt + 4) * 1e-6
    hs = np.empty(k, dtype=np.float32)
    hr = np.empty(k, dtype=np.int32)
    n = 0
    loc = np.zeros(1 << shift, dtype=np.float32)
    g_lo, g_hi = lo_r // GROUP, hi_r // GROUP
    gmax = np.zeros(max(g_hi - g_lo + 1, 1), dtype=np.float32)
    _group_max(ub, gmax, g_lo, g_hi, lo_r, hi_r)
    m = max(min(first_n, hi_r - lo_r + 1), 1)
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
            n = _score_range(r, shift, tids, tw, slots, qmax, indptr, bptr, first, offset, bits,
                             words, lengths, idf, norm, k1, atire, cur, cb, cn, crow, ctf, csc,
                             cs, False, loc, hs, hr, n, k, err)  # fmt: skip
            ub[r] = 0.0
    theta = np.float64(hs[0]) if n == k else -1.0
    postings = 0
    for i in range(nt):
        postings += indptr[tids[i] + 1] - indptr[tids[i]]
    span = g_hi - g_lo + 1
    step = max(span // 16, 1)
    check = g_lo + step
    scored = 0
    for g in range(g_lo, g_hi + 1):
        if fallback > 0 and g == check and 2 * (g - g_lo) <= span:
            if scored * span * fallback > postings * (g - g_lo):
                ub[lo_r : hi_r + 1] = 0.0
                got = _one_query_ex(tids, tw, indptr, bptr, first, offset, bits, words, lengths,
                                    idf, norm, k1, atire, k, ub, seen, out_r, out_s)  # fmt: skip
                return DAMAGED if err[0] else got
            check += step
        if np.float64(gmax[g - g_lo]) * slack <= theta:
            continue
        for r in range(max(g * GROUP, lo_r), min((g + 1) * GROUP, hi_r + 1)):
            v = ub[r]
            if v > 0 and np.float64(v) * slack > theta:
                n = _score_range(r, shift, tids, tw, slots, qmax, indptr, bptr, first, offset,
                                 bits, words, lengths, idf, norm, k1, atire, cur, cb, cn, crow,
                                 ctf, csc, cs, True, loc, hs, hr, n, k, err)  # fmt: skip
                scored += 1
                if n == k:
                    theta = np.float64(hs[0])
    ub[lo_r : hi_r + 1] = 0.0
    if err[0]:
        return DAMAGED
    return _drain(hs, hr, n, out_s, out_r)


# ---- drivers: (qptr, tids, tw, *C, [tmax, slot, qmax, shift, sterms, sptr, sq, sgptr, sg,] k,
# [first, fallback,] scratch)
@njit(nogil=True, cache=True)
def _ex_range(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
              atire, k, lo, hi, acc, seen, rows, scores, counts):  # fmt: skip
    for q in range(lo, hi):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query_ex(tids[a:b], tw[a:b], indptr, bptr, first, offset, bits, words,
                                  lengths, idf, norm, k1, atire, k, acc, seen, rows[q],
                                  scores[q])  # fmt: skip


@njit(nogil=True, cache=True)
def exhaustive_serial(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf,
                      norm, k1, atire, k, acc, seen):  # fmt: skip
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32), as ``exhaustive``."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    _ex_range(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
              atire, k, 0, nq, acc, seen, rows, scores, counts)  # fmt: skip
    return rows, scores, counts


@njit(nogil=True, cache=True, parallel=True)
def exhaustive_parallel(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf,
                        norm, k1, atire, k, acc2, seen2):  # fmt: skip
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    chunks = min(acc2.shape[0], nq)
    for c in prange(chunks):
        lo = c * nq // chunks
        hi = (c + 1) * nq // chunks
        _ex_range(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm,
                  k1, atire, k, lo, hi, acc2[c], seen2[c], rows, scores, counts)  # fmt: skip
    return rows, scores, counts


@njit(nogil=True, cache=True)
def _bmp_range(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
               atire, tmax, slot, qmax, shift, sterms, sptr, sq, sgptr, sg, k, first_n, fallback,
               lo, hi, ub, seen, rows, scores, counts):  # fmt: skip
    for q in range(lo, hi):
        a, b = qptr[q], qptr[q + 1]
        counts[q] = _one_query_bmp(tids[a:b], tw[a:b], indptr, bptr, first, offset, bits, words,
                                   lengths, idf, norm, k1, atire, tmax, slot, qmax, shift, sterms,
                                   sptr, sq, sgptr, sg, k, first_n, fallback, ub, seen, rows[q],
                                   scores[q])  # fmt: skip


@njit(nogil=True, cache=True)
def bmp_serial(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
               atire, tmax, slot, qmax, shift, sterms, sptr, sq, sgptr, sg, k, first_n, fallback,
               ub, seen):  # fmt: skip
    """(rows[q, k] int32, scores[q, k] float32, counts[q] int32), as ``bmp``."""
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    _bmp_range(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm, k1,
               atire, tmax, slot, qmax, shift, sterms, sptr, sq, sgptr, sg, k, first_n, fallback,
               0, nq, ub, seen, rows, scores, counts)  # fmt: skip
    return rows, scores, counts


@njit(nogil=True, cache=True, parallel=True)
def bmp_parallel(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm,
                 k1, atire, tmax, slot, qmax, shift, sterms, sptr, sq, sgptr, sg, k, first_n,
                 fallback, ub2, seen2):  # fmt: skip
    nq = len(qptr) - 1
    rows = np.full((nq, k), -1, dtype=np.int32)
    scores = np.zeros((nq, k), dtype=np.float32)
    counts = np.zeros(nq, dtype=np.int32)
    chunks = min(ub2.shape[0], nq)
    for ch in prange(chunks):
        lo = ch * nq // chunks
        hi = (ch + 1) * nq // chunks
        _bmp_range(qptr, tids, tw, indptr, bptr, first, offset, bits, words, lengths, idf, norm,
                   k1, atire, tmax, slot, qmax, shift, sterms, sptr, sq, sgptr, sg, k, first_n,
                   fallback, lo, hi, ub2[ch], seen2[ch], rows, scores, counts)  # fmt: skip
    return rows, scores, counts
