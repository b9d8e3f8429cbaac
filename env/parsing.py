"""The parts every style (``env.styles``) builds its parser from: the tag scanner, argument
checks, tool-call JSON and the per-turn format rule. ``env.styles.parse_action`` puts them
together for one turn; this module imports no style (it sits below them).

Malformed turns never raise: they come back as ``Action(kind="invalid", error=..., reason=...)``
with a message the policy can act on. Reasoning inside ``<think>...</think>`` is ignored.

Cost: every pass over a turn is linear in its length (``find_blocks`` instead of lazy ``.*?``
regexes, which rescan the rest of the turn from every unclosed tag: 30,000 unclosed ``<think>``
took 25 s), and ``parse_action`` refuses a turn longer than ``MAX_TURN_CHARS`` unparsed
(``long_turn``); it still counts against the episode's context budget like any turn.

>>> tag_calls(strip_thinking("<think>find it</think><search> Eiffel Tower </search>"), "")
[('search', ' Eiffel Tower ')]
>>> make_action("access", "https://en.wikipedia.org/wiki/Paris#page=2").page
2
>>> parse_tool_call('{"name": "search", "arguments": {"query": "x"}}').arg
'x'
>>> tag_calls("<search>q", "").reason
'unclosed_tag'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import browse_actions
from .types import ACCESS, ANSWER, BROWSE_KINDS, INVALID, SEARCH, VISIT, Action

MAX_QUERY_CHARS = 2000
MAX_URL_CHARS = 2000  # longer than any URL or title; checked before the page-suffix regex
# a page number beyond any page (4,000-character chunks: 400M characters) is a mistake, and
# an unbounded one overflows the 64-bit offset a server takes
MAX_PAGE = 100_000
# longer than any generation budget in use (about 250k tokens): a turn over it is refused
MAX_TURN_CHARS = 1_000_000
_TAG = re.compile(r"<(/?)(search|access|answer|tool_call)>")
# with the browser tools enabled (EnvConfig.tools), their tags are calls too
_BROWSE_TAG = re.compile(r"<(/?)(search|access|answer|tool_call|open|find|sections|visit)>")
BROWSER_PREFIX = "browser."  # gpt-oss's tool namespace: browser.search, browser.open, ...
_PAGE_SUFFIX = re.compile(
    r"^(.*?)\s*(?:#page=(\d+)|\|\s*page\s*(\d+)|\s+page\s+(\d+))\s*$", re.I | re.S
)


def invalid(reason: str, error: str) -> Action:
    """An invalid Action with a machine-readable ``reason`` and a message for the policy."""
    return Action(kind=INVALID, error=error, reason=reason)


def find_blocks(text: str, open_tag: str, close_tag: str) -> list[tuple[int, int]]:
    """(start, end) of each ``open_tag...close_tag`` block: the spans that
    ``re.finditer(open_tag + ".*?" + close_tag, re.S)`` finds, in one linear pass (that regex
    rescans the rest of the text from every unclosed ``open_tag``: quadratic).

    >>> find_blocks("a<t>b</t><t>c<t>d</t><t>", "<t>", "</t>")
    [(1, 9), (9, 21)]
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    while (start := text.find(open_tag, pos)) >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:  # no later open_tag has a close_tag either
            break
        pos = end + len(close_tag)
        spans.append((start, pos))
    return spans


def drop_blocks(text: str, open_tag: str, close_tag: str) -> str:
    """``text`` without its ``open_tag...close_tag`` blocks (``re.sub`` of ``find_blocks``).

    >>> drop_blocks("a<t>b</t>c<t>d", "<t>", "</t>")
    'ac<t>d'
    """
    parts, pos = [], 0
    for start, end in find_blocks(text, open_tag, close_tag):
        parts.append(text[pos:start])
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def strip_thinking(text: str) -> str:
    """Drop ``<think>...</think>`` blocks, and everything before a lone ``</think>`` (the prompt
    may open the think block itself).

    >>> strip_thinking("plan</think> <answer>x</answer>")
    ' <answer>x</answer>'
    """
    text = drop_blocks(text, "<think>", "</think>")
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text


def tag_calls(body: str, hint: str, browse: bool = False) -> list[tuple[str, str]] | Action:
    """The complete ``<tag>content</tag>`` calls of a turn, or an invalid Action (``hint``
    tells the policy what it may write); ``browse``: ``<open>``, ``<find>``, ``<sections>``
    and ``<visit>`` are calls too."""
    calls: list[tuple[str, str]] = []
    open_tag: str | None = None
    start = 0
    for m in (_BROWSE_TAG if browse else _TAG).finditer(body):
        closing, tag = m.group(1) == "/", m.group(2)
        if not closing:
            if open_tag is not None:
                return invalid(
                    "nested_tags",
                    f"<{tag}> opened inside <{open_tag}>; close each tag before the next one",
                )
            open_tag, start = tag, m.end()
        else:
            if open_tag != tag:
                return invalid("stray_close", f"</{tag}> has no matching <{tag}>; {hint}")
            calls.append((tag, body[start : m.start()]))
            open_tag = None
    if open_tag is not None:
        return invalid("unclosed_tag", f"<{open_tag}> is not closed; end it with </{open_tag}>")
    return calls


def _page_arg(value: str) -> tuple[str, int | None]:
    m = _PAGE_SUFFIX.match(value)
    if not m:
        return value, None
    number = next(g for g in m.groups()[1:] if g is not None)
    # a number too long to be a page stays out of range (and out of int()'s digit limit)
    return m.group(1).strip(), int(number) if len(number) <= 9 else MAX_PAGE + 1


def clean_text(text: str) -> str:
    """Text as UTF-8 can carry it: lone surrogates (never produced by a tokenizer) become '?'.

    >>> clean_text("a" + chr(0xD800) + "b")
    'a?b'
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class VisitAction(Action):
    """A ``visit(url, goal)`` call: ``arg`` is the URL (or title), ``goal`` what to look for.
    Its arguments are checked by the visitor, so a bad one is a tool error the policy sees."""

    goal: str = ""


def visit_action(url: object, goal: object) -> Action:
    """The action of a visit call; a list of one URL (Tongyi's visit takes a list) is its URL.

    >>> visit_action(["https://en.wikipedia.org/wiki/Paris"], " population ")
    VisitAction(kind='visit', arg='https://en.wikipedia.org/wiki/Paris', page=None, error=None, reason=None, goal='population')
    """
    if isinstance(url, list) and len(url) == 1:
        url = url[0]
    if not isinstance(url, str) or not isinstance(goal, str | None):
        return invalid(
            "bad_arguments",
            f"visit takes a url (a string) and a goal (a string), got {url!r:.60} and {goal!r:.60}",
        )
    return VisitAction(kind=VISIT, arg=clean_text(url).strip(), goal=clean_text(goal or "").strip())


def make_action(kind: str, arg, page=None) -> Action:
    """A checked search, access or answer Action (invalid when its argument is not usable); the
    browser tags go to ``env.browse_actions``; ``<visit>url | goal</visit>`` to ``visit_action``."""
    if kind in BROWSE_KINDS and isinstance(arg, str):
        return browse_actions.from_tag(kind, clean_text(arg))
    if kind == VISIT and isinstance(arg, str):
        url, _, goal = arg.partition("|")
        return visit_action(url, goal)
    if not isinstance(arg, str):
        return invalid(
            "bad_arguments", f"the {kind} argument must be a string, got {type(arg).__name__}"
        )
    arg = clean_text(arg).strip()
    if kind == SEARCH:
        if not arg:
            return invalid("empty_query", "the search query is empty; write what to search for")
        if len(arg) > MAX_QUERY_CHARS:
            return invalid(
                "long_query",
                f"the search query has {len(arg)} characters; keep it under {MAX_QUERY_CHARS}",
            )
        return Action(kind=SEARCH, arg=arg)
    if kind == ACCESS:
        if len(arg) > MAX_URL_CHARS:
            return invalid(
                "long_url",
                f"the access URL has {len(arg)} characters; use a URL or title from the search "
                f"results (at most {MAX_URL_CHARS})",
            )
        if page is None:
            arg, page = _page_arg(arg)
        if not arg:
            return invalid(
                "empty_url", "the access URL is empty; use a URL from the search results"
            )
        if page is not None and not _good_page(page):
            return _bad_page(page)
        return Action(kind=ACCESS, arg=arg, page=page)
    if not arg:
        return invalid(
            "empty_answer", "the answer is empty; put the answer between <answer> and </answer>"
        )
    return Action(kind=ANSWER, arg=arg)


def parse_tool_call(content: str) -> Action:
    """The Action of one ``<tool_call>`` JSON body (``{"name": ..., "arguments": {...}}``)."""
    try:
        call = json.loads(content)
    except (ValueError, RecursionError) as exc:
        return invalid(
            "bad_json",
            f'the tool call is not valid JSON ({exc}); write {{"name": ..., "arguments": {{...}}}}',
        )
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return invalid("bad_call", 'a tool call is a JSON object with "name" and "arguments"')
    name, args = call["name"], call.get("arguments", call.get("parameters", {}))
    name = name.removeprefix(BROWSER_PREFIX)
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            return invalid("bad_arguments", f"the arguments of {name} are not a JSON object")
    return call_action(name, args)


def call_action(name: str, args: object) -> Action:
    """The Action of tool ``name`` (without its namespace) called with JSON ``args``."""
    if not isinstance(args, dict):
        return invalid("bad_arguments", f"the arguments of {name} must be a JSON object")
    if name == SEARCH:
        return make_action(SEARCH, args.get("query", ""))
    if name == ACCESS:
        url = args.get("url", args.get("title", ""))
        page = args.get("page")
        if page is None:
            return make_action(ACCESS, url)
        if not _good_page(page):
            return _bad_page(page)
        return make_action(ACCESS, url, page=page)
    if name == ANSWER:
        return make_action(ANSWER, args.get("answer", ""))
    if name in BROWSE_KINDS:
        return browse_actions.from_args(name, args)
    if name == VISIT:
        return visit_action(args.get("url", args.get("title", "")), args.get("goal", ""))
    return invalid(
        "unknown_tool", f"unknown tool {name!r}; the tools are search, access and answer"
    )


def _good_page(page) -> bool:
    return isinstance(page, int) and not isinstance(page, bool) and 1 <= page <= MAX_PAGE


def _bad_page(page) -> Action:
    shown = repr(page) if len(repr(page)) <= 40 else repr(page)[:40] + "…"
    return invalid("bad_page", f"page must be a whole number from 1 to {MAX_PAGE}, got {shown}")


_TURN_TAGS = ("search", "access", "answer")


def turn_format_ok(text: str) -> bool:
    """ASearcher's per-turn format rule: balanced tags, at most one tool call, one ``</think>``.

    >>> turn_format_ok("<think>x</think><search>q</search>"), turn_format_ok("<search>a</search><search>b</search>")
    (True, False)
    """
    if sum(text.count(f"<{t}>") for t in _TURN_TAGS) > 1:
        return False
    if any(text.count(f"<{t}>") != text.count(f"</{t}>") for t in _TURN_TAGS):
        return False
    return text.count("</think>") <= 1


__all__ = [
    "MAX_PAGE",
    "MAX_QUERY_CHARS",
    "MAX_TURN_CHARS",
    "MAX_URL_CHARS",
    "call_action",
    "clean_text",
    "drop_blocks",
    "find_blocks",
    "invalid",
    "make_action",
    "parse_tool_call",
    "strip_thinking",
    "tag_calls",
    "turn_format_ok",
    "visit_action",
]
