"""Observation text: search results and page chunks in each style, cut to a budget.

Budgets are in characters, or in tokens of a tokenizer (any object with ``encode`` and
``decode``, e.g. a ``transformers`` tokenizer). Search results share the budget equally, so
every document keeps its head.

>>> docs = [{"title": "Paris", "contents": '"Paris"\\nCapital of France.', "url": "u1"}]
>>> print(format_search(docs, "asearcher", Budget()))
<BLANKLINE>
<BLANKLINE>
<information>
[Doc 1](u1):
"Paris"
Capital of France.
</information>
<BLANKLINE>
<BLANKLINE>
>>> format_search(docs, "search-r1", Budget()).strip()
'<information>Doc 1(Title: "Paris") Capital of France.\\n</information>'
>>> Budget(max_chars=5).cut("abcdefgh")
'abcde…'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ELLIPSIS = "…"
NO_RESULTS = "No search results are found."


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:
        return list(tokenizer.encode(text))


@dataclass(frozen=True)
class Budget:
    """At most ``max_chars`` characters and ``max_tokens`` tokens (None: no limit)."""

    max_chars: int | None = None
    max_tokens: int | None = None
    tokenizer: Any = None

    def share(self, parts: int) -> Budget:
        """The budget of one of ``parts`` equal shares."""
        parts = max(parts, 1)
        return Budget(
            None if self.max_chars is None else max(self.max_chars // parts, 1),
            None if self.max_tokens is None else max(self.max_tokens // parts, 1),
            self.tokenizer,
        )

    def cut(self, text: str) -> str:
        """``text`` cut to the budget; a cut text ends with an ellipsis."""
        cut = False
        if self.max_chars is not None and len(text) > self.max_chars:
            text, cut = text[: self.max_chars], True
        if self.max_tokens is not None and self.tokenizer is not None:
            # a token is at least one character: only texts longer than the budget can be over it
            if len(text) > self.max_tokens:
                ids = _encode(self.tokenizer, text)
                if len(ids) > self.max_tokens:
                    text, cut = self.tokenizer.decode(ids[: self.max_tokens]), True
        return text + ELLIPSIS if cut else text


def size_of(text: str, tokenizer: Any = None) -> int:
    """Length in tokens when a tokenizer is given, else in characters."""
    return len(text) if tokenizer is None else len(_encode(tokenizer, text))


def _split_contents(doc: dict) -> tuple[str, str]:
    """(title line, text) of a doc; Search-R1 takes the first line of ``contents`` as the title."""
    contents = doc.get("contents")
    if contents is None:
        return f'"{doc.get("title", "")}"', doc.get("text", "")
    head, _, rest = contents.partition("\n")
    return head, rest


def wrap(body: str, style: str) -> str:
    """Wrap an observation body as the style delivers tool output."""
    if style == "tool-call":
        return f"\n<tool_response>\n{body}\n</tool_response>\n"
    if style == "search-r1":
        return f"\n\n<information>{body}</information>\n\n"
    return f"\n\n<information>\n{body}\n</information>\n\n"


def unwrap(observation: str, style: str) -> str:
    """The body of an observation (what a chat ``tool`` message carries)."""
    text = observation.strip()
    for head, tail in (
        ("<tool_response>", "</tool_response>"),
        ("<information>", "</information>"),
    ):
        if text.startswith(head) and text.endswith(tail):
            return text[len(head) : -len(tail)].strip("\n")
    return text


def format_search_body(docs: list[dict], style: str, budget: Budget) -> str:
    if not docs:
        return NO_RESULTS
    each = budget.share(len(docs))
    if style == "search-r1":
        lines = []
        for k, doc in enumerate(docs, 1):
            title, text = _split_contents(doc)
            lines.append(f"Doc {k}(Title: {title}) {each.cut(text)}\n")
        return "".join(lines)
    entries = []
    for k, doc in enumerate(docs, 1):
        contents = doc.get("contents") or f'"{doc.get("title", "")}"\n{doc.get("text", "")}'
        entries.append(f"[Doc {k}]({doc.get('url', '')}):\n{each.cut(contents)}")
    return "\n\n".join(entries)


def format_search(docs: list[dict], style: str, budget: Budget) -> str:
    """The observation of one search: ``[Doc k](url):`` entries (asearcher, tool-call) or
    ``Doc k(Title: t) text`` lines (search-r1), inside the style's wrapper."""
    return wrap(format_search_body(docs, style, budget), style)


def num_chunks(total_chars: int, page_chars: int) -> int:
    """How many chunks of ``page_chars`` a page of ``total_chars`` has (at least one)."""
    return max(1, math.ceil(total_chars / page_chars))


def format_page(page: dict, k: int, n: int, style: str, budget: Budget) -> str:
    """One chunk of a page: ``>>>> Page k of N >>>>`` header, text, and how to read on."""
    header = f">>>> Page {k} of {n} >>>> {page.get('title', '')} ({page.get('url', '')})"
    body = f"{header}\n\n{budget.cut(page.get('contents', ''))}"
    if k < n:
        body += f"\n\n(page {k} of {n}; access the same URL again to read page {k + 1})"
    return wrap(body, style)


def format_tool_error(error: str, style: str) -> str:
    """The observation of a well-formed call that failed (unknown page, refused query)."""
    return wrap(f"Error: {error}", style)


def format_error(error: str, style: str) -> str:
    """The observation of a malformed action: what was wrong and how to go on."""
    if style == "tool-call":
        return wrap(f"Error: {error}", style)
    return f"\nMy previous action is invalid: {error}. Let me try again.\n"
