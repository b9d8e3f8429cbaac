"""Garbage and adversarial actions never crash the env (or the parser), in every style."""

from __future__ import annotations

import json
import math
import random
import time

import pytest
from env_support import hotpot_client, hotpot_tasks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from env.batched import BatchedSearchEnv
from env.parsing import MAX_TURN_CHARS
from env.search_env import SearchEnv
from env.styles import parse_action
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

# the tags of every tool syntax: the fuzzers' building blocks
TAGS = ("<search>", "</search>", "<access>", "</access>", "<answer>", "</answer>")
TAGS += ("<tool_call>", "</tool_call>", "<think>", "</think>")
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
    alphabet = [
        *"abc <>/{}\"':,[]\n\t",
        *TAGS,
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
            *TAGS,
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


# ---- issue 13: nothing a policy writes raises, through either client, in a batched step ------

BUDGET = 600
HOSTILE = [
    "<access>University of Kansas#page=999999999999999999999</access>",
    "<access>Kansas Song#page=" + "9" * 5000 + "</access>",
    "<access>Kansas Song#page=0</access>",
    "<access>University of Kansas | page 100000</access>",
    "<access>https://en.wikipedia.org/wiki/University_of_Kansas#page=2</access>",
    "<access>" + "https://en.wikipedia.org/wiki/" + "A" * 3000 + "</access>",
    "<access>index.php?title=" + "%" * 500 + "</access>",
    '<tool_call>{"name": "access", "arguments": {"url": "Kansas Song", "page": 99999999999999999999}}</tool_call>',
    '<tool_call>{"name": "access", "arguments": {"url": "Kansas Song", "page": -1}}</tool_call>',
    '<tool_call>{"name": "access", "arguments": {"url": "Kansas Song", "page": 100000}}</tool_call>',
    '<tool_call>{"name": "search", "arguments": {"query": '
    + json.dumps("q " * 999)
    + "}}</tool_call>",
    '<tool_call>{"name": "search", "arguments": "{\\"query\\": 5}"}</tool_call>',
    "<search>" + "\u200b" * 50 + "</search>",
    "<search>" + "x" * 1999 + "</search>",
]
HUGE = [
    "<answer>" + "z" * 1_000_000 + "</answer>",
    "<search>" + "w" * 1_000_000,
    "<access>" + "v" * 1_000_000 + "</access>",
    "<think>" + "<search>u</search>" * 50_000,
]
HOSTILE += HUGE


def action_stream(rng: random.Random):
    """Random and adversarial turns: tag soup, hostile pages and sizes, valid calls."""
    pieces = [
        "<search>", "</search>", "<access>", "</access>", "<answer>", "</answer>",
        "<tool_call>", "</tool_call>", "<think>", "</think>", "#page=", "| page ",
        '{"name": "search", "arguments": {"query": "', '{"name": "access", "arguments": {"url": "',
        '", "page": ', '"}}', "}", "Kansas", "9999999999999999999999", "\x00", "\ud800", " ", "\n",
    ]  # fmt: skip
    while True:
        r = rng.random()
        if r < 0.002:  # a megabyte turn now and then: sizes are checked, never scanned twice
            yield rng.choice(HUGE)
        elif r < 0.1:
            yield rng.choice(HOSTILE[: -len(HUGE)])
        elif r < 0.2:
            yield rng.choice(ADVERSARIAL)
        elif r < 0.35:
            yield rng.choice(VALID_ISH)
        elif r < 0.45:
            page = rng.choice([1, 2, 3, 7, 10**6, 10**21, -3, 0])
            yield rng.choice(
                [
                    f"<access>University of Kansas#page={page}</access>",
                    f'<tool_call>{{"name": "access", "arguments": {{"url": "Kansas Song", "page": {page}}}}}</tool_call>',
                ]
            )
        else:
            yield "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))


@pytest.fixture(scope="module")
def http_client(hotpot_root):
    """The real HTTP client against the real server app over the same index."""
    from env_support import ensure_bm25
    from policy_server import ServerThread

    from retriever.client import HTTPClient
    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService, ServiceConfig

    service = RetrievalService(ServiceConfig(index=str(ensure_bm25(hotpot_root)), warmup=False))
    with ServerThread(create_app(service, background=False)) as url:
        c = HTTPClient(url, retries=1, backoff=0.01)
        yield c
        c.close()


@pytest.fixture(params=["inprocess", "http"])
def any_client(request, client, http_client):
    return client if request.param == "inprocess" else http_client


def fuzz(client, style: str, n_actions: int, num_envs: int, seed: int) -> int:
    """Step ``num_envs`` episodes with ``n_actions`` turns in all; every observation must fit the
    budget and every step must return. Returns how many steps ended an episode."""
    rng = random.Random(seed)
    stream = action_stream(rng)
    tasks = hotpot_tasks(num_envs)
    benv = BatchedSearchEnv(
        client, num_envs=num_envs, style=style, max_turns=6, obs_max_chars=BUDGET, topk=3
    )
    benv.reset(options=[t.options() for t in tasks])
    sent = ended = 0
    while sent < n_actions:
        actions = [next(stream) for _ in range(num_envs)]
        sent += num_envs
        obs, rewards, terminated, truncated, infos = benv.step(actions)
        for out in zip(obs, rewards, terminated, truncated, infos):
            assert len(out[0]) <= BUDGET, out[0][:200]
            ended += check_step(out)
        done = [i for i, ep in enumerate(benv.episodes) if ep.done]
        if done:
            benv.reset(options=[tasks[i].options() for i in done], indices=done)
    return ended


@pytest.mark.parametrize("style", STYLES)
def test_hostile_actions_never_raise(any_client, style):
    """The ``#page=999999999999999999999`` access that raised TypeError through the HTTP client,
    and every other hostile turn, are observations, in the sync, async and batched steps."""
    task = hotpot_tasks(1)[0]
    env = SearchEnv(any_client, style=style, max_turns=10**6, obs_max_chars=BUDGET)
    env.reset(options=task.options())
    for text in HOSTILE:
        obs, _, terminated, truncated, info = env.step(text)
        assert len(obs) <= BUDGET and (info["error"] is None or len(info["error"]) <= 501)
        if terminated or truncated:
            env.reset(options=task.options())
    fuzz(any_client, style, n_actions=1_000, num_envs=250, seed=7)


async def test_hostile_actions_never_raise_async(http_client):
    import asyncio

    task = hotpot_tasks(1)[0]
    env = SearchEnv(http_client, style="asearcher", max_turns=10**6)
    env.reset(options=task.options())
    for text in HOSTILE:
        if (await env.astep(text))[2]:
            env.reset(options=task.options())
    benv = BatchedSearchEnv(http_client, num_envs=len(HOSTILE), style="asearcher")
    benv.reset(options=[task.options()] * len(HOSTILE))
    outs = await asyncio.gather(*(benv.astep_one(i, t) for i, t in enumerate(HOSTILE)))
    assert all(isinstance(o[0], str) for o in outs)


@pytest.mark.parametrize("style", STYLES)
def test_batched_step_equals_one_by_one(any_client, style):
    """One episode's action never changes another's: each observation of a batched first turn
    equals the same action stepped alone."""
    rng = random.Random(99)
    stream = action_stream(rng)
    actions = [next(stream) for _ in range(120)] + HOSTILE + ["<answer>Kansas</answer>"]
    task = hotpot_tasks(1)[0]
    benv = BatchedSearchEnv(any_client, num_envs=len(actions), style=style, obs_max_chars=BUDGET)
    benv.reset(options=[task.options()] * len(actions))
    batched = benv.step(actions)
    assert batched[2][-1] is True  # the answer in a batch full of hostile turns still counts
    for j, action in enumerate(actions):
        env = SearchEnv(any_client, style=style, obs_max_chars=BUDGET)
        env.reset(options=task.options())
        alone = env.step(action)
        assert alone[0] == batched[0][j], action[:200]
        assert (alone[2], alone[3], alone[4]["error"]) == (
            batched[2][j],
            batched[3][j],
            batched[4][j]["error"],
        )


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
def test_fuzz_100k_actions(any_client, style):
    """100,000 random and adversarial turns per style and client, 500 episodes a step."""
    assert fuzz(any_client, style, n_actions=100_000, num_envs=500, seed=2026) > 0


@pytest.mark.parametrize("style", STYLES)
def test_huge_turns_step_in_linear_time_and_count_against_the_budget(client, style):
    """30,000 unclosed <think> (210 KB) took env.step 23-25 s; a turn over MAX_TURN_CHARS is
    refused as a malformed turn and still spends its characters of the context budget."""
    env = SearchEnv(client, style=style, max_turns=10, format_penalty=0.1)
    env.reset(options=hotpot_tasks(1)[0].options())
    for text in ("<think>" * 30_000, "<answer>" * 100_000, "<think>" * 120_000 + "</think>"):
        start = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(text)
        assert time.perf_counter() - start < 2.0
        assert info["action"] == "invalid" and not (terminated or truncated)
        assert reward == pytest.approx(-0.1)
    env = SearchEnv(client, style=style, max_context_chars=50_000)
    env.reset(options=hotpot_tasks(1)[0].options())
    obs, _, terminated, truncated, info = env.step("<answer>x</answer>" + " " * MAX_TURN_CHARS)
    assert info["reason"] == "long_turn" and f"{MAX_TURN_CHARS:,}" in obs
    assert not terminated and truncated and info["truncated_reason"] == "context"
