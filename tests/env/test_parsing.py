"""Action parsing, table-driven over the three tool syntaxes."""

from __future__ import annotations

import random
import re
import time

import pytest

from env.parsing import MAX_QUERY_CHARS, MAX_TURN_CHARS, strip_thinking
from env.styles import parse_action

OK = [
    # (style, text, kind, arg, page)
    ("asearcher", "<search>Eiffel Tower</search>", "search", "Eiffel Tower", None),
    (
        "asearcher",
        "<think>I should look <search>x</search></think><search> y </search>",
        "search",
        "y",
        None,
    ),
    ("asearcher", "reasoning...</think>\n<answer> Paris </answer>", "answer", "Paris", None),
    (
        "asearcher",
        "<access>https://en.wikipedia.org/wiki/Paris</access>",
        "access",
        "https://en.wikipedia.org/wiki/Paris",
        None,
    ),
    (
        "asearcher",
        "<access>https://en.wikipedia.org/wiki/Paris#page=3</access>",
        "access",
        "https://en.wikipedia.org/wiki/Paris",
        3,
    ),
    ("asearcher", "<access>Paris | page 2</access>", "access", "Paris", 2),
    ("asearcher", "<access>Paris page 4</access>", "access", "Paris", 4),
    ("asearcher", "<access>AC/DC (band)</access>", "access", "AC/DC (band)", None),
    (
        "asearcher",
        "<answer>a\nmulti-line answer</answer> trailing words",
        "answer",
        "a\nmulti-line answer",
        None,
    ),
    (
        "search-r1",
        "<think>x</think>\n<search> who wrote hamlet </search>",
        "search",
        "who wrote hamlet",
        None,
    ),
    ("search-r1", "<answer> William Shakespeare </answer>", "answer", "William Shakespeare", None),
    (
        "tool-call",
        '<tool_call>\n{"name": "search", "arguments": {"query": "hamlet"}}\n</tool_call>',
        "search",
        "hamlet",
        None,
    ),
    (
        "tool-call",
        '<tool_call>{"name": "search", "arguments": "{\\"query\\": \\"q\\"}"}</tool_call>',
        "search",
        "q",
        None,
    ),
    (
        "tool-call",
        '<tool_call>{"name": "access", "arguments": {"url": "Paris", "page": 2}}</tool_call>',
        "access",
        "Paris",
        2,
    ),
    (
        "tool-call",
        '<tool_call>{"name": "access", "arguments": {"url": "Paris"}}</tool_call>',
        "access",
        "Paris",
        None,
    ),
    (
        "tool-call",
        '<tool_call>{"name": "answer", "arguments": {"answer": "42"}}</tool_call>',
        "answer",
        "42",
        None,
    ),
    ("tool-call", "<think>done</think><answer>42</answer>", "answer", "42", None),
    (
        "tool-call",
        '<tool_call>{"name": "search", "parameters": {"query": "p"}}</tool_call>',
        "search",
        "p",
        None,
    ),
]

BAD = [
    # (style, text, reason)
    ("asearcher", "I think the answer is Paris.", "no_tool"),
    ("asearcher", "", "no_tool"),
    ("asearcher", "<search>a</search><search>b</search>", "two_tools"),
    ("asearcher", "<search>a</search><answer>b</answer>", "two_tools"),
    ("asearcher", "<search>never closed", "unclosed_tag"),
    ("asearcher", "<answer>x", "unclosed_tag"),
    ("asearcher", "x</search>", "stray_close"),
    ("asearcher", "<search>a<answer>b</answer></search>", "nested_tags"),
    ("asearcher", "<search>   </search>", "empty_query"),
    ("asearcher", "<answer></answer>", "empty_answer"),
    ("asearcher", "<access> </access>", "empty_url"),
    ("asearcher", "<access>Paris#page=0</access>", "bad_page"),
    ("asearcher", "<search>" + "x" * (MAX_QUERY_CHARS + 1) + "</search>", "long_query"),
    ("asearcher", "<access>" + "u" * 2001 + "</access>", "long_url"),
    ("asearcher", "<access>Paris#page=999999999999999999999</access>", "bad_page"),
    ("asearcher", "<access>Paris#page=" + "9" * 50 + "</access>", "bad_page"),
    ("asearcher", "<access>Paris#page=" + "9" * 5000 + "</access>", "long_url"),
    ("asearcher", "<access>Paris | page 100001</access>", "bad_page"),
    (
        "tool-call",
        '<tool_call>{"name": "access", "arguments": {"url": "P", "page": 100001}}</tool_call>',
        "bad_page",
    ),
    ("search-r1", "<access>Paris</access>", "unknown_tool"),
    ("search-r1", "<search>q", "unclosed_tag"),
    ("tool-call", "<search>q</search>", "unknown_tool"),
    ("tool-call", "<tool_call>{not json}</tool_call>", "bad_json"),
    ("tool-call", '<tool_call>{"arguments": {}}</tool_call>', "bad_call"),
    ("tool-call", '<tool_call>["search"]</tool_call>', "bad_call"),
    ("tool-call", '<tool_call>{"name": "browse", "arguments": {}}</tool_call>', "unknown_tool"),
    (
        "tool-call",
        '<tool_call>{"name": "search", "arguments": {"query": ""}}</tool_call>',
        "empty_query",
    ),
    (
        "tool-call",
        '<tool_call>{"name": "search", "arguments": {"query": 5}}</tool_call>',
        "bad_arguments",
    ),
    ("tool-call", '<tool_call>{"name": "search", "arguments": [1]}</tool_call>', "bad_arguments"),
    (
        "tool-call",
        '<tool_call>{"name": "search", "arguments": "nope"}</tool_call>',
        "bad_arguments",
    ),
    (
        "tool-call",
        '<tool_call>{"name": "access", "arguments": {"url": "P", "page": -1}}</tool_call>',
        "bad_page",
    ),
    (
        "tool-call",
        '<tool_call>{"name": "access", "arguments": {"url": "P", "page": true}}</tool_call>',
        "bad_page",
    ),
    ("tool-call", '<tool_call>{"name": "search", "arguments": {"query": "q"}}', "unclosed_tag"),
    (
        "tool-call",
        '<tool_call>{"name":"search","arguments":{"query":"a"}}</tool_call><tool_call>{"name":"search","arguments":{"query":"b"}}</tool_call>',
        "two_tools",
    ),
    ("tool-call", "plain text", "no_tool"),
    ("tool-call", "<tool_call>" + "[" * 100000 + "</tool_call>", "bad_json"),
]


@pytest.mark.parametrize("style,text,kind,arg,page", OK)
def test_valid(style, text, kind, arg, page):
    action = parse_action(text, style)
    assert (action.kind, action.arg, action.page, action.error) == (kind, arg, page, None)


@pytest.mark.parametrize("style,text,reason", BAD)
def test_invalid(style, text, reason):
    action = parse_action(text, style)
    assert action.kind == "invalid" and action.reason == reason
    assert action.error and len(action.error) < 400


@pytest.mark.parametrize("value", [None, 5, b"<search>x</search>", ["<search>x</search>"]])
def test_non_text(value):
    assert parse_action(value, "asearcher").reason == "not_text"


def test_unknown_style_is_a_caller_error():
    with pytest.raises(ValueError):
        parse_action("<search>x</search>", "react")


def test_error_messages_say_what_to_do():
    assert "<search>query</search>" in parse_action("hello", "search-r1").error
    assert "<access>url</access>" in parse_action("hello", "asearcher").error
    assert "tool_call" in parse_action("hello", "tool-call").error
    assert "</search>" in parse_action("<search>x", "asearcher").error


# ---- cost: linear in the turn, bounded by MAX_TURN_CHARS ---------------------------------------

_OLD_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)  # the reference semantics


def _elapsed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.parametrize("style", ["asearcher", "search-r1", "tool-call"])
def test_unclosed_think_tags_parse_in_linear_time(style):
    # 30,000 unclosed <think> (210 KB) took the regex 23-25 s; four times that is 16x more
    # for a quadratic parser, 4x for a linear one
    for n in (30_000, 120_000):
        text = "<think>" * n + "<search>q</search>"
        assert len(text) <= MAX_TURN_CHARS
        assert _elapsed(parse_action, text, style) < 2.0
        action = parse_action(text, style)
        assert action.kind == ("invalid" if style == "tool-call" else "search")
    for body in ("<answer>" * 100_000, "<tool_call>" * 70_000, "<answer>" + "x" * 800_000):
        assert _elapsed(parse_action, body, style) < 2.0


def test_a_turn_over_the_limit_is_refused_with_its_length():
    text = "<answer>x</answer>" + " " * MAX_TURN_CHARS
    action = parse_action(text, "asearcher")
    assert action.kind == "invalid" and action.reason == "long_turn"
    assert f"{len(text):,}" in action.error and f"{MAX_TURN_CHARS:,}" in action.error
    assert _elapsed(parse_action, "<think>" * (MAX_TURN_CHARS // 7 + 1), "asearcher") < 2.0
    # at the limit it is still parsed
    assert parse_action("<answer>x</answer>".ljust(MAX_TURN_CHARS), "asearcher").arg == "x"


def test_strip_thinking_matches_the_regex_it_replaces():
    rng = random.Random(7)
    pieces = ["<think>", "</think>", "a", " ", "<search>", "</search>", "<th", "ink>"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        expected = _OLD_THINK_BLOCK.sub("", text)
        if "</think>" in expected:
            expected = expected.rsplit("</think>", 1)[1]
        assert strip_thinking(text) == expected, text
