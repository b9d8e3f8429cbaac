"""Garbage and adversarial actions never crash the env (or the parser), in every style."""

from __future__ import annotations

import json
import math
import random

import pytest
from env_support import hotpot_client, hotpot_tasks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from env.batched import BatchedSearchEnv
from env.parsing import parse_action
from env.search_env import SearchEnv
from env.types import STYLES

ADVERSARIAL = [
    "",
    " ",
    "\x00\x01\x02",
    "<search>\x00</search>",
    "<search>!!!???</search>",
    "<search>\ud800 lone surrogate</search>",
    "<answer>\ud800</answer>",
    "<search>" + "word " * 390 + "</search>",
    "<search>" + "x" * 5000 + "</search>",
    "<" * 10000,
    "<search>" * 1000,
    "</search>" * 1000,
    "<search><search>q</search></search>",
    "<access>http://[::1</access>",
    "<access>https://en.wikipedia.org/wiki/%ZZ%</access>",
    "<access>/w/index.php?curid=12</access>",
    "<access>id:123</access>",
    "<access>Paris#page=99999999999999999999</access>",
    "<access>../../../etc/passwd</access>",
    "<think><search>hidden</search>",
    "</think></think></think><search>q</search>",
    "<tool_call>" + "{" * 5000 + "</tool_call>",
    '<tool_call>{"name": "search", "arguments": {"query": "' + "\\ud800" + '"}}</tool_call>',
    '<tool_call>{"name": "access", "arguments": {"url": "University of Kansas", "page": 1e309}}</tool_call>',
    '<tool_call>{"name": "access", "arguments": {"url": {"nested": 1}}}</tool_call>',
    '<tool_call>{"name": null}</tool_call>',
    "<tool_call></tool_call>",
    "<tool_call>NaN</tool_call>",
    "<answer>" + "y" * 100000 + "</answer>",
    "\n".join(["<search>a</search>"] * 50),
    "<SEARCH>upper</SEARCH>",
    "<search >spaced</search >",
]

VALID_ISH = [
    "<search>University of Kansas</search>",
    "<access>University of Kansas</access>",
    '<tool_call>{"name": "search", "arguments": {"query": "Kansas Song"}}</tool_call>',
    '<tool_call>{"name": "access", "arguments": {"url": "Kansas Song"}}</tool_call>',
]


@pytest.fixture(scope="module")
def client(hotpot_root):
    c = hotpot_client(hotpot_root)
    yield c
    c.close()


def check_step(out):
    obs, reward, terminated, truncated, info = out
    assert isinstance(obs, str) and isinstance(info, dict)
    assert isinstance(reward, float) and math.isfinite(reward)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    return terminated or truncated


@pytest.mark.parametrize("style", STYLES)
def test_adversarial_actions(client, style, tmp_path):
    env = SearchEnv(
        client,
        style=style,
        max_turns=len(ADVERSARIAL) + 5,
        record_path=str(tmp_path / "t.jsonl"),
        format_penalty=0.05,
    )
    task = hotpot_tasks(1)[0]
    env.reset(options=task.options())
    for text in ADVERSARIAL:
        if check_step(env.step(text)):
            env.reset(options=task.options())
    for line in (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line)


@pytest.mark.parametrize("style", STYLES)
def test_random_garbage_batched(client, style):
    rng = random.Random(1234)
    alphabet = list("abc <>/{}\"':,[]\n\t") + [
        "<search>",
        "</search>",
        "<access>",
        "</access>",
        "<answer>",
        "</answer>",
        "<tool_call>",
        "</tool_call>",
        "<think>",
        "</think>",
        '{"name": "search", "arguments": {"query": "',
        '"}}',
    ]
    tasks = hotpot_tasks(16)
    benv = BatchedSearchEnv(client, num_envs=16, style=style, max_turns=12)
    benv.reset(options=[t.options() for t in tasks])
    for _ in range(40):
        actions = []
        for ep in benv.episodes:
            if ep.done:
                actions.append(None)
            elif rng.random() < 0.2:
                actions.append(rng.choice(VALID_ISH))
            else:
                actions.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))))
        for out in zip(*benv.step(actions)):
            check_step(out)
        done = [i for i, ep in enumerate(benv.episodes) if ep.done]
        if done:
            benv.reset(options=[tasks[i].options() for i in done], indices=done)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300), style=st.sampled_from(STYLES))
def test_parser_never_raises(text, style):
    action = parse_action(text, style)
    assert action.kind in ("search", "access", "answer", "invalid")
    assert (action.kind == "invalid") == (action.error is not None)


TAGGY = st.lists(
    st.sampled_from(
        [
            "<search>",
            "</search>",
            "<access>",
            "</access>",
            "<answer>",
            "</answer>",
            "<tool_call>",
            "</tool_call>",
            "<think>",
            "</think>",
            "q",
            " ",
            "{",
            "}",
            '"name"',
            ":",
            '"search"',
            "#page=2",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=TAGGY, style=st.sampled_from(STYLES))
def test_parser_tag_soup(text, style):
    action = parse_action(text, style)
    if action.kind == "search":
        assert action.arg and action.arg == action.arg.strip()
