"""Parse one policy turn into one ``Action``, in one of three tool syntaxes.

Malformed turns never raise: they come back as ``Action(kind="invalid", error=..., reason=...)``
with a message the policy can act on. Reasoning inside ``<think>...</think>`` is ignored.

>>> parse_action("<think>find it</think><search> Eiffel Tower </search>", "search-r1")
Action(kind='search', arg='Eiffel Tower', page=None, error=None, reason=None)
>>> parse_action("<access>https://en.wikipedia.org/wiki/Paris#page=2</access>", "asearcher").page
2
>>> parse_action('<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>', "tool-call").arg
'x'
>>> parse_action("<search>q", "asearcher").reason
'unclosed_tag'
"""

from __future__ import annotations

import json
import re

from .types import ACCESS, ANSWER, INVALID, SEARCH, STYLES, Action

MAX_QUERY_CHARS = 2000
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_TAG = re.compile(r"<(/?)(search|access|answer|tool_call)>")
_PAGE_SUFFIX = re.compile(
    r"^(.*?)\s*(?:#page=(\d+)|\|\s*page\s*(\d+)|\s+page\s+(\d+))\s*$", re.I | re.S
)

TOOLS_BY_STYLE = {
    "asearcher": (SEARCH, ACCESS, ANSWER),
    "search-r1": (SEARCH, ANSWER),
    "tool-call": (SEARCH, ACCESS, ANSWER),
}


def _invalid(reason: str, error: str) -> Action:
    return Action(kind=INVALID, error=error, reason=reason)


def strip_thinking(text: str) -> str:
    """Drop ``<think>...</think>`` blocks, and everything before a lone ``</think>`` (the prompt
    may open the think block itself).

    >>> strip_thinking("plan</think> <answer>x</answer>")
    ' <answer>x</answer>'
    """
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text


def _hint(style: str) -> str:
    if style == "tool-call":
        return (
            'call one tool as <tool_call>{"name": "search", "arguments": {"query": "..."}}'
            "</tool_call>, or give the final answer as <answer>...</answer>"
        )
    tools = ["<search>query</search>"]
    if style == "asearcher":
        tools.append("<access>url</access>")
    return f"use one of {', '.join(tools)} or give the final answer as <answer>...</answer>"


def _tag_calls(body: str, allowed: tuple[str, ...], style: str) -> list[tuple[str, str]] | Action:
    """The complete ``<tag>content</tag>`` calls of a turn, or an invalid Action."""
    calls: list[tuple[str, str]] = []
    open_tag: str | None = None
    start = 0
    for m in _TAG.finditer(body):
        closing, tag = m.group(1) == "/", m.group(2)
        if not closing:
            if open_tag is not None:
                return _invalid(
                    "nested_tags",
                    f"<{tag}> opened inside <{open_tag}>; close each tag before the next one",
                )
            open_tag, start = tag, m.end()
        else:
            if open_tag != tag:
                return _invalid("stray_close", f"</{tag}> has no matching <{tag}>; {_hint(style)}")
            calls.append((tag, body[start : m.start()]))
            open_tag = None
    if open_tag is not None:
        return _invalid("unclosed_tag", f"<{open_tag}> is not closed; end it with </{open_tag}>")
    return calls


def _page_arg(value: str) -> tuple[str, int | None]:
    m = _PAGE_SUFFIX.match(value)
    if not m:
        return value, None
    number = next(g for g in m.groups()[1:] if g is not None)
    return m.group(1).strip(), int(number)


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


def _make(kind: str, arg, page=None, style: str = "asearcher") -> Action:
    if not isinstance(arg, str):
        return _invalid(
            "bad_arguments", f"the {kind} argument must be a string, got {type(arg).__name__}"
        )
    arg = clean_text(arg).strip()
    if kind == SEARCH:
        if not arg:
            return _invalid("empty_query", "the search query is empty; write what to search for")
        if len(arg) > MAX_QUERY_CHARS:
            return _invalid(
                "long_query",
                f"the search query has {len(arg)} characters; keep it under {MAX_QUERY_CHARS}",
            )
        return Action(kind=SEARCH, arg=arg)
    if kind == ACCESS:
        if page is None:
            arg, page = _page_arg(arg)
        if not arg:
            return _invalid(
                "empty_url", "the access URL is empty; use a URL from the search results"
            )
        if page is not None and (isinstance(page, bool) or not isinstance(page, int) or page < 1):
            return _invalid("bad_page", f"page must be a whole number >= 1, got {page!r}")
        return Action(kind=ACCESS, arg=arg, page=page)
    if not arg:
        return _invalid(
            "empty_answer", "the answer is empty; put the answer between <answer> and </answer>"
        )
    return Action(kind=ANSWER, arg=arg)


def _parse_tags(body: str, style: str) -> Action:
    allowed = TOOLS_BY_STYLE[style]
    calls = _tag_calls(body, allowed, style)
    if isinstance(calls, Action):
        return calls
    calls = [c for c in calls if c[0] != "tool_call"] if style != "tool-call" else calls
    if not calls:
        return _invalid("no_tool", f"no tool call or answer found; {_hint(style)}")
    if len(calls) > 1:
        names = ", ".join(f"<{t}>" for t, _ in calls)
        return _invalid(
            "two_tools", f"{len(calls)} tool calls in one turn ({names}); make one call per turn"
        )
    tag, content = calls[0]
    if tag not in allowed:
        return _invalid("unknown_tool", f"<{tag}> is not available here; {_hint(style)}")
    return _make(tag, content, style=style)


def _parse_tool_call(content: str) -> Action:
    try:
        call = json.loads(content)
    except (ValueError, RecursionError) as exc:
        return _invalid(
            "bad_json",
            f'the tool call is not valid JSON ({exc}); write {{"name": ..., "arguments": {{...}}}}',
        )
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return _invalid("bad_call", 'a tool call is a JSON object with "name" and "arguments"')
    name, args = call["name"], call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            return _invalid("bad_arguments", f"the arguments of {name} are not a JSON object")
    if not isinstance(args, dict):
        return _invalid("bad_arguments", f"the arguments of {name} must be a JSON object")
    if name == SEARCH:
        return _make(SEARCH, args.get("query", ""))
    if name == ACCESS:
        url = args.get("url", args.get("title", ""))
        page = args.get("page")
        if page is None:
            return _make(ACCESS, url)
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            return _invalid("bad_page", f"page must be a whole number >= 1, got {page!r}")
        return _make(ACCESS, url, page=page)
    if name == ANSWER:
        return _make(ANSWER, args.get("answer", ""))
    return _invalid(
        "unknown_tool", f"unknown tool {name!r}; the tools are search, access and answer"
    )


def parse_action(text: object, style: str = "asearcher") -> Action:
    """The one tool call or final answer of a policy turn (never raises on bad text)."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} is unknown; use one of {', '.join(STYLES)}")
    if not isinstance(text, str):
        return _invalid("not_text", f"the action must be text, got {type(text).__name__}")
    body = strip_thinking(text)
    if style != "tool-call":
        return _parse_tags(body, style)
    calls = _tag_calls(body, TOOLS_BY_STYLE[style], style)
    if isinstance(calls, Action):
        return calls
    if not calls:
        return _invalid("no_tool", f"no tool call or answer found; {_hint(style)}")
    if len(calls) > 1:
        return _invalid("two_tools", f"{len(calls)} tool calls in one turn; make one call per turn")
    tag, content = calls[0]
    if tag == "tool_call":
        return _parse_tool_call(content)
    if tag == ANSWER:
        return _make(ANSWER, content)
    return _invalid("unknown_tool", f"<{tag}> is not a tool-call; {_hint(style)}")


__all__ = [
    "parse_action",
    "strip_thinking",
    "clean_text",
    "MAX_QUERY_CHARS",
    "TOOLS_BY_STYLE",
    "INVALID",
]
