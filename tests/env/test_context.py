"""Context management (``EnvConfig.context``): 120-turn episodes through ``env.evaluate``'s
episode loop against a scripted OpenAI-compatible policy server that logs every request, over
the real in-process search client."""

from __future__ import annotations

import pytest
from env_support import hotpot_client
from fastapi import FastAPI, Request
from policy_server import ServerThread

from env.batched import BatchedSearchEnv
from env.context import seen_observations
from env.errors import ConfigError
from env.evaluate import EvalConfig, run_episode
from env.policy import OpenAIClient
from env.types import EnvConfig, Task

TURNS = 120
QUERIES = ["Kansas", "Paris", "river", "football", "film", "album", "war", "city", "king", "band"]


def scripted_policy(requests: list[dict]):
    """Searches TURNS - 1 times (a different query each turn), then answers; logs each body."""
    app = FastAPI()

    def turn_text(n: int) -> str:
        if n >= TURNS - 1:
            return "<answer> Lawrence </answer>"
        return f"<search> {QUERIES[n % len(QUERIES)]} {n} </search>"

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        requests.append(body)
        n = sum(m["role"] == "assistant" for m in body["messages"])
        message = {"role": "assistant", "content": turn_text(n)}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        requests.append(body)
        n = len(requests) - 1  # one episode per server
        return {"choices": [{"index": 0, "text": turn_text(n), "finish_reason": "stop"}]}

    return app


@pytest.fixture(scope="module")
def client(hotpot_root):
    c = hotpot_client(hotpot_root)
    yield c
    c.close()


async def run(client, context: str, completions: bool = False, **env) -> tuple[dict, list[dict]]:
    requests: list[dict] = []
    config = EnvConfig(max_turns=TURNS + 10, topk=2, obs_max_chars=600, context=context, **env)
    with ServerThread(scripted_policy(requests)) as url:
        cfg = EvalConfig(data=(), model="m", policy_url=url, env=config, completions=completions)
        benv = BatchedSearchEnv(client, num_envs=1, config=config)
        policy = OpenAIClient(url, "m", retries=0, timeout=30)
        try:
            task = Task("Where is the main campus of the University of Kansas?", ("Lawrence",))
            record = await run_episode(0, benv, policy, task, cfg)
        finally:
            await policy.aclose()
    return record, requests


def observations(body: dict) -> list[str]:
    """The observations one chat request carried (every user message after the first)."""
    return [m["content"] for m in body["messages"] if m["role"] == "user"][1:]


async def test_keep_last_stubs_old_observations_and_records_what_was_sent(client):
    record, requests = await run(client, "keep-last:3")
    assert record["terminated"] and record["num_turns"] == TURNS and record["policy_error"] is None
    assert record["context"] == "keep-last:3" and len(requests) == TURNS
    for k, body in enumerate(requests):
        sent = observations(body)
        assert len(sent) == k
        full = [o for o in sent if "omitted to save context" not in o]
        assert len(full) == min(k, 3)  # the last three in full, the rest stubs
        # the trajectory records exactly what this request showed the policy
        assert sent == [o.strip("\n") for o in seen_observations(record, k)]
    last = observations(requests[-1])
    assert last[0] == "<information>\n[turn 1 (search 'Kansas 0'): observation omitted to " \
        "save context]\n</information>"  # fmt: skip
    assert record["turns"][0]["stubbed_from"] == 4  # shown in full in requests 1 to 3
    assert record["turns"][0]["observation"].count("[Doc ") == 2  # the full text is kept


async def test_cap_chars_keeps_every_request_within_the_cap(client):
    cap = 16_000  # 120 stubs take about 12k of it (stubs count: see env.context)
    record, requests = await run(client, f"cap-chars:{cap}")
    assert record["terminated"] and len(requests) == TURNS
    sizes = []
    for k, body in enumerate(requests):
        shown = seen_observations(record, k)
        assert observations(body) == [o.strip("\n") for o in shown]
        sizes.append(sum(len(o) for o in shown))
    assert max(sizes) <= cap, max(sizes)
    full_sizes = [sum(len(t["observation"]) for t in record["turns"][:k]) for k in range(TURNS)]
    assert full_sizes[-1] > 4 * cap  # without the policy the context would be far past it
    assert sizes[-1] > cap - 600  # the cap is used, not undershot by whole observations


async def test_completions_prompt_is_rebuilt_with_stubs(client):
    record, requests = await run(client, "keep-last:2", completions=True)
    assert record["terminated"] and len(requests) == TURNS
    for k in (0, 1, 5, TURNS - 1):
        turns = record["turns"][:k]
        shown = seen_observations(record, k)
        expected = record["prompt"] + "".join(t["action"] + o for t, o in zip(turns, shown))
        assert requests[k]["prompt"] == expected


async def test_context_policy_spares_the_context_budget(client):
    full, _ = await run(client, "full", max_context_chars=20_000)
    assert full["truncated"] and full["truncated_reason"] == "context"
    assert full["num_turns"] < TURNS
    kept, _ = await run(client, "keep-last:4", max_context_chars=20_000)
    assert kept["terminated"] and not kept["truncated"] and kept["num_turns"] == TURNS


def test_context_setting_is_checked():
    with pytest.raises(ConfigError, match="keep-last:N"):
        EnvConfig(context="last:3")
    with pytest.raises(ConfigError, match="keep-last:N"):
        EnvConfig(context="keep-last:0")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        EnvConfig(context="cap-tokens:1000")
    assert EnvConfig(context=" keep-last:5").context == "keep-last:5"
