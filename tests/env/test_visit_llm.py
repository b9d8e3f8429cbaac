"""``env.visit`` and the MCP ``visit`` tool with a REAL extractor: SmolLM2-135M-Instruct behind
``transformers serve`` (the fixtures of ``llm_support``), over the real in-process client.

A 135M model often breaks the JSON format; what must hold either way is the contract: a visit
answers the extracted evidence and summary, or a tool error that says why, never an empty
success; the page sent is bounded by the real tokenizer; each call's cost is counted. The same
holds for ``visit`` as an env tool: a scripted policy's ``<visit>`` turn in an episode."""

from __future__ import annotations

import dataclasses

import pytest
from env_support import hotpot_client

from env.search_env import SearchEnv
from env.types import EnvConfig
from env.visit import VisitConfig, Visitor

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

URL = "https://en.wikipedia.org/wiki/University_of_Kansas"


async def test_real_model_visit_end_to_end(hotpot_root, llm_url, model_dir):  # noqa: F811
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    client = hotpot_client(hotpot_root)
    config = VisitConfig(llm_url, str(model_dir), max_input_tokens=96, max_output_tokens=48,
                         retries=1, timeout=300)  # fmt: skip
    visitor = Visitor(client, config, tokenizer=tokenizer)
    once = dataclasses.replace(config, retries=0)  # one try: a reply takes minutes on a busy CPU
    env_visitor = Visitor(client, once, tokenizer=tokenizer)
    try:
        result = await visitor.visit(URL, "Where are the branch campuses?")
        calls = visitor.stats.calls
        again = await visitor.visit(URL, "Where are the branch campuses?")
        unknown = await visitor.visit("https://en.wikipedia.org/wiki/No_Such_Page_xyz", "x")
        # the env tool: a scripted policy visits the page in an episode, SmolLM2 extracts
        env = SearchEnv(
            client, EnvConfig(tools=("search", "visit"), visit=once), visitor=env_visitor
        )
        env.reset(options={"question": "When was KU founded?", "answers": ["1865"]})
        obs, _, _, _, info = await env.astep(f"<visit>{URL} | When was it founded?</visit>")
        _, _, terminated, _, _ = await env.astep("<answer>1865</answer>")
        turn = env.trajectory()["turns"][0]
    finally:
        await visitor.aclose()
        await env_visitor.aclose()
        client.close()
    print(result)
    assert 1 <= result.tries <= 2 and calls == result.tries
    assert visitor.stats.completion_tokens > 0  # the server's usage was read
    if result.ok:
        assert result.summary and "Summary:" in result.text
        assert 0 < result.page_tokens <= 96
        assert again.cached and again.text == result.text and visitor.stats.calls == calls
    else:
        assert result.text == "" and "no usable answer" in result.error
        assert not again.cached  # a failure is not cached: the same visit asks again
    assert not unknown.ok and "no page found" in unknown.error
    print(obs)
    cost = turn["visit"]
    assert turn["kind"] == "visit" and terminated and env.trajectory()["rewards"]["em"] == 1.0
    assert cost["tries"] == env_visitor.stats.calls == 1 and not cost["cached"]
    assert cost["completion_tokens"] > 0 and cost["seconds"] > 0
    assert obs.startswith("\n\n<information>") and obs.rstrip().endswith("</information>")
    if info["error"] is None:  # the evidence and summary, or a tool error: never empty
        assert "Summary:" in obs and 0 < cost["page_tokens"] <= 96
    else:
        assert "Error: visit failed" in obs and turn["error"] == info["error"]
