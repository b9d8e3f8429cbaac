"""Trainer glue (env/integrations): the text rewards against the env's own episode rewards, TRL's
reward/tool environment, verl's tool registry and reward signature, SkyRL-gym's make/step; all
over the real HotpotQA mini index, in process or behind a live HTTP server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from env_support import Oracle, ensure_bm25, hotpot_client, hotpot_tasks
from retriever_fakes import LiveServer, free_port

from env import SearchEnv
from env.errors import TaskFormatError
from env.integrations.scoring import answers_of, extract_answer, score_text_all
from env.integrations.trl import (
    SearchToolEnvironment,
    episode_scores,
    reward_function,
    task_rows,
)
from retriever.errors import ServiceUnavailableError


@pytest.fixture(scope="module")
def client(hotpot_root):
    return hotpot_client(hotpot_root)


@pytest.fixture(scope="module")
def live(hotpot_root):
    from retriever.server.service import RetrievalService, ServiceConfig

    service = RetrievalService(ServiceConfig(index=ensure_bm25(hotpot_root), max_wait_ms=2))
    with LiveServer(service) as server:
        yield server


def oracle_episode(client, task, style="asearcher", wrong=False):
    """A real episode played by the oracle; (env rewards, the response text a trainer keeps)."""
    env = SearchEnv(client, style=style, max_turns=8)
    obs, _ = env.reset(options=task.options())
    oracle, parts, info, done = Oracle(task, style), [], {}, False
    while not done:
        action = oracle.act(obs)
        if wrong and "<answer>" in action:
            action = "<answer> certainly not this </answer>"
        obs, _, terminated, truncated, info = env.step(action)
        parts += [action, obs]
        done = terminated or truncated
    return info["rewards"], "".join(parts)


@pytest.mark.parametrize("wrong", [False, True])
def test_text_scores_equal_episode_scores(client, wrong):
    # reference equivalence: scoring the kept response text gives the env's own rewards
    for task in hotpot_tasks(6):
        rewards, text = oracle_episode(client, task, wrong=wrong)
        assert score_text_all(text, task.answers) == pytest.approx(rewards)
    assert (rewards["em"] == 0.0) is wrong


def test_answer_shapes_and_template_example():
    assert answers_of({"target": ["a", "b"]}) == ("a", "b")
    assert answers_of("x") == ("x",)
    prompt = "For example, <answer> Beijing </answer>. Question: q\n"
    assert extract_answer(prompt + "<search>q</search>") is None
    assert extract_answer(prompt + "<answer> Paris </answer>") == "Paris"
    for bad in (None, "", [], {"foo": 1}, 3):
        with pytest.raises(TaskFormatError):
            answers_of(bad, "row 7")


def test_trl_reward_functions_score_text_and_name_bad_rows():
    em, f1 = reward_function("em"), reward_function("f1")
    assert em.__name__ == "em"
    completions = [
        [{"role": "assistant", "content": "<answer>Kansas Song</answer>"}],
        "<answer>x</answer>",
    ]
    assert em(prompts=None, completions=completions, answers=[["Kansas Song"], ["y"]]) == [1.0, 0.0]
    assert f1(
        completions=["<answer>the Kansas Song</answer>"], golden_answers=[["Kansas Song"]]
    ) == [1.0]
    with pytest.raises(TaskFormatError, match="row 1 of the batch"):
        em(completions=["a", "b"], answers=[["a"], []])
    with pytest.raises(TaskFormatError, match="no gold answers"):
        em(completions=["a"], question=["q"])
    with pytest.raises(Exception, match="unknown"):
        reward_function("nope")
    # the rollout's scores take precedence over the text
    assert episode_scores(["zzz"], env_rewards=[{"em": 1.0}]) == [{"em": 1.0}]


def test_trl_tool_environment_episode_and_schema(client):
    from transformers.utils import get_json_schema

    task = hotpot_tasks(1)[0]
    row = task_rows([task], style="tool-call")[0]
    env = SearchToolEnvironment(client, reward="f1")
    # TRL renders public methods as tools through transformers' schema reader
    names = [
        get_json_schema(getattr(env, n))["function"]["name"] for n in ("search", "access", "answer")
    ]
    assert names == ["search", "access", "answer"]
    assert env.reset(**row) is None
    obs = env.search(query=task.question)
    assert "[Doc 1](" in obs
    url = obs.split("[Doc 1](", 1)[1].split(")", 1)[0]
    assert ">>>> Page 1 of" in env.access(url=url)
    assert env.get_reward() == 0.0  # not answered yet
    env.answer(answer=task.answers[0])
    assert env.get_reward() == 1.0
    assert "ended" in env.search(query="more")
    # TRL hands the instances to reward functions: same scores
    assert reward_function("em")(completions=[""], environments=[env]) == [1.0]
    with pytest.raises(TaskFormatError, match="no answer"):
        env.reset(question="q", prompt=[{"role": "user", "content": "q"}], id="r9")


def test_trl_tool_environment_dead_server_is_fatal():
    from retriever.client import HTTPClient

    url = f"http://127.0.0.1:{free_port()}"
    env = SearchToolEnvironment(HTTPClient(url, retries=0))
    env.reset(question="q", answers=["a"])
    with pytest.raises(ServiceUnavailableError, match=url):
        env.search(query="anything")  # TRL turns this into a tool message ...
    with pytest.raises(ServiceUnavailableError, match=url):
        env.get_reward()  # ... but the reward call fails the run, naming the URL


def test_rollout_rejects_unknown_prompts(client):
    from env.integrations.trl_rollout import SearchRollout

    rollout = SearchRollout(client, hotpot_tasks(3))
    rows = rollout.rows()
    assert [r["answers"] for r in rows] == [list(t.answers) for t in hotpot_tasks(3)]
    assert rollout._tasks_of([rows[2]["prompt"]])[0] == hotpot_tasks(3)[2]
    with pytest.raises(TaskFormatError, match="prompt 0 of the batch"):
        rollout._tasks_of([[{"role": "user", "content": "a question nobody asked"}]])
    with pytest.raises(Exception, match="tag-style"):
        SearchRollout(client, hotpot_tasks(1), style="tool-call")


# ---- verl --------------------------------------------------------------------------------------


def test_verl_compute_score_signature_and_rows():
    from env.integrations.verl import compute_score

    text = "<think>x</think><search>q</search><information>..</information><answer>Paris</answer>"
    assert compute_score("searchR1_nq", text, {"target": ["paris", "Paris, France"]}) == 1.0
    assert compute_score("hotpotqa", text, ["Lyon"], {"index": 3}, reward="f1") == 0.0
    scores = compute_score("x", text, "Paris", return_dict=True)
    assert scores["score"] == 1.0 and scores["searches"] == 1.0 and scores["format"] == 1.0
    # verl rows with the answer only in extra_info still score
    assert compute_score("bamboogle", text, None, {"answer": "paris"}) == 1.0
    with pytest.raises(TaskFormatError, match="bamboogle index 5"):
        compute_score("bamboogle", text, None, {"index": 5, "question": "q"})
    with pytest.raises(Exception, match="unknown"):
        compute_score("x", text, "Paris", reward="nope")


@pytest.mark.parametrize("path", ["pkg://env.integrations.verl", "env/integrations/verl.py"])
def test_verl_loads_compute_score_from_its_config(path, monkeypatch):
    pytest.importorskip(
        "tensordict", reason="verl is installed --no-deps with tensordict by make setup"
    )
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    section = {"path": path, "name": "compute_score", "reward_kwargs": {"reward": "f1"}}
    fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": section}}))
    text = "<answer>the Kansas Song</answer>"
    assert (
        fn(data_source="hotpotqa", solution_str=text, ground_truth=["Kansas Song"], extra_info={})
        == 1.0
    )
    with pytest.raises(TaskFormatError, match="hotpotqa index 2"):
        fn(data_source="hotpotqa", solution_str=text, ground_truth=None, extra_info={"index": 2})


def test_verl_tool_config_carries_the_envs_tool_specs():
    """verl's agent shows the model the env's own specs (an access without a page reads the
    next unread chunk there too: one env per trajectory)."""
    from env.integrations.verl import tool_config
    from env.prompts import tool_specs

    text = tool_config("http://127.0.0.1:1", access=True)
    for spec in tool_specs(("search", "access")):
        assert f"    tool_schema: {json.dumps(spec)}" in text
    assert "the next unread one" in text and "default 1" not in text


def test_verl_tools_from_verls_registry(live, tmp_path):
    pytest.importorskip(
        "tensordict", reason="verl is installed --no-deps with tensordict by make setup"
    )
    from verl.tools.base_tool import BaseTool
    from verl.tools.schemas import ToolResponse
    from verl.tools.tool_registry import initialize_tools_from_config

    from env.integrations.verl import tool_config

    path = tmp_path / "tools.yaml"
    path.write_text(tool_config(live.url, topk=2))
    tools = {t.name: t for t in initialize_tools_from_config(str(path))}
    assert set(tools) == {"search", "access"}
    assert all(isinstance(t, BaseTool) for t in tools.values())
    task = hotpot_tasks(1)[0]

    async def call(name, args):
        tool = tools[name]
        iid, _ = await tool.create(create_kwargs={})
        try:
            return await tool.execute(iid, args)
        finally:
            await tool.release(iid)

    response, reward, metrics = asyncio.run(call("search", {"query": task.question}))
    assert isinstance(response, ToolResponse) and reward == 0.0 and metrics == {"tool_error": 0}
    # same text as the env's own tool-call observation over the same server
    env = SearchEnv(hotpot_client_for(live), style="tool-call", topk=2)
    env.reset(options=task.options())
    call_text = json.dumps({"name": "search", "arguments": {"query": task.question}})
    expected, *_ = env.step(f"<tool_call>{call_text}</tool_call>")
    assert response.text == expected
    url = response.text.split("[Doc 1](", 1)[1].split(")", 1)[0]
    page, _, _ = asyncio.run(call("access", {"url": url}))
    assert ">>>> Page 1 of" in page.text
    bad, _, metrics = asyncio.run(call("search", {"query": ""}))
    assert "non-empty" in bad.text and metrics == {"tool_error": 1}


def hotpot_client_for(live):
    from retriever.client import HTTPClient

    return HTTPClient(live.url)


@pytest.mark.slow
def test_verl_tool_refuses_a_dead_server():
    from env.integrations.verl import SearchTool

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailableError, match=url):
        SearchTool({"retrieval_service_url": url + "/retrieve", "timeout": 2}, None)
    with pytest.raises(TaskFormatError, match="retrieval_service_url"):
        SearchTool({}, None)


# ---- SkyRL-gym ---------------------------------------------------------------------------------


def test_skyrl_make_init_step(live):
    skyrl_gym = pytest.importorskip("skyrl_gym")
    from omegaconf import DictConfig

    import env.integrations.skyrl  # noqa: F401  (registers "wikisearch")

    task = hotpot_tasks(2)[1]
    e = skyrl_gym.make(
        "wikisearch",
        env_config=DictConfig(
            {"search_url": live.url + "/retrieve", "topk": 2}
        ),  # as SkyRL passes it
        extras={"reward_spec": {"ground_truth": {"target": list(task.answers)}}, "max_turns": 4},
    )
    prompt, meta = e.init([{"role": "user", "content": task.question}])
    assert meta["question"] == task.question and task.question in prompt[-1]["content"]
    out = e.step(f"<search> {task.question} </search>")
    assert out["done"] is False and out["reward"] == 0.0
    assert out["observations"][0]["role"] == "user"
    assert "<information>" in out["observations"][0]["content"]
    out = e.step(f"<answer> {task.answers[0]} </answer>")
    assert out["done"] is True and out["reward"] == 1.0 and out["observations"] == []
    assert e.get_metrics()["searches"] == 1 and e.get_metrics()["reward_em"] == 1.0
    e.close()


@pytest.mark.slow
def test_skyrl_bad_rows_and_dead_server(hotpot_root):
    skyrl_gym = pytest.importorskip("skyrl_gym")
    import env.integrations.skyrl  # noqa: F401

    root = str(ensure_bm25(hotpot_root))
    with pytest.raises(TaskFormatError, match="row 4"):
        skyrl_gym.make(
            "wikisearch", env_config={"index": root}, extras={"extra_info": {"index": 4}}
        )
    with pytest.raises(TaskFormatError, match="no gold answer"):
        skyrl_gym.make(
            "wikisearch", env_config={"index": root}, extras={"reward_spec": {"ground_truth": []}}
        )
    url = f"http://127.0.0.1:{free_port()}"
    e = skyrl_gym.make(
        "wikisearch",
        env_config={"search_url": url, "timeout": 2},
        extras={"reward_spec": {"ground_truth": "x"}},
    )
    e.init([{"role": "user", "content": "q"}])
    with pytest.raises(ServiceUnavailableError, match=url):
        e.step("<search> q </search>")


def test_skyrl_matches_the_env(hotpot_root, client):
    # same episode through skyrl_gym.make and through env.SearchEnv: same observations, rewards
    skyrl_gym = pytest.importorskip("skyrl_gym")
    import env.integrations.skyrl  # noqa: F401

    for task in hotpot_tasks(3):
        e = skyrl_gym.make(
            "wikisearch",
            env_config={"index": str(ensure_bm25(hotpot_root))},
            extras={"reward_spec": {"ground_truth": list(task.answers)}, "max_turns": 8},
        )
        prompt, _ = e.init([{"role": "user", "content": task.question}])
        ref = SearchEnv(client, max_turns=8, reward="f1")
        obs, _ = ref.reset(options=task.options())
        oracle = Oracle(task, "asearcher")
        while True:
            action = oracle.act(obs)
            out = e.step(action)
            obs, reward, terminated, truncated, _ = ref.step(action)
            assert out["reward"] == reward
            if terminated or truncated:
                assert out["done"]
                break
            assert out["observations"][0]["content"] == obs
