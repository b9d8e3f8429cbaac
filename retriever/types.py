"""Plain value types shared by the store, the retrievers, the server and the env."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrievable unit: a window of an article (or a whole short paragraph)."""

    row: int
    id: str
    title: str
    text: str
    url: str

    @property
    def contents(self) -> str:
        """Search-R1 / FlashRAG convention: the quoted title, a newline, the text."""
        return f'"{self.title}"\n{self.text}'

    def to_dict(self) -> dict:
        """The document dict of the wire (``/retrieve``, the clients, the CLIs): the one place
        a passage becomes a dict."""
        return {
            "id": self.id,
            "contents": self.contents,
            "title": self.title,
            "text": self.text,
            "url": self.url,
        }


@dataclass(frozen=True, slots=True)
class Page:
    """A full article, for the access tool."""

    id: str
    title: str
    url: str
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the passage row in the corpus store and its score (higher is better)."""

    row: int
    score: float


class ScoredPassage(NamedTuple):
    """A search result as users see it: the passage and its score. A tuple, so ``for passage,
    score in hits`` works; ``to_dict()`` is the scored document of the wire.

    >>> ScoredPassage(Passage(0, "7", "T", "x", "u"), 1.5).to_dict()["score"]
    1.5
    """

    passage: Passage
    score: float

    def to_dict(self) -> dict:
        """``{"id", "contents", "title", "text", "url", "score"}``."""
        out = self.passage.to_dict()
        out["score"] = float(self.score)
        return out
