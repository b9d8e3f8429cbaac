"""Raw tokens of many passages at once, for the BM25 builder: ``Analyzer.words`` in compiled code.

Python's regex engine and one dict operation per token were three quarters of the build's CPU
time. For the default pattern (``STANDARD_PATTERN`` with the standard segmenter) a numba scanner
walks the code points of a chunk's lowercased text instead, with the same alternatives in the
same order (numbers with inner separators, then words with inner apostrophes and dots, then one
CJK character) and character classes taken from Python's ``re`` itself, so the tokens are the
regex's. A numba hash table then numbers the distinct tokens in first-seen order, comparing code
points (never trusting a hash alone). Only the distinct tokens become Python strings.

Other patterns and segmenters (bigram, jieba) go through ``Analyzer.words`` passage by passage.
The tests compare both paths on real passages and on hostile text.
"""

from __future__ import annotations

import functools
import re

import numpy as np
from numba import njit

from retriever.bm25.analyzer import _CJK, _W, STANDARD_PATTERN, Analyzer

DIGIT, WORD, CJK = 1, 2, 4  # bits of the class table: \d, word (not CJK), CJK character
_DOT, _COMMA, _QUOTE, _RQUOTE = ord("."), ord(","), ord("'"), ord("’")


@functools.cache
def char_classes() -> np.ndarray:
    """uint8 class bits of every code point, computed with the analyzer's own regex classes."""
    every = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, dtype=np.uint8)
    for bit, pattern in ((DIGIT, r"\d"), (WORD, _W), (CJK, f"[{_CJK}]")):
        hits = np.fromiter((m.start() for m in re.finditer(pattern, every)), dtype=np.int64)
        table[hits] |= bit
    return table


def compiled(analyzer: Analyzer) -> bool:
    """Whether ``analyzer.words`` has the compiled path (the default English pattern)."""
    return analyzer.pattern == STANDARD_PATTERN and analyzer.segmenter == "standard"


@njit(nogil=True, cache=True)
def _scan(cps, table, text_starts, starts, ends, docs, store):  # pragma: no cover - compiled
    """Token spans of ``cps`` as ``re.findall(STANDARD_PATTERN)`` finds them, and the text of
    each (``text_starts``: where each text begins), written when ``store`` (else only counted);
    returns the count."""
    n = len(cps)
    k = 0
    i = 0
    doc = 0
    while i < n:
        c = table[cps[i]]
        if c == 0:
            i += 1
            continue
        end = -1
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
                end = e
        if end < 0 and c & WORD:  # W+(?:['’.]W+)*
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
            end = e
        if end < 0 and c & CJK:
            end = i + 1
        if end < 0:
            i += 1
            continue
        if store:
            while doc + 1 < len(text_starts) and text_starts[doc + 1] <= i:
                doc += 1
            starts[k] = i
            ends[k] = end
            docs[k] = doc
        k += 1
        i = end
    return k


@njit(nogil=True, cache=True)
def _intern(cps, starts, ends, ids, first):  # pragma: no cover - compiled
    """Number the distinct tokens of the spans in first-seen order: ``ids[t]`` is token ``t``'s
    number, ``first[d]`` the first span of number ``d``; returns how many. Open addressing
    on an FNV-1a hash of the code points, equality by the code points themselves; the table
    doubles at half load, so it stays the size of the distinct tokens (cache-resident)."""
    cap = 1 << 14
    slots = np.full(cap, -1, dtype=np.int64)
    hashes = np.empty(len(starts), dtype=np.uint64)
    # the distinct tokens' code points, packed: compared there, not at their first occurrence
    # in the text (a cache miss per token)
    pool = np.empty(len(cps), dtype=cps.dtype)
    pool_at = np.empty(len(starts) + 1, dtype=np.int64)
    pool_at[0] = 0
    m = 0
    for t in range(len(starts)):
        s = starts[t]
        e = ends[t]
        h = np.uint64(14695981039346656037)
        for j in range(s, e):
            h = (h ^ np.uint64(cps[j])) * np.uint64(1099511628211)
        pos = np.int64((h ^ (h >> np.uint64(31))) & np.uint64(cap - 1))
        while True:
            d = slots[pos]
            if d < 0:
                slots[pos] = m
                hashes[m] = h
                first[m] = t
                ids[t] = m
                a = pool_at[m]
                for j in range(e - s):
                    pool[a + j] = cps[s + j]
                pool_at[m + 1] = a + e - s
                m += 1
                break
            if hashes[d] == h:
                a = pool_at[d]
                if pool_at[d + 1] - a == e - s:
                    same = True
                    for j in range(e - s):
                        if pool[a + j] != cps[s + j]:
                            same = False
                            break
                    if same:
                        ids[t] = d
                        break
            pos = (pos + 1) & (cap - 1)
        if 2 * m > cap:  # grow: re-place every distinct token by its hash
            cap <<= 1
            slots = np.full(cap, -1, dtype=np.int64)
            for d in range(m):
                hd = hashes[d]
                pos = np.int64((hd ^ (hd >> np.uint64(31))) & np.uint64(cap - 1))
                while slots[pos] >= 0:
                    pos = (pos + 1) & (cap - 1)
                slots[pos] = d
    return m


def chunk_tokens(analyzer: Analyzer, texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(distinct raw tokens in first-seen order, token id of every token in order, raw token
    count of each text): what ``analyzer.words`` gives text by text, numbered."""
    if not compiled(analyzer):
        raw: dict[str, int] = {}
        lengths: list[int] = []
        ids: list[int] = []
        for text in texts:
            ws = analyzer.words(text)
            lengths.append(len(ws))
            ids.extend([raw.setdefault(w, len(raw)) for w in ws])
        return list(raw), np.asarray(ids, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    if analyzer.lowercase:
        texts = [t.lower() for t in texts]
    # one string; a newline between texts (no token holds one) keeps their tokens apart
    joined = "\n".join(texts)
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    text_starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum([len(t) + 1 for t in texts[:-1]], out=text_starts[1:])
    table = char_classes()
    none = np.empty(0, dtype=np.int64)
    k = _scan(cps, table, text_starts, none, none, none, False)  # count, then fill exact arrays
    starts = np.empty(k, dtype=np.int64)
    ends = np.empty(k, dtype=np.int64)
    docs = np.empty(k, dtype=np.int64)
    _scan(cps, table, text_starts, starts, ends, docs, True)
    ids = np.empty(k, dtype=np.int64)
    first = np.empty(k, dtype=np.int64)
    m = _intern(cps, starts, ends, ids, first)
    tokens = [joined[s:e] for s, e in zip(starts[first[:m]].tolist(), ends[first[:m]].tolist())]
    return tokens, ids, np.bincount(docs, minlength=len(texts)).astype(np.int64)
