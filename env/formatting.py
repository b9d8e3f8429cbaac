"""Observation text: search results, page chunks and errors, cut to a budget.

Budgets are in characters, or in tokens of a tokenizer (any object with ``encode`` and
``decode``, e.g. a ``transformers`` tokenizer). A budget covers EVERYTHING the policy is shown:
the wrapper, headers, URLs and error messages as well as passage text (``Budget.fit``). Search
results share what is left after their headers equally, so every document keeps its head.

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
'abcd…'
>>> len(format_search(docs * 9, "asearcher", Budget(max_chars=120)))
120
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .styles import Style, get_style
from .types import PageWindow

ELLIPSIS = "…"
NO_RESULTS = "No search results are found."


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:
        return list(tokenizer.encode(text))


class _TokenPrefix:
    """``prefix(k)``: the text of the first ``k`` tokens. From the tokenizer's character offsets
    when it has them (the original text, as written), else by decoding (which may normalise)."""

    def __init__(self, tokenizer: Any, text: str):
        self.text, self.ends = text, None
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            self.ends = [end for _, end in enc["offset_mapping"]]
            self.count = len(self.ends)
        except Exception:  # not a fast HF tokenizer: ids and decode
            self.tokenizer, self.ids = tokenizer, _encode(tokenizer, text)
            self.count = len(self.ids)

    def __call__(self, k: int) -> str:
        if self.ends is not None:
            return self.text[: self.ends[k - 1]] if k > 0 else ""
        return self.tokenizer.decode(self.ids[:k])


def size_of(text: str, tokenizer: Any = None) -> int:
    """Length in tokens when a tokenizer is given, else in characters."""
    return len(text) if tokenizer is None else len(_encode(tokenizer, text))


@dataclass(frozen=True)
class Budget:
    """At most ``max_chars`` characters and ``max_tokens`` tokens (None: no limit)."""

    max_chars: int | None = None
    max_tokens: int | None = None
    tokenizer: Any = None

    @property
    def _tokens(self) -> bool:
        return self.max_tokens is not None and self.tokenizer is not None

    def share(self, parts: int) -> Budget:
        """The budget of one of ``parts`` equal shares."""
        parts = max(parts, 1)
        return Budget(
            None if self.max_chars is None else max(self.max_chars // parts, 1),
            None if self.max_tokens is None else max(self.max_tokens // parts, 1),
            self.tokenizer,
        )

    def minus(self, text: str) -> Budget:
        """What is left after ``text`` (at least 1 of each limit)."""
        return Budget(
            None if self.max_chars is None else max(self.max_chars - len(text), 1),
            None
            if self.max_tokens is None
            else max(self.max_tokens - size_of(text, self.tokenizer if self._tokens else None), 1),
            self.tokenizer,
        )

    def fits(self, text: str) -> bool:
        if self.max_chars is not None and len(text) > self.max_chars:
            return False
        if self._tokens and len(text) > self.max_tokens:  # a token is at least one character
            return size_of(text, self.tokenizer) <= self.max_tokens
        return True

    def cut(self, text: str) -> str:
        """``text`` cut to the budget; a cut text ends with an ellipsis, counted in the budget."""
        if self.fits(text):
            return text
        if self.max_chars is not None and len(text) > self.max_chars:
            text = text[: max(self.max_chars - len(ELLIPSIS), 0)]
        if self._tokens and len(text) > self.max_tokens - 1:
            prefix = _TokenPrefix(self.tokenizer, text)
            keep = min(prefix.count, self.max_tokens - size_of(ELLIPSIS, self.tokenizer))
            while keep > 0:  # encoding the cut text again may merge tokens: check, then shrink
                cut = prefix(keep)
                if self.fits(cut + ELLIPSIS):
                    text = cut
                    break
                keep -= max(1, keep // 8)
            else:
                text = ""
        return text + ELLIPSIS

    def fit(self, body: str, render: Callable[[str], str]) -> str:
        """``render(body)`` within the budget: the body is cut by what ``render`` adds."""
        inner = self.minus(render(""))
        for _ in range(4):
            text = render(inner.cut(body))
            if self.fits(text):
                return text
            inner = inner.minus(ELLIPSIS * 4)  # token merges at the seams: leave some room
        return self.cut(text)


def format_search_body(docs: list[dict], style: str | Style, budget: Budget) -> str:
    """Search results within ``budget``: headers first, the rest shared by the texts."""
    style = get_style(style)
    if not docs:
        return NO_RESULTS
    entries = [style.search_entry(k, doc) for k, doc in enumerate(docs, 1)]
    fixed = style.search_joiner.join(head + tail for head, _, tail in entries)
    each = budget.minus(fixed).share(len(entries))
    body = style.search_joiner.join(head + each.cut(text) + tail for head, text, tail in entries)
    return budget.cut(body)


def format_search(docs: list[dict], style: str | Style, budget: Budget) -> str:
    """The observation of one search: ``[Doc k](url):`` entries (asearcher, tool-call) or
    ``Doc k(Title: t) text`` lines (search-r1), inside the style's wrapper, within budget."""
    style = get_style(style)
    return budget.fit(format_search_body(docs, style, budget.minus(style.wrap(""))), style.wrap)


def format_page(page: dict, window: PageWindow, n: int, style: str | Style, budget: Budget) -> str:
    """One chunk of a page: ``>>>> Page k of N >>>>`` header, text, and how to read on."""
    style = get_style(style)
    k = window.page
    header = f">>>> Page {k} of {n} >>>> {page.get('title', '')} ({page.get('url', '')})"
    footer = style.page_footer(k, n) if k < n else ""
    head = budget.minus(style.wrap("") + footer).cut(
        header
    )  # a long URL must not crowd out the text

    def render(text: str) -> str:
        return style.wrap(f"{head}\n\n{text}{footer}")

    return budget.fit(str(page.get("contents", "")), render)


def format_tool_error(error: str, style: str | Style, budget: Budget = Budget()) -> str:
    """The observation of a well-formed call that failed (unknown page, refused query)."""
    style = get_style(style)
    return budget.fit(error, lambda text: style.wrap(f"Error: {text}"))


def format_error(error: str, style: str | Style, budget: Budget = Budget()) -> str:
    """The observation of a malformed action: what was wrong and how to go on."""
    return budget.fit(error, get_style(style).invalid_observation)
