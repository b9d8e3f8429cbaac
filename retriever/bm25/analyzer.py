"""The BM25 analyzer: text -> index terms, configured once and stored WITH the index.

Documents and queries go through the same ``Analyzer`` built from the index manifest, so they
can never disagree (the bm25s pitfall of a tokenizer saved apart from its index). The default
mirrors Lucene's English analysis as pyserini runs it (UAX#29-like words, possessive ``'s``
dropped, lowercase, Lucene's 33 English stopwords, Porter stemmer), which keeps the embedded
engine and the Lucene backend in agreement.

>>> Analyzer().terms("Einstein's theory of relativity, 1,000 U.S. running cats!")
['einstein', 'theori', 'rel', '1,000', 'u.', 'run', 'cat']
>>> Analyzer().terms("The and of, to be!")
[]
>>> Analyzer(stemmer=None, stopwords=()).terms("The Cats")
['the', 'cats']
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from functools import cached_property

from ..errors import IndexFormatError

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (what pyserini's default analyzer removes).
LUCENE_STOPWORDS = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
)  # fmt: skip

# Word characters that are not CJK ideographs or kana (those become one term per character,
# as Lucene's StandardTokenizer does).
_CJK = "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_W = rf"[^\W{_CJK}]"
# Numbers keep their inner separators (1,000  3.14); words their inner apostrophes and dots
# (don't, o'neil, u.s); CJK characters stand alone.
STANDARD_PATTERN = rf"\d+(?:[.,]\d+)+|{_W}+(?:['’.]{_W}+)*|[{_CJK}]"

STEMMERS = ("porter", "english", "none")


def _stopword_list(name_or_words: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if not isinstance(name_or_words, str):
        return tuple(name_or_words)
    if name_or_words == "lucene":
        return LUCENE_STOPWORDS
    if name_or_words == "none":
        return ()
    if name_or_words == "english":
        from bm25s.stopwords import STOPWORDS_EN_PLUS

        return tuple(STOPWORDS_EN_PLUS)
    raise ValueError(
        f"unknown stopword list {name_or_words!r}: use lucene, english, none or a list of words"
    )


@dataclass(frozen=True)
class Analyzer:
    """Lowercase, tokenize, drop stopwords, stem. ``to_dict``/``from_dict`` round-trip it."""

    lowercase: bool = True
    stemmer: str | None = "porter"
    stopwords: tuple[str, ...] = LUCENE_STOPWORDS
    pattern: str = STANDARD_PATTERN
    possessive: bool = True

    def __post_init__(self):
        if self.stemmer == "none":
            object.__setattr__(self, "stemmer", None)
        if self.stemmer is not None and self.stemmer not in STEMMERS:
            raise ValueError(f"unknown stemmer {self.stemmer!r}: use one of {', '.join(STEMMERS)}")
        object.__setattr__(self, "stopwords", tuple(self.stopwords))

    @classmethod
    def create(
        cls, stemmer: str | None = "porter", stopwords="lucene", lowercase: bool = True
    ) -> Analyzer:
        """Build from CLI-style names (``stopwords``: lucene, english, none, or a list of words)."""
        return cls(lowercase=lowercase, stemmer=stemmer, stopwords=_stopword_list(stopwords))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stopwords"] = list(self.stopwords)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Analyzer:
        try:
            return cls(
                lowercase=bool(d["lowercase"]),
                stemmer=d["stemmer"],
                stopwords=tuple(d["stopwords"]),
                pattern=d["pattern"],
                possessive=bool(d.get("possessive", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"bad analyzer settings in the index manifest: {exc}") from exc

    @cached_property
    def _regex(self) -> re.Pattern:
        return re.compile(self.pattern)

    @cached_property
    def _stopset(self) -> frozenset[str]:
        return frozenset(self.stopwords)

    @cached_property
    def _local(self) -> threading.local:
        return threading.local()

    def _stem_words(self, words: list[str]) -> list[str]:
        # PyStemmer objects are not thread-safe: one per thread (each with its own cache).
        stem = getattr(self._local, "stem", None)
        if stem is None:
            import Stemmer

            stem = self._local.stem = Stemmer.Stemmer(self.stemmer, 100_000).stemWords
        return stem(words)

    def words(self, text: str) -> list[str]:
        """The raw tokens of ``text`` (lowercased when configured), before ``word_terms``."""
        return self._regex.findall(text.lower() if self.lowercase else text)

    def word_terms(self, words: list[str]) -> list[str | None]:
        """The term of each raw token, None for a stopword. A pure per-token function, so an
        index builder may apply it once per distinct token."""
        if self.possessive:
            words = [w[:-2] if w.endswith(("'s", "’s", "'S", "’S")) else w for w in words]
        stop = self._stopset
        keep = [w not in stop for w in words]
        kept = [w for w, k in zip(words, keep) if k]
        if self.stemmer is not None and kept:
            kept = self._stem_words(kept)
        it = iter(kept)
        return [next(it) if k else None for k in keep]

    def terms(self, text: str) -> list[str]:
        """The index terms of ``text``, in order, duplicates kept."""
        return [t for t in self.word_terms(self.words(text)) if t is not None]

    def terms_many(self, texts) -> list[list[str]]:
        return [self.terms(t) for t in texts]
