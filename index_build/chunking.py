"""Passages: DPR-style word windows, or character windows for scripts written without spaces.

"100 words" means nothing in Chinese, Japanese or Thai, where words are not separated. An
article mostly in such a script is cut by characters instead, at sentence ends where possible.
The default size follows the word setting through the characters a word takes in each script
(parallel text: about 2 Chinese or Japanese characters, about 5 Thai letters per English word),
so 100 words give 200-character CJK passages and 500-character Thai ones.

>>> split_words("a b c d e", words=2)
['a b', 'c d', 'e']
>>> split_words("a b c d e", words=3, stride=2)
['a b c', 'c d e']
>>> split_words("   ", words=100)
[]
>>> split_chars("北京是中国的首都。上海是最大的城市。广州在南方。", chars=12)
['北京是中国的首都。', '上海是最大的城市。', '广州在南方。']
>>> script_of("北京是中华人民共和国的首都，位于华北平原。"), script_of("Paris is the capital.")
('cjk', 'latin')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = ("auto", "words", "chars")
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f"
SEA = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"  # Thai, Lao, Myanmar, Khmer
CHARS_PER_WORD = {"cjk": 2.0, "sea": 5.0}
_CJK_RE = re.compile(f"[{CJK}]")
_SEA_RE = re.compile(f"[{SEA}]")
_LETTER = re.compile(r"[^\W\d_]")
_SPACES = re.compile(r"\s+")
# a sentence: up to its end mark (and closing quotes), or a line, or for Thai a space-separated run
_SENTENCE = {
    "cjk": re.compile(r".*?(?:[。！？!?；;…]+[」』）)\"”’]*|\n+|$)", re.S),
    "sea": re.compile(r".*?(?:\s+|$)", re.S),
}
SAMPLE_CHARS = 4000


def script_of(text: str) -> str:
    """``cjk``, ``sea`` (Thai, Lao, Khmer, Myanmar) or ``latin`` (space-separated words): the
    kind of most of the letters in the first few thousand characters."""
    sample = text[:SAMPLE_CHARS]
    letters = len(_LETTER.findall(sample))
    if not letters:
        return "latin"
    cjk = len(_CJK_RE.findall(sample))
    sea = len(_SEA_RE.findall(sample))
    if max(cjk, sea) < 0.3 * letters:
        return "latin"
    return "cjk" if cjk >= sea else "sea"


def split_words(text: str, words: int = 100, stride: int | None = None) -> list[str]:
    """Cut ``text`` into windows of ``words`` whitespace-separated words, ``stride`` apart.

    With overlap (``stride < words``) the last window ends at the last word; no window is
    only a repeat of the previous one's tail.
    """
    if words <= 0:
        raise ValueError(f"words must be positive, got {words}")
    stride = words if stride is None else stride
    if not 0 < stride <= words:
        raise ValueError(f"stride must be in 1..{words}, got {stride}")
    tokens = text.split()
    if len(tokens) <= words:
        return [" ".join(tokens)] if tokens else []
    out = []
    for start in range(0, len(tokens), stride):
        out.append(" ".join(tokens[start : start + words]))
        if start + words >= len(tokens):
            break
    return out


def _cut_long(sentence: str, chars: int) -> list[str]:
    """A sentence longer than ``chars`` in pieces, never inside a word of a spaced script."""
    pieces = []
    while len(sentence) > chars:
        cut = chars
        # back off to a space or a CJK character when the cut would split a Latin word or number
        if sentence[cut - 1].isalnum() and sentence[cut].isalnum():
            for i in range(cut - 1, max(cut - chars // 4, 0), -1):
                if sentence[i].isspace() or _CJK_RE.match(sentence[i]):
                    cut = i + 1
                    break
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:]
    pieces.append(sentence.strip())
    return [p for p in pieces if p]


def split_chars(text: str, chars: int, script: str = "cjk") -> list[str]:
    """Cut ``text`` into windows of at most ``chars`` characters, ending at sentence ends where
    a sentence fits (whitespace runs count as one space)."""
    if chars <= 0:
        raise ValueError(f"chars must be positive, got {chars}")
    out: list[str] = []
    current = ""
    for m in _SENTENCE[script].finditer(text):
        sentence = _SPACES.sub(" ", m.group())
        if not sentence.strip():
            continue
        if len(current) + len(sentence.rstrip()) <= chars:
            current += sentence
            continue
        if current.strip():
            out.append(current.strip())
        current = ""
        if len(sentence.rstrip()) <= chars:
            current = sentence
        else:
            *full, current = _cut_long(sentence, chars) or [""]
            out.extend(full)
    if current.strip():
        out.append(current.strip())
    return out


@dataclass(frozen=True)
class Chunker:
    """How articles become passages; ``unit="auto"`` picks words or characters per article."""

    words: int = 100
    stride: int | None = None
    unit: str = "auto"
    chars: int | None = None  # None: ``words`` x the script's characters per word

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"passage unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.chars is not None and self.chars <= 0:
            raise ValueError(f"passage chars must be positive, got {self.chars}")

    def chars_for(self, script: str) -> int:
        if self.chars is not None:
            return self.chars
        return round(self.words * CHARS_PER_WORD.get(script, CHARS_PER_WORD["cjk"]))

    def split(self, text: str) -> tuple[str, list[str]]:
        """(``words`` or ``chars-cjk``/``chars-sea``, passages) of one article."""
        script = "latin" if self.unit == "words" else script_of(text)
        if self.unit == "chars" and script == "latin":
            script = "cjk"
        if script == "latin":
            return "words", split_words(text, self.words, self.stride)
        return f"chars-{script}", split_chars(text, self.chars_for(script), script)

    def manifest_fields(self) -> dict:
        return {
            "words": self.words,
            "stride": self.stride or self.words,
            "unit": self.unit,
            "chars": {s: self.chars_for(s) for s in CHARS_PER_WORD},
        }
