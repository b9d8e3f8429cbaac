"""``python -m env.evaluate`` against a scripted fake OpenAI-compatible server that behaves as
vLLM and SGLang do: a matched stop string is cut from the text and named in the reply."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter

import pytest
import uvicorn
from env_support import HOTPOT, ensure_bm25, gold_titles
from fastapi import FastAPI, Request

from env.evaluate import main, stop_strings

N = 6
WRONG = 5  # the policy answers this question wrongly every time
FLAKY = 4  # ... and this one wrongly the first time it is asked
GARBLED = 3  # the judge answers this one with text that is not JSON


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    def __init__(self, app):
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def apply_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """Cut at the earliest stop string, as inference servers do; return (text, matched)."""
    best = None
    for s in stops or []:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return (text, None) if best is None else (text[: best[0]], best[1])


def fake_openai(tasks, flavour: str, style: str) -> tuple[FastAPI, Counter]:
    """A scripted policy (and judge) keyed by question."""
    by_question = {t.question: (i, t) for i, t in enumerate(tasks)}
    asked: Counter = Counter()
    requests: Counter = Counter()
    app = FastAPI()

    def policy_turn(question: str, n_obs: int) -> str:
        i, task = by_question[question]
        titles = gold_titles(task)
        calls = [("search", titles[0]), ("search", titles[1])]
        if style != "search-r1":
            calls.append(("access", titles[1]))
        if n_obs < len(calls):
            name, arg = calls[n_obs]
            if style == "tool-call":
                key = "query" if name == "search" else "url"
                body = json.dumps({"name": name, "arguments": {key: arg}})
                return f"<think>step {n_obs}</think>\n<tool_call>\n{body}\n</tool_call>\n<tool_response>made up"
            return f"<think>step {n_obs}</think>\n<{name}> {arg} </{name}>\n\n<information>made up</information>"
        asked[question] += 1
        answer = task.answers[0]
        if i == WRONG or (i == FLAKY and asked[question] == 1):
            answer = "something else entirely"
        return f"<think>done</think>\n<answer> {answer} </answer> and then some"

    def judge_turn(prompt: str) -> str:
        question = re.search(r"Question: (.*)\n", prompt).group(1)
        gold = json.loads(re.search(r"Gold answers: (.*)\n", prompt).group(1))
        pred = re.search(r"Predicted answer: (.*)\n", prompt).group(1)
        if by_question[question][0] == GARBLED:
            return "Hmm, I would say it is probably right."
        verdict = "Correct" if pred.strip().lower() in [g.lower() for g in gold] else "Incorrect"
        return f'```json\n{{"rationale": "compared", "judgement": "{verdict}"}}\n```'

    def choice(text: str, stops, key: str) -> dict:
        text, matched = apply_stop(text, stops)
        out = {"index": 0, key: text, "finish_reason": "stop"}
        if flavour == "vllm":
            out["stop_reason"] = matched
        else:
            out["matched_stop"] = matched if matched is not None else 151645  # an EOS id
        return out

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        requests["chat"] += 1
        messages = body["messages"]
        if body["model"] == "judge":
            text = judge_turn(messages[-1]["content"])
        else:
            assert body["stop"] == stop_strings(style)
            first_user = next(m["content"] for m in messages if m["role"] == "user")
            question = re.search(r"Question: (.*)", first_user).group(1).strip()
            n_obs = sum(
                1
                for m in messages[1:]
                if m["role"] in ("user", "tool") and m["content"] != first_user
            )
            for m in messages:
                if m["role"] == "assistant":  # the env re-appended the stop the server cut
                    assert m["content"].rstrip().endswith(tuple(stop_strings(style))), m["content"]
            text = policy_turn(question, n_obs)
        c = choice(text, body.get("stop"), "message")
        c["message"] = {"role": "assistant", "content": c.pop("message")}
        return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [c]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        requests["completions"] += 1
        prompt = body["prompt"]
        question = re.search(r"Question: (.*)", prompt).group(1).strip()
        n_obs = (
            prompt.count("<information>")
            + prompt.count("<tool_response>")
            - prompt.count("between <information>")
        )
        n_obs -= prompt.count("<tool_response>made up")
        text = policy_turn(question, n_obs)
        return {
            "id": "x",
            "object": "text_completion",
            "choices": [choice(text, body.get("stop"), "text")],
        }

    return app, requests


def accessible_tasks(root, n=N):
    """The first ``n`` questions whose gold pages are all in the corpus under their titles."""
    from env.tasks import row_to_task
    from retriever.store.docstore import DocStore

    store = DocStore.open(root)
    out = []
    for line in open(HOTPOT, encoding="utf-8"):
        task = row_to_task(json.loads(line))
        if all(store.page(t) is not None for t in gold_titles(task)):
            out.append((line, task))
        if len(out) == n:
            return out
    raise AssertionError("not enough questions")


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
