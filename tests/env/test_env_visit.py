"""``visit(url, goal)`` as a tool of the env (``EnvConfig.tools`` + ``EnvConfig.visit``): scripted
episodes over the real in-process search client (HotpotQA mini corpus), with
``policy_server.fake_extractor`` playing the extractor model (and, for ``env.evaluate``, the
policy) over real HTTP. ``test_visit_llm.py`` drives one with the real SmolLM2 as extractor."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from env_support import hotpot_client
from policy_server import ServerThread, fake_extractor

from env.batched import BatchedSearchEnv
from env.errors import ConfigError
from env.search_env import SearchEnv
from env.types import EnvConfig
from env.visit import VisitConfig, Visitor

pytestmark = pytest.mark.timeout(120)

URL = "https://en.wikipedia.org/wiki/University_of_Kansas"
QUESTION = {"question": "When was the University of Kansas founded?", "answers": ["1865"]}
TAG_TOOLS = ("search", "access", "visit")


@pytest.fixture(scope="module")
def extractor():
    log: list[dict] = []
    stats: Counter = Counter()
    with ServerThread(fake_extractor(log, stats)) as url:
        yield url, log, stats


@pytest.fixture(scope="module")
def client(hotpot_root):
    c = hotpot_client(hotpot_root)
    yield c
    c.close()


def config(url: str, style: str = "asearcher", tools=TAG_TOOLS, **visit) -> EnvConfig:
    limits = {"timeout": 5.0, "retries": 1} | visit
    return EnvConfig(
        style=style, tools=tools, visit=VisitConfig(url, "extractor", api_key="sk-secret", **limits)
    )


def test_tag_style_visit_shows_evidence_records_cost_and_caches(client, extractor):
    url, log, _ = extractor
    env = SearchEnv(client, config(url))
    prompt, info = env.reset(options=QUESTION)
    assert "<visit> url | goal </visit>" in prompt  # the prompt tells the policy how
    n = len(log)
    obs, _, term, trunc, info = env.step(
        f"<think>x</think>\n<visit> {URL} | good founding year </visit>"
    )
    assert not term and not trunc and info["error"] is None and info["query"] == URL
    assert obs.startswith("\n\n<information>") and obs.rstrip().endswith("</information>")
    assert (
        "Evidence in page:\nThe University of Kansas" in obs and "about good founding year" in obs
    )
    assert len(log) == n + 1 and log[-1]["page"].startswith("The University of Kansas")
    # the same visit again: a cache hit, no request, the same observation
    again, *_ = env.step(f"<visit>{URL} | good   founding year</visit>")
    assert again == obs and len(log) == n + 1
    env.step("<answer>1865</answer>")
    traj = env.trajectory()
    first, second = traj["turns"][0], traj["turns"][1]
    assert first["kind"] == "visit" and first["arg"] == URL
    cost = first["visit"]
    assert cost["goal"] == "good founding year" and not cost["cached"] and cost["tries"] == 1
    assert cost["completion_tokens"] == 17 and cost["prompt_tokens"] > 0 and cost["seconds"] > 0
    assert second["visit"]["cached"] and second["visit"]["prompt_tokens"] == 0
    assert first["shown"]["titles"] == ["University of Kansas"]
    assert traj["counts"]["visit"] == 2 and traj["rewards"]["em"] == 1.0
    assert env.visitor.stats.calls == 1 and env.visitor.stats.cache_hits == 1
    # the extractor's endpoint key is nowhere in what is recorded or shown
    assert "sk-secret" not in json.dumps(traj) and "sk-secret" not in repr(env.config)
    env.close()
    env.close()  # safe twice


@pytest.mark.parametrize("style", ["tool-call", "browser"])
async def test_json_styles_visit_as_a_function(client, extractor, style):
    url, log, _ = extractor
    tools = ("search", "access", "visit") if style == "tool-call" else ("search", "open", "visit")
    env = SearchEnv(client, config(url, style, tools))
    _, info = env.reset(options=QUESTION)
    name = "visit" if style == "tool-call" else "browser.visit"
    assert name in [t["function"]["name"] for t in info["tools"]]
    call = {"name": name, "arguments": {"url": [URL], "goal": "good year it opened"}}
    obs, *_, info = await env.astep(f"<tool_call>\n{json.dumps(call)}\n</tool_call>")
    assert info["error"] is None and obs.startswith("\n<tool_response>\n")
    assert "about good year it opened" in obs
    # a visit without a goal is a tool error the policy sees (not a format error)
    call = {"name": name, "arguments": {"url": URL}}
    obs, *_, info = await env.astep(f"<tool_call>{json.dumps(call)}</tool_call>")
    assert "Error: visit needs a goal" in obs and info["counts"]["tool_error"] == 1
    assert info["format_ok"] and "invalid" not in info["counts"]
    await env.visitor.aclose()


def test_visit_is_not_a_tool_unless_enabled(client, extractor):
    env = SearchEnv(client, EnvConfig(style="asearcher"))
    env.reset(options=QUESTION)
    obs, *_, info = env.step(f"<visit>{URL} | good goal</visit>")
    assert info["action"] == "invalid" and "no tool call" in obs and env.visitor is None
    env = SearchEnv(client, EnvConfig(style="tool-call"))
    env.reset(options=QUESTION)
    call = {"name": "visit", "arguments": {"url": URL, "goal": "good goal"}}
    obs, *_, info = env.step(f"<tool_call>{json.dumps(call)}</tool_call>")
    assert info["reason"] == "unknown_tool" and "visit is not available here" in obs


def test_visit_needs_an_extractor():
    with pytest.raises(ConfigError, match="no extractor model is set"):
        EnvConfig(tools=("search", "visit"))
    cfg = EnvConfig(tools="search,visit", visit={"url": "http://x", "model": "m"})
    assert cfg.visit == VisitConfig("http://x", "m") and cfg.tools[-1] == "answer"


@pytest.mark.parametrize(
    ("action", "says"),
    [
        ("<visit>https://en.wikipedia.org/wiki/No_Such_Page_xyz | good goal</visit>", "no page found"),
        (f"<visit>{URL}</visit>", "visit needs a goal"),
        (f"<visit>{URL} |   </visit>", "visit needs a goal"),
        ("<visit> | good goal</visit>", "visit needs a url"),
        (f"<visit>{URL} | {'x' * 3000}</visit>", "at most 2000"),
        (f"<visit>{URL} | garbled goal</visit>", "no usable answer in 2 tries"),
        (f"<visit>{URL} | slow goal</visit>", "no reply within 0.5 s"),
    ],
    ids=["unknown-url", "no-goal", "blank-goal", "no-url", "long-goal", "out-of-format", "timeout"],
)  # fmt: skip
def test_bad_visits_are_tool_errors(client, extractor, action, says):
    url, log, _ = extractor
    env = SearchEnv(client, config(url, timeout=0.5))
    env.reset(options=QUESTION)
    n = len(log)
    obs, reward, term, trunc, info = env.step(action)
    assert obs.startswith("\n\n<information>\nError: ") and says in obs, obs[:300]
    assert says in info["error"] and not term and not trunc
    assert info["counts"] == {"visit": 1, "tool_error": 1, "visit_error": 1}
    assert info["format_ok"]
    turn = env.trajectory()["turns"][0]
    assert turn["visit"]["cached"] is False
    model_failed = says.startswith(("no usable", "no reply"))
    assert (len(log) > n) == model_failed  # bad input never reaches the model
    if says.startswith("no usable"):
        assert turn["visit"]["tries"] == 2 and turn["visit"]["completion_tokens"] == 34
    env.step("<answer>x</answer>")
    assert env.trajectory()["counts"]["visit_error"] == 1
    env.close()


def test_observation_stays_within_the_budget(client, extractor):
    url, _, _ = extractor
    cfg = EnvConfig(
        tools=TAG_TOOLS, obs_max_chars=120, visit=VisitConfig(url, "extractor", timeout=5)
    )
    env = SearchEnv(client, cfg)
    env.reset(options=QUESTION)
    obs, *_ = env.step(f"<visit>{URL} | good goal with a budget</visit>")
    assert len(obs) <= 120 and obs.endswith("</information>\n\n") and "…" in obs
    env.close()


class Spy:
    """The env's visit backend with a count of its ``visit`` calls (one per step)."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []
        self.visitor = backend.visitor

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def visit(self, requests):
        self.calls.append(list(requests))
        return self.backend.visit(requests)

    async def avisit(self, requests):
        self.calls.append(list(requests))
        return await self.backend.avisit(requests)


ACTIONS = [
    [
        f"<visit>{URL} | good batch goal</visit>",
        f"<visit>{URL} | garbled batch goal</visit>",
        "<search>University of Kansas</search>",
        "<visit>https://en.wikipedia.org/wiki/No_Such_Page_xyz | good goal</visit>",
    ],
    [
        "<answer>1865</answer>",
        f"<visit>{URL} | good batch goal</visit>",  # cached by the first episode's visit
        f"<visit>{URL} | good other goal</visit>",
        f"<visit>{URL}</visit>",
    ],
]


def _run_batched(client, cfg) -> tuple[list[list[str]], list[dict], Spy]:
    benv = BatchedSearchEnv(client, num_envs=4, config=cfg)
    benv.backend = spy = Spy(benv.backend)
    benv.reset(options=[QUESTION] * 4)
    seen = []
    for actions in ACTIONS:
        obs, *_ = benv.step(actions)
        seen.append(obs)
    trajs = benv.trajectories()
    benv.close()
    return seen, trajs, spy


def _run_one_by_one(client, cfg) -> list[list[str]]:
    visitor = Visitor(client, cfg.visit)  # one cache, as the batched env's episodes share
    envs = [SearchEnv(client, cfg, visitor=visitor) for _ in range(4)]
    for env in envs:
        env.reset(options=QUESTION)
    seen = [[env.step(a)[0] for env, a in zip(envs, actions)] for actions in ACTIONS]
    envs[0].close()
    return seen


def test_batched_equals_one_by_one_with_one_visit_call_per_step(client, extractor):
    url, _, _ = extractor
    cfg = config(url)
    seen, trajs, spy = _run_batched(client, cfg)
    assert seen == _run_one_by_one(client, cfg)
    assert [len(c) for c in spy.calls] == [3, 3]  # one visit call per step, every visit in it
    assert "Evidence in page:" in seen[0][0] and "Error: visit failed" in seen[0][1]
    assert "no page found" in seen[0][3] and "visit needs a goal" in seen[1][3]
    assert trajs[1]["turns"][1]["visit"]["cached"]


async def test_visits_of_a_step_run_concurrently_within_the_bound(client, extractor):
    url, _, stats = extractor
    cfg = config(url, concurrency=2)
    benv = BatchedSearchEnv(client, num_envs=5, config=cfg)
    benv.reset(options=[QUESTION] * 5)
    stats["max_in_flight"] = 0
    actions = [f"<visit>{URL} | wait goal {k}</visit>" for k in range(5)]
    obs, *_ = await benv.astep(actions)
    await benv.aclose()
    assert all("about wait goal" in o for o in obs)
    assert stats["max_in_flight"] == 2  # concurrent, and never more than the bound


async def test_evaluate_counts_visits_and_visit_errors(client, extractor, tmp_path):
    from env.evaluate import EvalConfig, evaluate, format_table

    url, _, _ = extractor
    data = tmp_path / "qa.jsonl"
    rows = [
        {"id": "a", "question": "When? visit goal: good evaluate goal", "answers": ["1865"]},
        {"id": "b", "question": "When? visit goal: garbled evaluate goal", "answers": ["1865"]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for style, tools in (("asearcher", TAG_TOOLS), ("tool-call", TAG_TOOLS)):
        cfg = EvalConfig(
            data=(str(data),), model="policy", policy_url=url, env=config(url, style, tools),
            concurrency=2, out=str(tmp_path / style),
        )  # fmt: skip
        summary = await evaluate(cfg, client)
        row = summary["datasets"]["qa"]
        assert row["em"] == 1.0 and row["tools"]["visits"] == 1.0, row
        assert row["tools"]["visit_errors"] == 0.5
        assert row["visit"]["visits"] == 2 and row["visit"]["errors"] == 1
        assert row["visit"]["completion_tokens"] == 17 * 3  # one good try, two garbled ones
        assert summary["visit_model"] == "extractor"
        assert "visit: 2 visits, 1 errors" in format_table(summary["datasets"])
        written = (tmp_path / style / "trajectories.jsonl").read_text()
        assert "sk-secret" not in written and '"visit": {"goal"' in written


def test_evaluate_flags_build_the_extractor():
    from env.evaluate import build_parser, config_from_args

    argv = [
        "--server", "http://x", "--data", "qa.jsonl", "--model", "m", "--policy-url", "http://p",
        "--tools", "search,visit", "--visit-url", "http://e", "--visit-model", "ex",
        "--visit-max-input-tokens", "500", "--visit-timeout", "9", "--visit-concurrency", "3",
    ]  # fmt: skip
    cfg = config_from_args(build_parser().parse_args(argv))
    v = cfg.env.visit
    assert (v.url, v.model, v.max_input_tokens, v.timeout, v.concurrency) == (
        "http://e",
        "ex",
        500,
        9.0,
        3,
    )
    assert "visit" in cfg.env.tools
    with pytest.raises(ConfigError, match="go together"):
        config_from_args(build_parser().parse_args(argv[:-10] + ["--visit-url", "http://e"]))
    with pytest.raises(ConfigError, match="no extractor model"):
        config_from_args(build_parser().parse_args(argv[:10]))
