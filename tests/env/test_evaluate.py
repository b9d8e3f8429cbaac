"""``python -m env.evaluate`` against a scripted OpenAI-compatible server (``policy_server``)
that behaves as vLLM, SGLang, llama.cpp and a strict OpenAI server do, one failure mode each."""

from __future__ import annotations

import json

import pytest
from env_support import accessible_tasks, ensure_bm25
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from policy_server import (
    GARBAGE_MODES,
    GARBAGE_TEXT_MODES,
    VICTIM,
    ServerThread,
    fake_openai,
    free_port,
)

from env.evaluate import main

N = 6


@pytest.fixture(scope="module")
def env_root(hotpot_root):
    return ensure_bm25(hotpot_root)


@pytest.fixture(scope="module")
def qa(env_root, tmp_path_factory):
    chosen = accessible_tasks(env_root)
    path = tmp_path_factory.mktemp("qa") / "hotpot-mini.jsonl"
    path.write_text("".join(line for line, _ in chosen), encoding="utf-8")
    return path, [task for _, task in chosen]


@pytest.mark.parametrize(
    "flavour,style,completions",
    [
        ("vllm", "asearcher", False),
        ("sglang", "search-r1", False),
        ("vllm", "tool-call", False),
        ("sglang", "asearcher", True),
        ("llamacpp", "asearcher", False),
        ("llamacpp", "search-r1", True),
        ("llamacpp", "tool-call", False),
        ("strict", "tool-call", False),
        ("vllm-tools", "tool-call", False),
    ],
)
def test_evaluate_end_to_end(env_root, qa, tmp_path, capsys, flavour, style, completions):
    qa_file, tasks = qa
    app, requests = fake_openai(tasks, flavour, style)
    out = tmp_path / "out"
    with ServerThread(app) as url:
        argv = [
            "--index",
            str(env_root),
            "--policy-url",
            url,
            "--model",
            "fake",
            "--data",
            str(qa_file),
            "--style",
            style,
            "--concurrency",
            "4",
            "--out",
            str(out),
            "--samples",
            "2",
            "--topk",
            "5",
            "--judge-url",
            url,
            "--judge-model",
            "judge",
        ]
        if completions:
            argv.append("--completions")
        assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    row = summary["datasets"]["hotpot-mini"]
    assert (row["questions"], row["episodes"]) == (N, 2 * N)
    # 4 questions right both times, the flaky one right once, the wrong one never
    assert row["em"] == pytest.approx(9 / 12)
    assert row["avg@2"]["em"] == pytest.approx(9 / 12)
    assert row["pass@2"]["em"] == pytest.approx(5 / 6)
    assert row["format"] == 1.0 and row["policy_errors"] == 0 and row["truncated"] == 0
    n_tools = 3 if style != "search-r1" else 2
    assert row["tools"]["turns"] == n_tools + 1
    assert row["tools"]["searches"] == 2 and row["tools"]["invalid"] == 0
    assert row["tools"]["accesses"] == (1 if style != "search-r1" else 0)
    # the judge: garbled replies are counted as failures and left out of the score
    assert row["judge"]["parse_failures"] == 2 and row["judge"]["judged"] == 10
    assert row["judge"]["score"] == pytest.approx(7 / 10)
    records = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(records) == 2 * N
    assert all(r["turns"][0]["kind"] == "search" for r in records)
    assert requests["completions" if completions else "chat"] >= 2 * N * (n_tools + 1)
    assert requests["refused"] == 0  # tool messages answer their calls; stops were restored
    if not completions and style != "tool-call":  # every observation kept its wrapper
        assert requests["wrapped"] == 2 * N * sum(range(n_tools + 1))
    if flavour == "vllm-tools":  # the structured calls were read, their ids sent back
        assert requests["tool_call_ids"] == 2 * N * n_tools
    printed = capsys.readouterr().out
    assert "hotpot-mini" in printed and "pass@2" in printed


def test_policy_down_is_counted(env_root, qa, tmp_path):
    qa_file, _ = qa
    argv = [
        "--index",
        str(env_root),
        "--policy-url",
        f"http://127.0.0.1:{free_port()}",
        "--model",
        "m",
        "--data",
        str(qa_file),
        "--out",
        str(tmp_path),
        "--limit",
        "2",
        "--concurrency",
        "2",
    ]
    import env.policy as policy

    real = policy.OpenAIClient.__init__

    def fast(self, *a, **k):
        real(self, *a, **{**k, "retries": 0})

    policy.OpenAIClient.__init__ = fast
    try:
        assert main(argv) == 0
    finally:
        policy.OpenAIClient.__init__ = real
    row = json.loads((tmp_path / "summary.json").read_text())["datasets"]["hotpot-mini"]
    assert row["policy_errors"] == 2 and row["em"] == 0.0


GARBAGE = [(m, False) for m in GARBAGE_MODES] + [(m, True) for m in GARBAGE_TEXT_MODES]


@pytest.mark.parametrize("mode,completions", GARBAGE, ids=[m for m, _ in GARBAGE])
def test_broken_reply_is_one_policy_error(env_root, qa, tmp_path, capsys, mode, completions):
    """A 200 that is not a completion (wrong shape, not JSON, trickling past the deadline) ends
    only its own episode, as a policy error counted in the summary; the run finishes (exit 0)
    and scores the other episodes. Text parts, a lone surrogate or a bad UTF-8 byte are read
    (the bad character becomes U+FFFD, so later requests of the episode still encode)."""
    qa_file, tasks = qa
    expect = (GARBAGE_TEXT_MODES if completions else GARBAGE_MODES)[mode][1]
    app, requests = fake_openai(tasks, "vllm", "asearcher", garbage=mode)
    out = tmp_path / "out"
    argv = ["--index", str(env_root), "--model", "fake", "--data", str(qa_file)]
    argv += ["--out", str(out), "--limit", "3", "--concurrency", "3"]
    argv += ["--policy-timeout", "1.5", "--policy-retries", "0"]  # trickle: cut off after 1.5 s
    argv += ["--completions"] if completions else []
    with ServerThread(app) as url:
        assert main(argv + ["--policy-url", url]) == 0
    assert requests["garbage"] == 1
    assert "hotpot-mini" in capsys.readouterr().out
    row = json.loads((out / "summary.json").read_text())["datasets"]["hotpot-mini"]
    assert row["episodes"] == 3 and row["policy_errors"] == (expect != "ok")
    records = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert sorted(r["task_id"] for r in records) == sorted(t.id for t in tasks[:3])
    for r in records:
        if r["task_id"] == tasks[VICTIM].id and expect != "ok":
            assert expect in r["policy_error"] and r["rewards"]["em"] == 0.0
        else:
            assert r["policy_error"] is None and r["rewards"]["em"] == 1.0, r["policy_error"]
    if mode in ("lone-surrogate", "invalid-utf8"):
        assert requests["replaced"] >= 1  # the next request carried U+FFFD, as valid UTF-8


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert (
        main(
            [
                "--index",
                str(tmp_path),
                "--policy-url",
                "http://x",
                "--model",
                "m",
                "--data",
                "f.jsonl",
                "--judge-url",
                "http://j",
            ]
        )
        == 2
    )
    assert "--judge-model" in capsys.readouterr().err
    base = ["--index", str(tmp_path), "--policy-url", "http://x", "--model", "m", "--data", "f"]
    assert main(base + ["--policy-timeout", "0"]) == 2
    assert main(base + ["--policy-retries", "-1"]) == 2
    assert "--policy-timeout must be > 0" in capsys.readouterr().err


def test_evaluate_through_retrieval_server(env_root, qa, tmp_path):
    """``--server URL``: searches go over HTTP to ``python -m retriever.server``'s app."""
    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService, ServiceConfig

    qa_file, tasks = qa
    service = RetrievalService(ServiceConfig(index=str(env_root), warmup=False))
    policy_app, _ = fake_openai(tasks, "vllm", "asearcher")
    with (
        ServerThread(create_app(service, background=False)) as search_url,
        ServerThread(policy_app) as url,
    ):
        argv = [
            "--server",
            search_url,
            "--policy-url",
            url,
            "--model",
            "fake",
            "--data",
            str(qa_file),
            "--concurrency",
            "3",
            "--out",
            str(tmp_path),
            "--topk",
            "5",
        ]
        assert main(argv) == 0
    row = json.loads((tmp_path / "summary.json").read_text())["datasets"]["hotpot-mini"]
    assert row["episodes"] == N and row["em"] == pytest.approx(4 / 6)  # WRONG and FLAKY miss
    assert row["tools"]["accesses"] == 1


def _status_app(status: int, body: dict, hits: list) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat():
        hits.append(1)
        return JSONResponse(body, status_code=status)

    return app


@pytest.mark.parametrize(
    "status,body,attempts",
    [
        (400, {"error": {"message": "bad", "type": "invalid_request_error"}}, 1),
        (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}, 1),
        (500, {"error": {"message": "x", "type": "invalid_request_error"}}, 1),
        (500, {"detail": [{"msg": "Input should be a valid string"}]}, 1),
        (500, {"error": {"message": "CUDA out of memory", "type": "server_error"}}, 3),
        (503, {"error": "loading"}, 3),
    ],
)
async def test_policy_client_reports_refusals_at_once(status, body, attempts):
    """A refused request (4xx, or a 500 whose body is a validation error) is not sent again."""
    from env.errors import PolicyError
    from env.policy import OpenAIClient, SamplingConfig
    from retriever.retry import RetryPolicy

    hits: list = []
    with ServerThread(_status_app(status, body, hits)) as url:
        client = OpenAIClient(url, "m", retry_policy=RetryPolicy(retries=2, backoff=0.01))
        try:
            with pytest.raises(PolicyError, match=str(status)):
                await client.chat([{"role": "user", "content": "q"}], [], SamplingConfig())
        finally:
            await client.aclose()
    assert len(hits) == attempts


async def test_policy_client_deadline_covers_the_whole_request():
    """A reply that trickles in (a byte every 0.3 s: no single read times out) is cut off at the
    client's timeout and sent again; the second answer is read."""
    import asyncio

    from fastapi.responses import StreamingResponse

    from env.policy import OpenAIClient, SamplingConfig
    from retriever.retry import RetryPolicy

    reply = {"choices": [{"index": 0, "message": {"content": "<answer>x</answer>"}}]}
    hits: list = []
    app = FastAPI()

    async def trickle():
        for byte in json.dumps(reply).encode():
            yield bytes([byte])
            await asyncio.sleep(0.3)

    @app.post("/v1/chat/completions")
    async def chat():
        hits.append(1)
        return StreamingResponse(trickle()) if len(hits) == 1 else reply

    with ServerThread(app) as url:
        policy = RetryPolicy(retries=1, backoff=0.01)
        client = OpenAIClient(url, "m", timeout=0.8, retry_policy=policy)
        try:
            text, _ = await client.chat([{"role": "user", "content": "q"}], [], SamplingConfig())
        finally:
            await client.aclose()
    assert text == "<answer>x</answer>" and len(hits) == 2


def test_chat_messages_per_style():
    """Tool messages carry the id of the call they answer (the server's when it made one); a
    turn without a tool call gets a user message; tag styles keep their wrapper."""
    from env.styles import get_style

    tc = get_style("tool-call")
    obs = tc.wrap("[Doc 1](u):\nx")
    call = '<think>t</think><tool_call>{"name": "search", "arguments": {"query": "q"}}</tool_call>'
    assistant, tool = tc.chat_messages(call, obs, None, turn=2)
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] == "call_2_0"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"query": "q"}
    assert assistant["content"] == "<think>t</think>" and tool["content"] == "[Doc 1](u):\nx"
    native = [{"id": "chatcmpl-tool-9", "type": "function", "function": {}}]
    assert tc.chat_messages(call, obs, native, turn=0)[1]["tool_call_id"] == "chatcmpl-tool-9"
    roles = [m["role"] for m in tc.chat_messages("no call", tc.invalid_observation("e"))]
    assert roles == ["assistant", "user"]
    two = call + call
    assert [m["role"] for m in tc.chat_messages(two, obs)] == ["assistant", "tool", "tool"]
    for name in ("asearcher", "search-r1"):
        style = get_style(name)
        user = style.chat_messages("<search>q</search>", style.wrap("body"))[1]
        assert user["role"] == "user" and user["content"].startswith("<information>")


def test_flags_take_their_defaults_from_the_configs():
    """No copied default literals: an empty command line gives the dataclasses' defaults, and
    the old flag names still work."""
    from env.evaluate import EvalConfig, build_parser, config_from_args
    from env.policy import SamplingConfig
    from env.types import EnvConfig

    base = ["--index", "x", "--policy-url", "http://p", "--model", "m", "--data", "a.jsonl"]
    cfg = config_from_args(build_parser().parse_args(base))
    assert cfg.env == EnvConfig() and cfg.sampling == SamplingConfig()
    assert cfg.concurrency == EvalConfig.concurrency and cfg.samples == 1
    old = ["--style", "search-r1", "--max-turns", "4", "--topk", "2", "--obs-max-chars", "99"]
    old += ["--page-chars", "7", "--max-context-chars", "500", "--reward", "em", "--top-p", "0.5"]
    old += ["--max-tokens", "9", "--samples", "3", "--concurrency", "5", "--limit", "2"]
    cfg = config_from_args(build_parser().parse_args(base + old))
    assert (cfg.env.style, cfg.env.max_turns, cfg.env.topk, cfg.env.obs_max_chars) == (
        "search-r1",
        4,
        2,
        99,
    )
    assert (cfg.env.page_chars, cfg.env.max_context_chars, cfg.env.reward) == (7, 500, "em")
    assert cfg.sampling == SamplingConfig(max_tokens=9, temperature=1.0, top_p=0.5)
    assert (cfg.samples, cfg.concurrency, cfg.limit) == (3, 5, 2)
    explicit = config_from_args(
        build_parser().parse_args(base + ["--samples", "3", "--temperature", "0.2"])
    )
    assert explicit.sampling.temperature == 0.2


@pytest.mark.parametrize(
    "text,choice,expected",
    [
        ("<answer>x", {"finish_reason": "stop"}, "<answer>x</answer>"),  # llama.cpp
        (
            "<search>a</search> <search>b",
            {"finish_reason": "stop"},
            "<search>a</search> <search>b</search>",
        ),
        ("<search>a</search>", {"finish_reason": "stop"}, "<search>a</search>"),  # nothing open
        ("<search>a", {"finish_reason": "stop", "stop_reason": None}, "<search>a"),  # vLLM: EOS
        ("<search>a", {"finish_reason": "stop", "matched_stop": 2}, "<search>a"),  # SGLang: EOS
        ("<search>a", {"finish_reason": "length"}, "<search>a"),  # ran out of tokens
        ("<search>a", {"finish_reason": "stop", "matched_stop": "</search>"}, "<search>a</search>"),
        (
            "<search>a</search>",
            {"finish_reason": "stop", "stop_reason": "</search>"},
            "<search>a</search>",
        ),
    ],
)
def test_restore_stop(text, choice, expected):
    from env.policy import restore_stop

    assert restore_stop(text, choice, ["</search>", "</access>", "</answer>"]) == expected


@pytest.mark.slow
def test_search_server_down_is_one_error_line(qa, tmp_path, capsys):
    """An outage of the search server ends the run with ``error: ...`` and exit 2, no traceback."""
    qa_file, tasks = qa
    app, _ = fake_openai(tasks, "vllm", "asearcher")
    with ServerThread(app) as url:
        argv = ["--server", f"http://127.0.0.1:{free_port()}", "--policy-url", url]
        argv += ["--model", "fake", "--data", str(qa_file), "--limit", "1", "--out", str(tmp_path)]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot reach" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('Sure. {"rationale": "same person", "judgement": "Correct"} done', True),
        ('{"judgment": "incorrect"}', False),
        ('{"judgement": "maybe"}', None),
        ("{not json}", None),
        ("no object at all", None),
        ('} {"judgement": "Correct"}', True),
    ],
)
def test_parse_judgement(reply, expected):
    from env.policy import parse_judgement

    assert parse_judgement(reply) is expected


def test_parse_judgement_is_linear_on_unclosed_braces():
    """A judge reply of 200k unclosed ``{`` (a greedy ``{.*}`` regex rescans the rest of the
    text from each of them: quadratic) is answered None at once."""
    import time

    from env.policy import parse_judgement

    for reply in ("{" * 200_000, '{"a": ' * 100_000 + "}", "[" * 100_000 + "{}" + "]" * 100_000):
        start = time.perf_counter()
        assert parse_judgement(reply) is None
        assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("top_p", ["1.5", "-0.1", "nan"])
def test_top_p_outside_zero_to_one_is_refused(top_p):
    """--top-p is a probability mass: above 1 is refused at start, naming the flag."""
    from env.evaluate import build_parser, config_from_args
    from retriever.errors import BadRequestError

    base = ["--index", "x", "--policy-url", "http://p", "--model", "m", "--data", "a.jsonl"]
    with pytest.raises(BadRequestError, match=r"--top-p .*<= 1"):
        config_from_args(build_parser().parse_args([*base, "--top-p", top_p]))
    assert config_from_args(build_parser().parse_args([*base, "--top-p", "1"])).sampling.top_p == 1
