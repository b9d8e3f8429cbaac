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

Other languages (``Analyzer.for_language``): Snowball stemmers through PyStemmer with their
stopword lists; Chinese, Japanese, Korean and Thai cut into overlapping character bigrams, as
Lucene's CJK analyzer does, or Chinese into words by jieba (``segmenter="jieba"``). Bigrams are
the default: on a Chinese paraphrase test set they found more than jieba's words (Recall@10
0.914 vs 0.894) and answered faster (BENCHMARKS.md, "Chinese BM25 recall by segmenter").

>>> Analyzer.for_language("de").terms("Die Katzen liefen über die Straßen")
['katz', 'lief', 'strass']
>>> Analyzer.for_language("ja").terms("東京都に住む")
['東京', '京都', '都に', 'に住', '住む']
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import asdict, dataclass
from functools import cached_property

from ..errors import IndexFormatError
from ..script import check_script, script_converter

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

# CJK ideographs, kana, hangul, and the scripts of South-East Asia written without spaces: in
# the bigram and jieba segmenters a run of these is cut apart, not kept as one word.
_RUNS = (
    _CJK + "\u30a0-\u30ff\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
)
_WR = rf"[^\W{_RUNS}]"
RUNS_PATTERN = rf"\d+(?:[.,]\d+)+|{_WR}+(?:['’.]{_WR}+)*|[{_RUNS}]+"
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_RUN = re.compile(f"[{_RUNS}]")
SEGMENTERS = ("standard", "bigram", "jieba")

try:
    import Stemmer as _Stemmer

    STEMMERS = tuple(dict.fromkeys(["porter", "english", "none", *_Stemmer.algorithms()]))
except ImportError:  # PyStemmer is a dependency; without it only "none" can work
    STEMMERS = ("porter", "english", "none")

# language code -> (Snowball stemmer or None, stopword list name, segmenter). Stopword lists are
# bm25s's (NLTK's Snowball-derived lists); languages without one keep every word.
LANGUAGES: dict[str, tuple[str | None, str, str]] = {
    "en": ("porter", "lucene", "standard"),
    "ar": ("arabic", "none", "standard"), "hy": ("armenian", "none", "standard"),
    "eu": ("basque", "none", "standard"), "ca": ("catalan", "none", "standard"),
    "cs": ("czech", "none", "standard"), "da": ("danish", "danish", "standard"),
    "nl": ("dutch", "dutch", "standard"), "eo": ("esperanto", "none", "standard"),
    "et": ("estonian", "none", "standard"), "fi": ("finnish", "none", "standard"),
    "fr": ("french", "french", "standard"), "de": ("german", "german", "standard"),
    "el": ("greek", "none", "standard"), "hi": ("hindi", "none", "standard"),
    "hu": ("hungarian", "none", "standard"), "id": ("indonesian", "none", "standard"),
    "ga": ("irish", "none", "standard"), "it": ("italian", "italian", "standard"),
    "lt": ("lithuanian", "none", "standard"), "ne": ("nepali", "none", "standard"),
    "no": ("norwegian", "norwegian", "standard"), "nb": ("norwegian", "norwegian", "standard"),
    "nn": ("norwegian", "norwegian", "standard"), "fa": ("persian", "none", "standard"),
    "pl": ("polish", "none", "standard"), "pt": ("portuguese", "portuguese", "standard"),
    "ro": ("romanian", "none", "standard"), "ru": ("russian", "russian", "standard"),
    "sr": ("serbian", "none", "standard"), "st": ("sesotho", "none", "standard"),
    "es": ("spanish", "spanish", "standard"), "sv": ("swedish", "swedish", "standard"),
    "ta": ("tamil", "none", "standard"), "tr": ("turkish", "turkish", "standard"),
    "yi": ("yiddish", "none", "standard"),
    "zh": (None, "none", "bigram"), "ja": (None, "none", "bigram"),
    "ko": (None, "none", "bigram"), "th": (None, "none", "bigram"),
    "lo": (None, "none", "bigram"), "km": (None, "none", "bigram"),
    "my": (None, "none", "bigram"),
}  # fmt: skip


# Stopword lists by name: Lucene's English 33 (the English default), bm25s's lists
# (``english`` is its 179-word list), and none. ``index_build bm25 --stopwords`` offers these.
STOPWORD_LISTS = (
    "lucene", "english", "none", "chinese", "danish", "dutch", "french", "german", "italian",
    "korean", "norwegian", "portuguese", "russian", "spanish", "swedish", "turkish",
)  # fmt: skip


def _stopword_list(name_or_words: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The words of a list named in ``STOPWORD_LISTS``, or the given words themselves.

    >>> len(_stopword_list("lucene")), len(_stopword_list("english")), _stopword_list("none")
    (33, 179, ())
    """
    if not isinstance(name_or_words, str):
        return tuple(name_or_words)
    if name_or_words not in STOPWORD_LISTS:
        raise ValueError(
            f"unknown stopword list {name_or_words!r}: use one of {', '.join(STOPWORD_LISTS)}, "
            "or a list of words (@FILE on the command line)"
        )
    if name_or_words == "lucene":
        return LUCENE_STOPWORDS
    if name_or_words == "none":
        return ()
    import bm25s.stopwords as lists

    name = "EN_PLUS" if name_or_words == "english" else name_or_words.upper()
    return tuple(getattr(lists, f"STOPWORDS_{name}"))


def _bigrams(run: str) -> list[str]:
    """Overlapping character pairs of a run (the character itself when it stands alone)."""
    return [run] if len(run) < 2 else [run[i : i + 2] for i in range(len(run) - 1)]


def _jieba_words(run: str) -> list[str]:
    """Chinese words of a run of ideographs (jieba, precise mode, loaded once per process)."""
    try:
        import jieba
    except ImportError as exc:
        raise ImportError(
            "the jieba segmenter needs jieba: pip install -c constraints.txt '.[lang]' "
            "(or build with --segmenter bigram)"
        ) from exc
    jieba.setLogLevel(logging.WARNING)
    return [w for w in jieba.lcut(run, HMM=True) if w.strip()]


@dataclass(frozen=True)
class Analyzer:
    """Lowercase, tokenize, drop stopwords, stem. ``to_dict``/``from_dict`` round-trip it."""

    lowercase: bool = True
    stemmer: str | None = "porter"
    stopwords: tuple[str, ...] = LUCENE_STOPWORDS
    pattern: str = STANDARD_PATTERN
    possessive: bool = True
    segmenter: str = "standard"  # standard | bigram | jieba: how runs of CJK/Thai text split
    language: str | None = None  # informational: the language the settings were chosen for
    # The Chinese script the corpus was converted to (``corpus --chinese-script``): ``terms``
    # converts text to it first, so a query in the other script finds the same passages. The
    # builder reads the already converted passages with ``words`` and does not convert again.
    script: str | None = None

    def __post_init__(self):
        if self.segmenter not in SEGMENTERS:
            raise ValueError(
                f"unknown segmenter {self.segmenter!r}: use one of {', '.join(SEGMENTERS)}"
            )
        if self.stemmer == "none":
            object.__setattr__(self, "stemmer", None)
        if self.stemmer is not None and self.stemmer not in STEMMERS:
            raise ValueError(f"unknown stemmer {self.stemmer!r}: use one of {', '.join(STEMMERS)}")
        object.__setattr__(self, "stopwords", tuple(self.stopwords))
        if self.script is not None:
            check_script(self.script)

    @classmethod
    def create(
        cls, stemmer: str | None = "porter", stopwords="lucene", lowercase: bool = True
    ) -> Analyzer:
        """Build from CLI-style names (``stopwords``: lucene, english, none, or a list of words)."""
        return cls(lowercase=lowercase, stemmer=stemmer, stopwords=_stopword_list(stopwords))

    @classmethod
    def for_language(
        cls,
        language: str | None,
        stemmer: str | None = None,
        stopwords=None,
        segmenter: str | None = None,
        **kw,
    ) -> Analyzer:
        """The analyzer of a language code (``de``, ``zh``, ``pt-br``); English's for ``en`` or
        None; no stemmer and no stopwords for a language without a Snowball stemmer.
        ``stemmer``/``stopwords``/``segmenter`` given here override the language's own."""
        code = (language or "en").lower().replace("_", "-")
        stem, stop, seg = LANGUAGES.get(code, LANGUAGES.get(code.split("-")[0], (None, "none", "")))
        if not seg:  # unknown language: plain words, CJK runs as bigrams, nothing removed
            seg = "bigram"
        seg = segmenter or seg
        if code.split("-")[0] == "en" and seg == "standard":
            return cls.create(stemmer or stem, stopwords or stop, **kw)
        return cls(
            stemmer=stemmer if stemmer is not None else stem,
            stopwords=_stopword_list(stopwords if stopwords is not None else stop),
            pattern=STANDARD_PATTERN if seg == "standard" else RUNS_PATTERN,
            possessive=False,
            segmenter=seg,
            language=code,
            **kw,
        )

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
                segmenter=d.get("segmenter", "standard"),
                language=d.get("language"),
                script=d.get("script"),
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
        found = self._regex.findall(text.lower() if self.lowercase else text)
        if self.segmenter == "standard":
            return found
        out: list[str] = []
        for w in found:
            if not _RUN.match(w):
                out.append(w)
            elif self.segmenter == "bigram":
                out.extend(_bigrams(w))
            else:  # jieba for ideographs, bigrams for kana, hangul and Thai between them
                last = 0
                for m in _HAN.finditer(w):
                    if m.start() > last:
                        out.extend(_bigrams(w[last : m.start()]))
                    out.extend(_jieba_words(m.group()))
                    last = m.end()
                if last < len(w):
                    out.extend(_bigrams(w[last:]))
        return out

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
        """The index terms of ``text`` (a query: converted to ``script`` first), in order,
        duplicates kept."""
        if self.script is not None:
            text = script_converter(self.script)(text)
        return [t for t in self.word_terms(self.words(text)) if t is not None]

    def terms_many(self, texts) -> list[list[str]]:
        return [self.terms(t) for t in texts]
