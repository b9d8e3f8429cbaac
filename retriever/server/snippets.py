"""Query-biased snippets for the web-style endpoints: the window of a passage that best matches.

A search service shows the part of a page that matches the query, not its first words. Words
match through the index's own analyzer, so ``running`` in a passage matches ``runs`` in a query
(both stem to ``run``). Serper and OpenResearcher's search service return plain snippets (no
marks): ``mark`` stays empty for them.

>>> from retriever.bm25.analyzer import Analyzer
>>> text = "Paris is large. " * 10 + "The river Seine runs through the city of Paris."
>>> snippet(text, "seine river", Analyzer(), max_words=6)
'... large. The river Seine runs through ...'
>>> snippet("Cats running fast", "run", Analyzer(), mark=("<b>", "</b>"))
'Cats <b>running</b> fast'
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from ..bm25.analyzer import Analyzer

ELLIPSIS = "..."


def best_window(matches: Sequence[frozenset[str]], size: int) -> int:
    """Start of the ``size``-token window holding the most distinct query terms, then the most
    matched tokens; of those, the one whose matches sit nearest its middle (then the earliest).

    >>> best_window([frozenset(), frozenset({"a"}), frozenset(), frozenset({"a"}),
    ...              frozenset({"b"})], 2)
    3
    >>> best_window([frozenset()] * 5, 2)
    0
    """
    n = len(matches)
    if n <= size:
        return 0
    counts: dict[str, int] = {}
    hits = 0

    def add(terms: frozenset[str], step: int) -> None:
        nonlocal hits
        if terms:
            hits += step
        for t in terms:
            counts[t] = counts.get(t, 0) + step
            if not counts[t]:
                del counts[t]

    for terms in matches[:size]:
        add(terms, 1)
    ties, best_score = [0], (len(counts), hits)
    for start in range(1, n - size + 1):
        add(matches[start - 1], -1)
        add(matches[start + size - 1], 1)
        score = (len(counts), hits)
        if score > best_score:
            ties, best_score = [start], score
        elif score == best_score:
            ties.append(start)
    if best_score[1] == 0:
        return 0
    matched = [i for i, terms in enumerate(matches) if terms]

    def off_centre(start: int) -> int:  # the matches of a window should sit in its middle
        first = matched[bisect_left(matched, start)]
        last = matched[bisect_right(matched, start + size - 1) - 1]
        return abs((first - start) - (start + size - 1 - last))

    return min(ties, key=off_centre)


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
    words = text.split()
    query_terms = frozenset(analyzer.terms(query))
    found = _matched_terms(list(dict.fromkeys(words)), query_terms, analyzer)
    matches = [found[w] for w in words]
    start = best_window(matches, max_words)
    stop = min(len(words), start + max_words)
    pre, post = mark
    shown = [f"{pre}{w}{post}" if (pre or post) and matches[i] else w
             for i, w in zip(range(start, stop), words[start:stop])]  # fmt: skip
    head = ELLIPSIS + " " if start > 0 else ""
    tail = " " + ELLIPSIS if stop < len(words) else ""
    out = head + " ".join(shown) + tail
    if max_chars is not None and len(out) > max_chars:
        cut = out[: max(0, max_chars - len(ELLIPSIS) - 1)]
        cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
        out = f"{cut} {ELLIPSIS}" if cut else out[:max_chars]
    return out


def _matched_terms(
    tokens: list[str], query_terms: frozenset[str], analyzer: Analyzer
) -> dict[str, frozenset[str]]:
    """Each distinct token's query terms, stemming all tokens' words in one call (per-token
    ``terms`` calls cost several times more)."""
    if not query_terms:
        return dict.fromkeys(tokens, _NONE)
    if analyzer.script is not None:  # terms() converts the script first: keep its path
        return {t: query_terms.intersection(analyzer.terms(t)) for t in tokens}
    pieces = [analyzer.words(t) for t in tokens]
    terms = iter(analyzer.word_terms([w for p in pieces for w in p]))
    out = {}
    for token, piece in zip(tokens, pieces, strict=True):
        mine = [next(terms) for _ in piece]
        out[token] = query_terms.intersection(mine) if mine else _NONE
    return out


def first_words(text: str, max_words: int) -> str:
    """The first ``max_words`` words of ``text`` (BrowseComp-Plus's snippet: the document's
    first N tokens, not a query-biased window).

    >>> first_words("a b c d", 2)
    'a b'
    """
    words = text.split(maxsplit=max_words)
    return text.strip() if len(words) <= max_words else " ".join(words[:max_words])


_NONE: frozenset[str] = frozenset()
