"""Raw tokens of many passages at once, for the BM25 builder: ``Analyzer.words`` in compiled code.

Python's regex engine and one dict operation per token were three quarters of the build's CPU
time. For the default pattern (``STANDARD_PATTERN`` with the standard segmenter) one numba pass
walks the code points of a chunk's lowercased text instead, with the pattern's alternatives in
its order (numbers with inner separators, then words with inner apostrophes and dots, then one
CJK character) and character classes taken from Python's ``re`` itself, so the tokens are the
regex's; as it goes, a hash table numbers the distinct tokens in first-seen order, comparing
code points (never trusting a hash alone). Only the distinct tokens become Python strings.

Other patterns and segmenters (bigram, jieba) go through ``Analyzer.words`` passage by passage.
The tests compare both paths on real passages and on hostile text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import numpy as np
from numba import njit

from retriever.bm25.analyzer import _CJK, _W, STANDARD_PATTERN, Analyzer

DIGIT, WORD, CJK = 1, 2, 4  # bits of the class table: \d, word (not CJK), CJK character
_DOT, _COMMA, _QUOTE, _RQUOTE = ord("."), ord(","), ord("'"), ord("’")


@functools.cache
def char_classes() -> np.ndarray:
    """uint8 class bits of every code point, computed with the analyzer's own regex classes."""
    every = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    table = np.zeros(0x110000, dtype=np.uint8)
    for bit, pattern in ((DIGIT, r"\d"), (WORD, _W), (CJK, f"[{_CJK}]")):
        hits = np.fromiter((m.start() for m in re.finditer(pattern, every)), dtype=np.int64)
        table[hits] |= bit
    return table


def compiled(analyzer: Analyzer) -> bool:
    """Whether ``analyzer.words`` has the compiled path (the default English pattern)."""
    return analyzer.pattern == STANDARD_PATTERN and analyzer.segmenter == "standard"


@njit(nogil=True, cache=True, inline="always")
def _match_end(cps, table, i):  # pragma: no cover - compiled
    """Where the token starting at ``i`` ends, trying the pattern's alternatives in its order;
    -1 when none matches there."""
    n = len(cps)
    c = table[cps[i]]
    if c & DIGIT:  # \d+(?:[.,]\d+)+
        e = i + 1
        while e < n and table[cps[e]] & DIGIT:
            e += 1
        groups = 0
        while e + 1 < n and (cps[e] == _DOT or cps[e] == _COMMA) and table[cps[e + 1]] & DIGIT:
            e += 2
            while e < n and table[cps[e]] & DIGIT:
                e += 1
            groups += 1
        if groups > 0:
            return e
    if c & WORD:  # W+(?:['’.]W+)*
        e = i + 1
        while e < n and table[cps[e]] & WORD:
            e += 1
        while (
            e + 1 < n
            and (cps[e] == _QUOTE or cps[e] == _RQUOTE or cps[e] == _DOT)
            and table[cps[e + 1]] & WORD
        ):
            e += 2
            while e < n and table[cps[e]] & WORD:
                e += 1
        return e
    if c & CJK:
        return i + 1
    return -1


@njit(nogil=True, cache=True)
def _tokens(cps, table, text_starts, ids, lengths, first_start, first_end):  # pragma: no cover
    """Scan ``cps`` as ``re.findall(STANDARD_PATTERN)`` would and number the distinct tokens
    in first-seen order as they come: token ``t`` is ``ids[t]``, ``lengths[i]`` counts the
    tokens of text ``i`` (``text_starts``: where each text begins); number ``d`` first spans
    ``first_start[d]:first_end[d]``. Returns (tokens, distinct tokens).

    Open addressing on an FNV-1a hash of the code points, equality by the code points
    themselves (packed into ``pool``: one cache line, not a miss into the text per token); the
    table doubles at half load, so it stays the size of the distinct tokens."""
    n = len(cps)
    cap = 1 << 14
    slots = np.full(cap, -1, dtype=np.int64)
    hashes = np.empty(1 << 14, dtype=np.uint64)
    pool = np.empty(n, dtype=cps.dtype)
    pool_at = np.empty(1 << 14, dtype=np.int64)
    pool_at[0] = 0
    k = 0
    m = 0
    doc = 0
    i = 0
    while i < n:
        if table[cps[i]] == 0:
            i += 1
            continue
        e = _match_end(cps, table, i)
        if e < 0:
            i += 1
            continue
        while doc + 1 < len(text_starts) and text_starts[doc + 1] <= i:
            doc += 1
        h = np.uint64(14695981039346656037)
        for j in range(i, e):
            h = (h ^ np.uint64(cps[j])) * np.uint64(1099511628211)
        pos = np.int64((h ^ (h >> np.uint64(31))) & np.uint64(cap - 1))
        while True:
            d = slots[pos]
            if d < 0:  # a new token
                if m + 1 >= len(hashes):
                    hashes = np.concatenate((hashes, np.empty(len(hashes), dtype=np.uint64)))
                    pool_at = np.concatenate((pool_at, np.empty(len(pool_at), dtype=np.int64)))
                slots[pos] = m
                hashes[m] = h
                a = pool_at[m]
                for j in range(e - i):
                    pool[a + j] = cps[i + j]
                pool_at[m + 1] = a + e - i
                first_start[m] = i
                first_end[m] = e
                d = m
                m += 1
                break
            if hashes[d] == h:
                a = pool_at[d]
                if pool_at[d + 1] - a == e - i:
                    same = True
                    for j in range(e - i):
                        if pool[a + j] != cps[i + j]:
                            same = False
                            break
                    if same:
                        break
            pos = (pos + 1) & (cap - 1)
        ids[k] = d
        lengths[doc] += 1
        k += 1
        i = e
        if 2 * m > cap:  # grow: re-place every distinct token by its hash
            cap <<= 1
            slots = np.full(cap, -1, dtype=np.int64)
            for d in range(m):
                hd = hashes[d]
                pos = np.int64((hd ^ (hd >> np.uint64(31))) & np.uint64(cap - 1))
                while slots[pos] >= 0:
                    pos = (pos + 1) & (cap - 1)
                slots[pos] = d
    return k, m


def chunk_tokens(
    analyzer: Analyzer, texts: Iterable[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(distinct raw tokens in first-seen order, token id of every token in order, raw token
    count of each text): what ``analyzer.words`` gives text by text, numbered. ``texts`` may be
    a generator: the compiled path keeps only their lowercased copies, then one joined string
    (a chunk's text is most of a worker's memory)."""
    if not compiled(analyzer):
        raw: dict[str, int] = {}
        lengths: list[int] = []
        ids: list[int] = []
        for text in texts:
            ws = analyzer.words(text)
            lengths.append(len(ws))
            ids.extend([raw.setdefault(w, len(raw)) for w in ws])
        return list(raw), np.asarray(ids, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    texts = [t.lower() for t in texts] if analyzer.lowercase else list(texts)
    text_starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum([len(t) + 1 for t in texts[:-1]], out=text_starts[1:])
    # one string; a newline between texts (no token holds one) keeps their tokens apart
    joined = "\n".join(texts)
    del texts
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    # sized for the worst case (a token per code point); only the pages written count
    ids = np.empty(len(cps), dtype=np.int64)
    lengths = np.zeros(len(text_starts), dtype=np.int64)
    first_start = np.empty(len(cps), dtype=np.int64)
    first_end = np.empty(len(cps), dtype=np.int64)
    k, m = _tokens(cps, char_classes(), text_starts, ids, lengths, first_start, first_end)
    spans = zip(first_start[:m].tolist(), first_end[:m].tolist())
    tokens = [joined[s:e] for s, e in spans]
    return tokens, ids[:k], lengths
