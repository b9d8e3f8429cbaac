"""Trainer glue (env/integrations): the text rewards against the env's own episode rewards, TRL's
reward/tool environment, verl's tool registry and reward signature, SkyRL-gym's make/step; all
over the real HotpotQA mini index, in process or behind a live HTTP server."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO
from env_support import Oracle, ensure_bm25, hotpot_client, hotpot_tasks
from retriever_fakes import LiveServer, free_port

from env import SearchEnv
from env.errors import ConfigError, TaskFormatError
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
        gold = task.meta["supporting_titles"]  # the evidence rewards read the text back too
        assert score_text_all(text, task.answers, gold) == pytest.approx(rewards)
    assert (rewards["em"] == 0.0) is wrong


def test_answer_shapes_and_template_example():
    assert answers_of({"target": ["a", "b"]}) == ("a", "b")
    assert answers_of("x") == ("x",)
    prompt = "For example, <answer> Beijing </answer>. Question: q\n"
    assert extract_answer(prompt + "<search>q</search>") is None
    assert extract_answer(prompt + "<answer> Paris </answer>") == "Paris"
    for bad in (None, "", [], {"foo": 1}, {"answers": {"foo": "x"}}):
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
    with pytest.raises(ConfigError, match="unknown"):
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
    with pytest.raises(ConfigError, match="tag-style"):
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
    with pytest.raises(ConfigError, match="unknown"):
        compute_score("x", text, "Paris", reward="nope")


@pytest.mark.parametrize("path", ["pkg://env.integrations.verl", "env/integrations/verl.py"])
def test_verl_loads_compute_score_from_its_config(path, monkeypatch):
    pytest.importorskip(
        "tensordict", reason="verl is installed --no-deps with tensordict by make setup"
    )
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    monkeypatch.chdir(REPO)
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


# ---- cost of scoring a response text ------------------------------------------------------------


def test_compute_score_is_linear_in_the_response():
    """800 KB of <answer> took compute_score 356 s (a lazy regex rescanning from every tag)."""
    from env.integrations.verl import compute_score

    for text in (
        "<answer>" * 100_000,
        "<information>" * 62_000 + "<answer>x</answer>",
        "<think>" * 120_000 + "<answer>x</answer>",
        "<answer>" + "x" * 800_000,
        '<tool_call>{"name": "search"}' * 25_000,
    ):
        start = time.perf_counter()
        scores = compute_score("x", text, ["x"], return_dict=True)
        assert time.perf_counter() - start < 2.0
        assert scores["em"] == float(text.endswith("<answer>x</answer>"))
    assert extract_answer("<answer>a</answer><answer>b<answer>c</answer><answer>") == "b<answer>c"


# ---- ground truth shapes: one decoder for the QA reader and the trainer glue --------------------


def _objects(*values) -> np.ndarray:
    """A numpy object array holding lists, as parquet rows reach verl's reward function."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


GROUND_TRUTHS = [
    # (ground truth, answers)
    ("Paris", ("Paris",)),
    (["Paris", " paris, france ", "", None], ("Paris", "paris, france")),
    (("a", "b"), ("a", "b")),
    ({"target": ["a", ["b"]]}, ("a", "b")),
    ({"target": np.array(["a", "b"], dtype=object)}, ("a", "b")),
    ({"answers": {"text": ["x", "y"], "answer_start": [1, 2]}}, ("x", "y")),
    ({"text": ["x"], "answer_start": [0]}, ("x",)),
    ({"aliases": ["JFK", "Kennedy"], "value": "JFK"}, ("JFK", "Kennedy")),
    ({"golden_answers": ["g"]}, ("g",)),
    ({"ground_truth": {"target": "t"}}, ("t",)),
    (np.array(["only"]), ("only",)),
    (np.array(["a", "b", "a"]), ("a", "b")),
    (np.array([["a", "b"], ["c", "d"]]), ("a", "b", "c", "d")),
    (_objects(["a", "b"], ["c"]), ("a", "b", "c")),
    (_objects(np.array(["a"], dtype=object), "b"), ("a", "b")),
    (np.str_("s"), ("s",)),
    (1990, ("1990",)),
    (np.int64(7), ("7",)),
    (b"bytes", ("bytes",)),
]
NO_ANSWER = [None, "", "  ", [], np.array([]), np.array([], dtype=object), {"foo": 1}, [None]]
NO_ANSWER += [{"target": []}, {"answers": {"text": []}}, float("nan"), _objects([], [])]


@pytest.mark.parametrize("value,answers", GROUND_TRUTHS)
def test_one_decoder_for_every_ground_truth_shape(value, answers):
    from retriever.queries import answers_of as row_answers
    from retriever.queries import decode_answers

    assert tuple(decode_answers(value)) == answers
    assert answers_of(value, "row 1") == answers
    # the QA reader finds the same answers under each key a QA file may keep them in
    for row in (
        {"golden_answers": value},
        {"reward_model": {"ground_truth": value}},
        {"answer": value},
        {"answers": value},
    ):
        assert tuple(row_answers(row)) == answers, row


@pytest.mark.parametrize("value", NO_ANSWER, ids=repr)
def test_no_answer_is_an_error_naming_the_row(value):
    from retriever.queries import answers_of as row_answers
    from retriever.queries import decode_answers

    assert decode_answers(value) == [] and row_answers({"answers": value}) == []
    with pytest.raises(TaskFormatError, match="row 7"):
        answers_of(value, "row 7")


def test_verl_compute_score_takes_numpy_ground_truths():
    """verl hands parquet columns over as numpy arrays: 0, 1 or many answers, or lists inside."""
    from env.integrations.verl import compute_score

    text = "<answer>Paris</answer>"
    assert compute_score("nq", text, np.array(["Paris"], dtype=object)) == 1.0
    assert compute_score("nq", text, np.array(["Lyon", "Paris"], dtype=object)) == 1.0
    assert compute_score("nq", text, np.array(["Lyon", "Rome"])) == 0.0
    assert compute_score("nq", text, {"target": np.array(["Lyon", "paris"])}) == 1.0
    assert compute_score("nq", text, _objects(["Lyon"], ["Paris", "P."])) == 1.0
    with pytest.raises(TaskFormatError, match="nq index 4: ground_truth: no gold answer"):
        compute_score("nq", text, np.array([], dtype=object), {"index": 4})
    # an empty array falls back to the answer verl keeps in extra_info, as None and "" do
    extra = {"index": 4, "answer": np.array(["paris"], dtype=object)}
    assert compute_score("nq", text, np.array([]), extra) == 1.0


# ---- verl: paging state per trajectory -----------------------------------------------------------


async def _verl_call(tool, args, agent_data=None):
    """One tool call the way verl's ToolAgentLoop._call_tool makes it: a fresh instance per
    call, ``agent_data`` (the trajectory) passed to execute, released at once."""
    iid, _ = await tool.create(create_kwargs={})
    try:
        response, _, _ = await tool.execute(iid, args, agent_data=agent_data)
        return response.text
    finally:
        await tool.release(iid)


def _verl_tools(live, tmp_path):
    pytest.importorskip(
        "tensordict", reason="verl is installed --no-deps with tensordict by make setup"
    )
    from verl.tools.tool_registry import initialize_tools_from_config

    from env.integrations.verl import tool_config

    path = tmp_path / "tools.yaml"
    path.write_text(tool_config(live.url, topk=2, page_chars=300))
    return {t.name: t for t in initialize_tools_from_config(str(path))}


def _page_header(text: str) -> str:
    return text.split(">>>> Page ", 1)[1].split(" >>>>", 1)[0]


def test_verl_access_without_page_reads_on_within_a_trajectory(live, tmp_path):
    tools = _verl_tools(live, tmp_path)
    hit = asyncio.run(_verl_call(tools["search"], {"query": hotpot_tasks(1)[0].question}))
    url = hit.split("[Doc 1](", 1)[1].split(")", 1)[0]

    async def trajectory(agent_data, n):
        return [
            _page_header(await _verl_call(tools["access"], {"url": url}, agent_data))
            for _ in range(n)
        ]

    first, second = SimpleNamespace(extra_fields={}), SimpleNamespace(extra_fields={})
    pages = asyncio.run(trajectory(first, 3))
    total = int(pages[0].split(" of ")[1])
    assert total >= 3 and pages == [f"{k} of {total}" for k in (1, 2, 3)]
    # another trajectory starts at page 1; an explicit page moves this one's place
    assert asyncio.run(trajectory(second, 1)) == [f"1 of {total}"]
    asyncio.run(_verl_call(tools["access"], {"url": url, "page": 1}, first))
    assert asyncio.run(trajectory(first, 1)) == [f"2 of {total}"]
    # without a trajectory (a caller that is not verl's loop) every call reads page 1, and the
    # observation names the page argument that reads on
    text = asyncio.run(_verl_call(tools["access"], {"url": url}))
    assert _page_header(text) == f"1 of {total}" and '"page": 2' in text


@pytest.mark.slow
def test_verl_agent_loop_call_tool_pages_on(live, tmp_path):
    """The same through verl's own ToolAgentLoop._call_tool and AgentData (needs hydra,
    codetiming and cachetools beside verl; ~15 s to import the agent loop)."""
    for name in ("hydra", "codetiming", "cachetools"):
        pytest.importorskip(name, reason="make setup installs verl's agent-loop imports")
    from verl.experimental.agent_loop.tool_agent_loop import AgentData, ToolAgentLoop
    from verl.experimental.agent_loop.tool_parser import FunctionCall

    tools = _verl_tools(live, tmp_path)
    loop = SimpleNamespace(tools=tools, max_tool_response_length=100_000)
    loop.tool_response_truncate_side = "right"
    hit = asyncio.run(_verl_call(tools["search"], {"query": hotpot_tasks(1)[0].question}))
    url = hit.split("[Doc 1](", 1)[1].split(")", 1)[0]
    data = AgentData([], [], [], None, None, {}, "req-1", {})
    call = FunctionCall(name="access", arguments=json.dumps({"url": url}))

    async def read(n):
        out = []
        for _ in range(n):
            response, _, _ = await ToolAgentLoop._call_tool(loop, call, {}, data)
            out.append(_page_header(response.text).split(" of ")[0])
        return out

    assert asyncio.run(read(3)) == ["1", "2", "3"]


# ---- noise through the trainer integrations --------------------------------------------------

# hard negatives on a schedule: none at step 0, every top hit replaced from step 10 on
CURRICULUM = "hard-negative,p_start=0,p_end=1,steps=10,depth=3"


def test_trl_environment_factory_noise_follows_the_trainers_step(client):
    """TRL resets pooled environments with the row only; TrainStep's callback, driven by
    transformers' own CallbackHandler, gives them the global step."""
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler

    from env.integrations.trl import TrainStep

    steps = TrainStep()
    handler = CallbackHandler([steps.callback()], None, None, None, None)
    state, control = TrainerState(), TrainerControl()
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    make = SearchToolEnvironment.factory(client, noise=CURRICULUM, train_step=steps, topk=2)
    envs = [make(), make()]  # TRL's pool: built once, reset every batch
    task = hotpot_tasks(1)[0]
    row = task_rows([task], style="tool-call")[0]
    for global_step, replaced in [(0, 0), (4, None), (10, 2)]:
        state.global_step = global_step
        handler.on_step_begin(args, state, control)
        for env in envs:
            env.reset(**row)
            env.search(query=task.question)
            noise = env._env.trajectory()["noise"]
            assert noise["step"] == global_step and noise["p"] == pytest.approx(global_step / 10)
            if replaced is not None:
                assert len(noise["searches"][0]["replaced"]) == replaced


def test_trl_rollout_resets_episodes_at_the_trainers_step(client, tmp_path):
    """SearchRollout (TRL's rollout_func) puts trainer.state.global_step into each reset."""
    from env.integrations.trl_rollout import SearchRollout

    class CharTokenizer:  # ids are code points: enough for the rollout's bookkeeping
        eos_token_id, pad_token_id, unk_token_id, bos_token_id = 0, 1, None, None

        def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
            return self.encode("".join(m["content"] for m in messages))

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids if i > 1)

    tasks = hotpot_tasks(2)

    class Scripted(SearchRollout):  # the policy: search the question, then answer
        def _generate(self, trainer, tok, seqs, room, active):
            turn = "<answer> x </answer>" if "<information>" in tok.decode(seqs[0]) else None
            return [
                (tok.encode(turn or f"<search> {tasks[i].question} </search>"), [], False)
                for i in active
            ]

    record = tmp_path / "episodes.jsonl"
    rollout = Scripted(client, tasks, noise=CURRICULUM, record_path=str(record), topk=2)
    trainer = SimpleNamespace(
        processing_class=CharTokenizer(),
        max_completion_length=100_000,
        state=SimpleNamespace(global_step=7),
    )
    out = rollout([r["prompt"] for r in rollout.rows()], trainer)
    assert len(out["completion_ids"]) == 2
    noise = [json.loads(line)["noise"] for line in record.read_text().splitlines()]
    assert [n["step"] for n in noise] == [7, 7] and noise[0]["p"] == pytest.approx(0.7)


def test_skyrl_noise_from_env_config_step_from_extras(hotpot_root, client):
    skyrl_gym = pytest.importorskip("skyrl_gym")
    from env_support import titles_in

    import env.integrations.skyrl  # noqa: F401

    task = hotpot_tasks(1)[0]
    deep = [d["title"] for d in client.retrieve([task.question], topk=2 + 3)[0]]
    shown = {}
    for where, step in [("extras", 0), ("extras", 10), ("extra_info", 10)]:
        extras = {"reward_spec": {"ground_truth": list(task.answers)}}
        (extras if where == "extras" else extras.setdefault("extra_info", {}))["train_step"] = step
        e = skyrl_gym.make(
            "wikisearch",
            env_config={"index": str(ensure_bm25(hotpot_root)), "topk": 2, "noise": CURRICULUM},
            extras=extras,
        )
        e.init([{"role": "user", "content": task.question}])
        out = e.step(f"<search> {task.question} </search>")
        shown[where, step] = titles_in(out["observations"][0]["content"], "asearcher")
    assert shown["extras", 0] == deep[:2]  # p_start = 0: the plain results
    assert shown["extras", 10] == shown["extra_info", 10] == deep[2:4]  # all hard negatives
    with pytest.raises(TaskFormatError, match="train_step must be an integer >= 0, got -1"):
        skyrl_gym.make(
            "wikisearch",
            env_config={"index": str(ensure_bm25(hotpot_root))},
            extras={"reward_spec": {"ground_truth": ["x"]}, "train_step": -1},
        )


def test_verl_tools_noise_and_its_step(live, tmp_path):
    """Noise in verl's tool config; the step from the row's create_kwargs, else from the
    global_steps verl's server stamps on the trajectory's generations."""
    pytest.importorskip(
        "tensordict", reason="verl is installed --no-deps with tensordict by make setup"
    )
    from env_support import titles_in
    from verl.tools.tool_registry import initialize_tools_from_config

    from env.errors import ConfigError
    from env.integrations.verl import tool_config

    path = tmp_path / "tools.yaml"
    path.write_text(tool_config(live.url, topk=2, access=False, noise=CURRICULUM))
    (tool,) = initialize_tools_from_config(str(path))
    question = hotpot_tasks(1)[0].question
    deep = [d["title"] for d in hotpot_client_for(live).retrieve([question], topk=5)[0]]

    async def search(create_kwargs, extra_fields):
        iid, _ = await tool.create(create_kwargs=create_kwargs)
        try:
            agent_data = SimpleNamespace(extra_fields=extra_fields)
            response, _, _ = await tool.execute(iid, {"query": question}, agent_data=agent_data)
        finally:
            await tool.release(iid)
        return titles_in(response.text, "tool-call")

    assert asyncio.run(search({}, {})) == deep[:2]  # no step anywhere: step 0, p_start = 0
    assert asyncio.run(search({}, {"max_global_steps": 10})) == deep[2:4]
    assert asyncio.run(search({"train_step": 0}, {"max_global_steps": 10})) == deep[:2]
    path.write_text(tool_config(live.url, access=False, noise="random,p_end=1"))
    with pytest.raises(ConfigError, match="retriever.inspect ROOT --sample"):
        initialize_tools_from_config(str(path))
