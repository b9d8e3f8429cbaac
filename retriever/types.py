"""Plain value types shared by the store, the retrievers, the server and the env."""

from __future__ import annotations

from dataclasses import dataclass


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
        """The wire form used by ``/retrieve`` and ``retriever.search``."""
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
