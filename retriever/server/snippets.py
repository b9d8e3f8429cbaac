"""Query-biased snippets for the web-style endpoints: the window of a passage that best matches.

A search service shows the part of a page that matches the query, not its first words. Words
match through the index's own analyzer, so ``running`` in a passage matches ``runs`` in a query
(both stem to ``run``). Serper and OpenResearcher's search service return plain snippets (no
marks): ``mark`` stays empty for them.

Snippets sit on every web search request, so they are made cheaply (BENCHMARKS.md, "Web-API
endpoints"): the query is analyzed once per request (``snippets``); each word's index terms
come from a bounded per-analyzer cache (words repeat across passages: only new ones are
tokenized and stemmed, together); the rest of the work visits the matched words only (the
windows are scored where a match enters or leaves them, not at every start).

>>> from retriever.bm25.analyzer import Analyzer
>>> text = "Paris is large. " * 10 + "The river Seine runs through the city of Paris."
>>> snippet(text, "seine river", Analyzer(), max_words=6)
'... large. The river Seine runs through ...'
>>> snippet("Cats running fast", "run", Analyzer(), mark=("<b>", "</b>"))
'Cats <b>running</b> fast'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import compress
from operator import not_

from ..bm25.analyzer import Analyzer

ELLIPSIS = "..."
CACHE_WORDS = 1 << 16  # distinct words one analyzer's cache keeps (about 15 MB)


def best_window(matches: Sequence[frozenset[str]], size: int) -> int:
    """Start of the ``size``-token window holding the most distinct query terms, then the most
    matched tokens; of those, the one whose matches sit nearest its middle (then the earliest).

    >>> best_window([frozenset(), frozenset({"a"}), frozenset(), frozenset({"a"}),
    ...              frozenset({"b"})], 2)
    3
    >>> best_window([frozenset()] * 5, 2)
    0
    """
    where = compress(range(len(matches)), matches)
    return _best_start(len(matches), {p: matches[p] for p in where}, size)


def _best_start(n: int, found: dict[int, frozenset[str]], size: int) -> int:
    """``best_window`` of ``n`` tokens given only the matched ones (position -> query terms,
    in order): the passage's other tokens cost nothing here."""
    where = list(found)
    if n <= size or not where:
        return 0
    # What a window holds changes only at the starts where a match enters or leaves it, so
    # score the runs of starts between those cuts, not every start.
    last_start = n - size
    cuts = {0, *(p + 1 for p in where), *(p - size + 1 for p in where)}
    cuts = sorted(c for c in cuts if 0 <= c <= last_start)
    counts: dict[str, int] = {}  # query term -> matched tokens holding it in the window
    a = b = 0  # the windows of this run hold where[a:b]
    best, pick = None, 0
    for k, lo in enumerate(cuts):
        hi = cuts[k + 1] - 1 if k + 1 < len(cuts) else last_start
        while b < len(where) and where[b] < lo + size:
            for t in found[where[b]]:
                counts[t] = counts.get(t, 0) + 1
            b += 1
        while a < b and where[a] < lo:
            for t in found[where[a]]:
                counts[t] -= 1
                if not counts[t]:
                    del counts[t]
            a += 1
        if a == b:
            continue
        first, last = where[a], where[b - 1]
        # nearest the middle: the start that centres first..last, or the run's nearest end
        start = min(max((first + last - size + 1) // 2, lo), hi)
        off_centre = abs((first - start) - (start + size - 1 - last))
        key = (len(counts), b - a, -off_centre)
        if best is None or key > best:  # strictly better: the earliest of equals stays
            best, pick = key, start
    return pick


def snippets(
    texts: Iterable[str],
    query: str,
    analyzer: Analyzer,
    max_words: int = 30,
    max_chars: int | None = None,
    mark: tuple[str, str] = ("", ""),
) -> list[str]:
    """``snippet`` of each of ``texts`` (one request's hits) for one query, analyzed once."""
    query_terms = frozenset(analyzer.terms(query))
    return [_snippet(t, query_terms, analyzer, max_words, max_chars, mark) for t in texts]


def snippet(
    text: str,
    query: str,
    analyzer: Analyzer,
    max_words: int = 30,
    max_chars: int | None = None,
    mark: tuple[str, str] = ("", ""),
) -> str:
    """The ``max_words`` whitespace-separated words of ``text`` that best match ``query``, with
    ``...`` where the window cuts the text, matched words wrapped in ``mark``, and at most
    ``max_chars`` characters (cut at a word). Text in scripts written without spaces is one
    "word" here, so ``max_chars`` is what bounds it."""
    return snippets([text], query, analyzer, max_words, max_chars, mark)[0]


def _snippet(
    text: str,
    query_terms: frozenset[str],
    analyzer: Analyzer,
    max_words: int,
    max_chars: int | None,
    mark: tuple[str, str],
) -> str:
    words = text.split()
    found: dict[int, frozenset[str]] = {}  # matched word's position -> its query terms
    if query_terms:
        terms = _word_terms(words, analyzer)
        hit = map(not_, map(query_terms.isdisjoint, terms))
        found = {i: query_terms.intersection(terms[i]) for i in compress(range(len(words)), hit)}
    start = _best_start(len(words), found, max_words)
    stop = min(len(words), start + max_words)
    pre, post = mark
    shown = [f"{pre}{w}{post}" if (pre or post) and i in found else w
             for i, w in zip(range(start, stop), words[start:stop])]  # fmt: skip
    head = ELLIPSIS + " " if start > 0 else ""
    tail = " " + ELLIPSIS if stop < len(words) else ""
    out = head + " ".join(shown) + tail
    if max_chars is not None and len(out) > max_chars:
        cut = out[: max(0, max_chars - len(ELLIPSIS) - 1)]
        cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
        out = f"{cut} {ELLIPSIS}" if cut else out[:max_chars]
    return out


def _word_terms(words: list[str], analyzer: Analyzer) -> list[tuple[str, ...]]:
    """The index terms of each whitespace word, from the analyzer's cache; the words it lacks
    are analyzed together and added (the cache starts over when full, so it stays bounded)."""
    cache = _CACHES.get(analyzer)
    if cache is None:
        cache = _CACHES.setdefault(analyzer, {})
    terms = list(map(cache.get, words))
    if None in terms:
        missing = list(dict.fromkeys(w for w, t in zip(words, terms) if t is None))
        new = dict(zip(missing, _analyze(missing, analyzer), strict=True))
        if len(cache) + len(new) > CACHE_WORDS:
            cache.clear()
        cache.update(new)
        terms = [new[w] if t is None else t for w, t in zip(words, terms)]
    return terms


def _analyze(words: list[str], analyzer: Analyzer) -> list[tuple[str, ...]]:
    """The index terms of each word, stemming all words' pieces in one call (per-word
    ``terms`` calls cost several times more)."""
    if analyzer.script is not None:  # terms() converts the script first: keep its path
        return [tuple(analyzer.terms(w)) for w in words]
    pieces = [analyzer.words(w) for w in words]
    terms = iter(analyzer.word_terms([p for piece in pieces for p in piece]))
    out = []
    for piece in pieces:
        mine = [next(terms) for _ in piece]
        out.append(tuple(t for t in mine if t is not None))  # None: a stopword
    return out


def first_words(text: str, max_words: int) -> str:
    """The first ``max_words`` words of ``text`` (BrowseComp-Plus's snippet: the document's
    first N tokens, not a query-biased window).

    >>> first_words("a b c d", 2)
    'a b'
    """
    words = text.split(maxsplit=max_words)
    return text.strip() if len(words) <= max_words else " ".join(words[:max_words])


_CACHES: dict[Analyzer, dict[str, tuple[str, ...]]] = {}
