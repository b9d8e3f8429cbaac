"""DPR-style passages: fixed word windows inside one article.

>>> split_words("a b c d e", words=2)
['a b', 'c d', 'e']
>>> split_words("a b c d e", words=3, stride=2)
['a b c', 'c d e']
>>> split_words("   ", words=100)
[]
"""

from __future__ import annotations


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
