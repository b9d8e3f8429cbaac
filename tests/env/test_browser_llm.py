"""The browser style driven by a REAL language model: SmolLM2-135M-Instruct behind
``transformers serve`` (the fixtures of ``test_evaluate_llm``) runs browser-style episodes
end to end through ``env.evaluate`` over the Wikipedia XML sample (pages with links and
sections), in process. The 135M model does not browse well; what must hold is the contract:
no policy request fails, every episode ends, and every tool call it makes reaches the backend
(searches as queries, open/find/sections as browse requests) or is a tool error that says why."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import XML_SAMPLE
from llm_support import CountingClient

from env.evaluate import build_parser, config_from_args, evaluate
from env.types import BROWSE_KINDS

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

QUESTIONS = [
    {"question": "Who wrote the novel Atlas Shrugged?", "answers": ["Ayn Rand"]},
    {"question": "Who was the teacher of Aristotle?", "answers": ["Plato"]},
]


@pytest.fixture(scope="module")
def xml_bm25(tmp_path_factory):
    from index_build.__main__ import main

    out = tmp_path_factory.mktemp("browser-llm") / "index"
    assert main(["corpus", "--input", str(XML_SAMPLE), "--out", str(out), "--no-progress"]) == 0
    assert main(["bm25", "--index", str(out), "--no-progress"]) == 0
    return out


async def test_real_llm_runs_browser_episodes(xml_bm25, llm_url, model_dir, tmp_path):  # noqa: F811
    from retriever.client import InProcessClient

    qa = tmp_path / "browse-qa.jsonl"
    qa.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    argv = ["--index", str(xml_bm25), "--policy-url", llm_url, "--model", str(model_dir)]
    argv += ["--data", str(qa), "--style", "browser", "--out", str(tmp_path / "out")]
    argv += ["--max-turns", "3", "--max-tokens", "48", "--topk", "2", "--obs-max-chars", "1500"]
    argv += ["--concurrency", "2"]
    cfg = config_from_args(build_parser().parse_args(argv))
    client = CountingClient(InProcessClient(xml_bm25, warmup=False))
    try:
        summary = await evaluate(cfg, client)
    finally:
        await client.aclose()
    row = summary["datasets"]["browse-qa"]
    assert row["episodes"] == len(QUESTIONS) and row["policy_errors"] == 0, row
    lines = (tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(r["terminated"] or r["truncated"] for r in records)
    turns = [t for r in records for t in r["turns"]]
    # every search reached the retriever; every view shown came from a browse request
    assert sorted(client.queries) == sorted(t["arg"] for t in turns if t["kind"] == "search")
    browsed = [t for t in turns if t["kind"] in BROWSE_KINDS]
    shown = [t for t in browsed if t["error"] is None]
    assert len(shown) <= len(client.browsed) <= len(browsed)
    assert all("browse failed" not in (t["error"] or "") for t in browsed)
    # the prompt the model saw is gpt-oss's browser, and its tool calls were parsed as such
    assert "browser.search" in records[0]["prompt"]
    assert row["tools"]["browses"] == len(browsed) / len(records)
    reasons = Counter(t["reason"] for t in turns if t["kind"] == "invalid")
    print(f"browser: {row['tools']}; browse requests {len(client.browsed)}; invalid {reasons}")
