"""Query-biased snippets (retriever/server/snippets.py) equal, character for character, what the
first implementation made: a frozen copy of it lives here as the reference, and both run on
real passage/query pairs (HotpotQA paragraphs and questions, the XML sample's passages) plus
the awkward cases: non-ASCII text, punctuation, repeated terms, no matching term, very long
passages, other languages' analyzers, marks and character caps."""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import orjson
import pytest
from conftest import HOTPOT

from retriever.bm25.analyzer import Analyzer
from retriever.server.snippets import snippet, snippets
from retriever.store.docstore import DocStore

# ---- the reference: snippets.py as of commit 9560c6a, frozen --------------------------------
_NONE: frozenset[str] = frozenset()


def _ref_best_window(matches: Sequence[frozenset[str]], size: int) -> int:
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

    def off_centre(start: int) -> int:
        first = matched[bisect_left(matched, start)]
        last = matched[bisect_right(matched, start + size - 1) - 1]
        return abs((first - start) - (start + size - 1 - last))

    return min(ties, key=off_centre)


def _ref_matched_terms(tokens, query_terms, analyzer):
    if not query_terms:
        return dict.fromkeys(tokens, _NONE)
    if analyzer.script is not None:
        return {t: query_terms.intersection(analyzer.terms(t)) for t in tokens}
    pieces = [analyzer.words(t) for t in tokens]
    terms = iter(analyzer.word_terms([w for p in pieces for w in p]))
    out = {}
    for token, piece in zip(tokens, pieces, strict=True):
        mine = [next(terms) for _ in piece]
        out[token] = query_terms.intersection(mine) if mine else _NONE
    return out


def reference(text, query, analyzer, max_words=30, max_chars=None, mark=("", "")) -> str:
    words = text.split()
    query_terms = frozenset(analyzer.terms(query))
    found = _ref_matched_terms(list(dict.fromkeys(words)), query_terms, analyzer)
    matches = [found[w] for w in words]
    start = _ref_best_window(matches, max_words)
    stop = min(len(words), start + max_words)
    pre, post = mark
    shown = [f"{pre}{w}{post}" if (pre or post) and matches[i] else w
             for i, w in zip(range(start, stop), words[start:stop])]  # fmt: skip
    head = "... " if start > 0 else ""
    tail = " ..." if stop < len(words) else ""
    out = head + " ".join(shown) + tail
    if max_chars is not None and len(out) > max_chars:
        cut = out[: max(0, max_chars - 4)]
        cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
        out = f"{cut} ..." if cut else out[:max_chars]
    return out


# ---- the pairs ------------------------------------------------------------------------------
AWKWARD_TEXTS = [
    "Zürich's Straße führt über die Brücke; Ærøskøbing, Łódź and São Paulo — naïve café "
    "résumé. ΣΟΦΙΑ σοφίας ΟΔΟΣ. İstanbul'un İzmir ﬁnance ﬂow. Москва — столица России.",
    "東京都に住む人々は、毎日電車で通勤する。北京是中国的首都。ภาษาไทย ไม่มีช่องว่าง",
    "臺灣的首都是臺北。 台湾 的 首都 是 台北 ， 東京 是 日本 的 首都 。",
    "U.S. forces, 1,000 men (3.14%), arrived: don't o'neil's X-ray e-mail!!! ... --- ???",
    "",
    "   \n\t  ",
    "one",
]
AWKWARD_QUERIES = [
    "Where's São Paulo? Zürich, Łódź!",
    "paris paris paris PARIS Paris's",
    "zzqxv qqqjjj",  # matches nothing
    "the of and to",  # stopwords only: no query terms
    "",
    "東京 北京 通勤",
    "台灣 首都 臺北",
    "U.S. 1,000 don't o'neil X-ray",
    "σοφία ΟΔΟΣ istanbul İzmir финансы Москва",
    "((a+)+)$ [x] {y} \\d* ^foo$ |bar|",
]


def _hotpot_rows(n: int) -> list[dict]:
    with open(HOTPOT, "rb") as f:
        return [orjson.loads(line) for line, _ in zip(f, range(n))]


@pytest.fixture(scope="module")
def pairs(xml_root) -> list[tuple[str, str]]:
    """About 700 (text, query) pairs: each HotpotQA question with two of its own paragraphs
    and one of another question's, the XML sample's passages with those questions, long
    passages made of many paragraphs, and the awkward texts and queries crossed."""
    rows = _hotpot_rows(120)
    paras = ["".join(s) for r in rows for _, s in r["context"]]
    questions = [r["question"] for r in rows]
    out = []
    for i, r in enumerate(rows):
        mine = ["".join(s) for _, s in r["context"][:2]]
        out += [(p, r["question"]) for p in mine]
        out.append((paras[(i * 37 + 11) % len(paras)], r["question"]))
    store = DocStore(xml_root)
    step = max(1, len(store) // 200)
    for j, row in enumerate(range(0, len(store), step)):
        out.append((store.get(row).text, questions[j % len(questions)]))
    long_text = " ".join(paras[:30])  # about 2,500 words
    out += [(long_text, q) for q in questions[:8] + AWKWARD_QUERIES]
    out += [(t, q) for t, q in itertools.product(AWKWARD_TEXTS + paras[:3], AWKWARD_QUERIES)]
    out += [(t, q) for t in AWKWARD_TEXTS for q in questions[:5]]
    return out


# ---- the checks -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "max_words, max_chars, mark",
    [
        (30, 200, ("", "")),
        (30, None, ("<b>", "</b>")),
        (8, 60, ("**", "**")),
        (400, None, ("", "")),
    ],
)
def test_same_snippets_as_the_reference(pairs, max_words, max_chars, mark):
    """The English analyzer (the default index's), at Serper's and OpenResearcher's settings,
    with marks, narrow windows and windows longer than most passages."""
    analyzer = Analyzer()
    assert len(pairs) > 500
    for text, query in pairs:
        want = reference(text, query, analyzer, max_words, max_chars, mark)
        assert snippet(text, query, analyzer, max_words, max_chars, mark) == want, (text, query)


@pytest.mark.parametrize(
    "analyzer",
    [
        Analyzer(stemmer=None, stopwords=()),
        Analyzer(lowercase=False),
        Analyzer.for_language("de"),
        Analyzer.for_language("ja"),  # bigram segmenter, the runs pattern
        Analyzer.for_language("zh", script="simplified"),  # converts each word's script first
    ],
    ids=["plain", "cased", "de", "ja", "zh-simplified"],
)
def test_same_snippets_with_other_analyzers(pairs, analyzer):
    for text, query in pairs[::3]:
        want = reference(text, query, analyzer, 12, 120, ("<b>", "</b>"))
        assert snippet(text, query, analyzer, 12, 120, ("<b>", "</b>")) == want, (text, query)


def test_snippets_of_many_texts_equal_one_by_one(pairs):
    """The batch form (one query, a request's hits) answers what ``snippet`` answers."""
    analyzer = Analyzer()
    texts = [t for t, _ in pairs[:40]]
    query = pairs[0][1]
    assert snippets(texts, query, analyzer, 30, 200) == [
        reference(t, query, analyzer, 30, 200) for t in texts
    ]


def test_best_window_equals_the_reference_on_random_matches():
    """Sparse and dense matches, one or several terms a token, windows wider than the text."""
    import random

    from retriever.server.snippets import best_window

    rng = random.Random(7)
    terms = [frozenset(), frozenset("a"), frozenset("b"), frozenset("c"), frozenset("ab")]
    for _ in range(3000):
        n, size = rng.randint(0, 60), rng.randint(1, 25)
        dense = rng.random()
        matches = [rng.choice(terms[1:]) if rng.random() < dense / 3 else _NONE for _ in range(n)]
        assert best_window(matches, size) == _ref_best_window(matches, size), (matches, size)
