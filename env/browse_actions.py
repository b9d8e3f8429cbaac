"""The browser tools' actions: ``open``, ``find`` and ``sections`` parsed from a tag or from a
tool call's JSON arguments, checked the same way in every style.

gpt-oss's browser names the target of ``open`` by ``id``: a link number of an opened view (an
int) or a URL (a string); ``cursor`` says which opened view (default: the last); ``loc`` and
``num_lines`` pick the lines (``-1``: unset). The tag styles write the same as text:

>>> from_tag("open", " 3 ")
BrowseAction(kind='open', arg='', page=None, error=None, reason=None, link=3, cursor=None, loc=None, num_lines=None, regex=False)
>>> from_tag("open", "https://en.wikipedia.org/wiki/Paris | L120").loc
120
>>> from_tag("open", "L40").loc, from_tag("open", "L40").arg
(40, '')
>>> from_args("open", {"id": "Paris", "loc": -1}).arg
'Paris'
>>> from_args("open", {"id": "1984"}).arg, from_args("open", {"id": 1984}).link  # as gpt-oss
('1984', 1984)
>>> from_args("find", {"pattern": ""}).reason
'empty_pattern'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .types import FIND, INVALID, OPEN, SECTIONS, Action

MAX_ID_CHARS = 2000  # a URL or title; longer is a mistake
MAX_PATTERN_CHARS = 200  # as the store's find
MAX_LOC = 10_000_000
MAX_NUM_LINES = 500  # as the store's view
_LOC = re.compile(r"^\s*L?(\d{1,9})\s*$", re.I)


@dataclass(frozen=True, slots=True)
class BrowseAction(Action):
    """An ``open``/``find``/``sections`` call. ``arg`` is the URL or title (open, sections) or
    the pattern (find); ``link`` a link number of the view at ``cursor`` (None: the last)."""

    link: int | None = None
    cursor: int | None = None
    loc: int | None = None
    num_lines: int | None = None
    regex: bool = False


def _invalid(reason: str, error: str) -> Action:
    return Action(kind=INVALID, error=error, reason=reason)


def _whole(value, name: str, low: int, high: int) -> int | None | Action:
    """``value`` as a checked int; None when unset (None or gpt-oss's -1)."""
    if value is None or (value == -1 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = repr(value)[:40]
        return _invalid(
            "bad_arguments", f"{name} must be a whole number from {low} to {high}, got {shown}"
        )
    return value


def _target(value, digits_link: bool = False) -> tuple[str, int | None] | Action:
    """(URL or title, link number) of an ``id``: an int is a link number, a string a page (in
    a tag, where everything is text, a number is a link number: ``digits_link``)."""
    if value is None or value == "":
        return "", None
    if isinstance(value, int) and not isinstance(value, bool):
        checked = _whole(value, "id", 0, MAX_LOC)
        return checked if isinstance(checked, Action) else ("", checked)
    if not isinstance(value, str):
        return _invalid("bad_arguments", f"id must be a link number or a URL, got {value!r:.40}")
    value = value.strip()
    if len(value) > MAX_ID_CHARS:
        return _invalid(
            "long_url",
            f"the id has {len(value)} characters; use a link number or a URL from a view",
        )
    return ("", int(value[:9])) if digits_link and value.isdigit() else (value, None)


def from_args(name: str, args: dict, digits_link: bool = False) -> Action:
    """The action of a tool call ``name`` (open, find, sections) with JSON ``args``."""
    checked: dict[str, object] = {}
    for key, low, high in (
        ("cursor", 0, MAX_LOC),
        ("loc", 0, MAX_LOC),
        ("num_lines", 1, MAX_NUM_LINES),
    ):
        value = _whole(args.get(key), key, low, high)
        if isinstance(value, Action):
            return value
        checked[key] = value
    if name == FIND:
        pattern = args.get("pattern")
        regex = args.get("regex", False)
        if not isinstance(regex, bool):
            return _invalid("bad_arguments", f"regex must be true or false, got {regex!r:.40}")
        if not isinstance(pattern, str) or not pattern.strip():
            return _invalid("empty_pattern", "find needs a non-empty pattern: the text to look for")
        if len(pattern) > MAX_PATTERN_CHARS:
            return _invalid(
                "long_pattern",
                f"the find pattern has {len(pattern)} characters; keep it under {MAX_PATTERN_CHARS}",
            )
        return BrowseAction(FIND, pattern, cursor=checked["cursor"], regex=regex)
    target = _target(args.get("id", args.get("url")), digits_link)
    if isinstance(target, Action):
        return target
    arg, link = target
    if name == SECTIONS:
        return BrowseAction(SECTIONS, arg, link=link, cursor=checked["cursor"])
    return BrowseAction(OPEN, arg, link=link, **checked)


def from_tag(tag: str, content: str) -> Action:
    """The action of ``<open>``, ``<find>`` or ``<sections>``: ``<open>ID | LOC</open>`` (ID a
    result or link number, a URL or a title; ``LOC`` a line, ``L`` optional), ``<open>L40</open>``
    (the current page from line 40), ``<find>text</find>``, ``<sections>ID</sections>`` (ID
    optional: the current page)."""
    content = content.strip()
    if tag == FIND:
        return from_args(FIND, {"pattern": content})
    loc = None
    head, bar, tail = content.rpartition("|")
    if bar:
        m = _LOC.match(tail)
        if m is None:
            return _invalid(
                "bad_arguments",
                f"the line after | must be a number such as L40, got {tail.strip()!r:.40}",
            )
        content, loc = head.strip(), int(m.group(1))
    elif tag == OPEN and content[:1] in "lL" and _LOC.match(content):
        content, loc = "", int(_LOC.match(content).group(1))
    if tag == SECTIONS:
        return from_args(SECTIONS, {"id": content}, digits_link=True)
    return from_args(OPEN, {"id": content, "loc": loc}, digits_link=True)
