"""AReaL 1.0 glue (``env.integrations.areal``): the agent run exactly as AReaL's
``OpenAIProxyWorkflow`` runs it (inline: ``base_url``, session ``api_key``, shared
``http_client``; subproc: the pickled agent with ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``),
searches found through ``$RAG_SERVER_ADDR_DIR``; the token-level ``RolloutWorkflow`` through
AReaL's own ``ArealOpenAI`` over a real model; the launcher YAML through AReaL's config loader.

AReaL's proxy server itself is not started: it imports litellm and anthropic and needs a
generating inference engine, none of which is installed. The tests that import AReaL are
``slow`` (importing it imports torch and its trainer stack: about 20 s here)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REPO
from env_support import accessible_tasks, ensure_bm25
from policy_server import FLAKY, WRONG, ServerThread, fake_openai

from env.errors import ConfigError, PolicyError
from env.integrations.areal import ASearcherAgent
from env.types import STYLES
from retriever.addresses import write_address

REWARD = "f1:1,search_cost:-0.05"
YAML = REPO / "scripts" / "train" / "areal_asearcher_local.yaml"


@pytest.fixture(scope="module")
def env_root(hotpot_root):
    return ensure_bm25(hotpot_root)


@pytest.fixture(scope="module")
def rows(env_root):
    """(raw QA row, task) pairs: AReaL hands the agent its dataset's rows as they are."""
    chosen = accessible_tasks(env_root)
    return [(json.loads(line), task) for line, task in chosen]


@pytest.fixture(scope="module")
def address_dir(env_root, tmp_path_factory):
    """A real retrieval server, listed in an ASearcher address folder as ``--save-address-to``
    lists it."""
    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService, ServiceConfig

    folder = tmp_path_factory.mktemp("rag-addr")
    service = RetrievalService(ServiceConfig(index=str(env_root), warmup=False))
    with ServerThread(create_app(service, background=False)) as url:
        write_address(folder, "127.0.0.1", int(url.rsplit(":", 1)[1]))
        yield folder


def _with_keys(app, keys: list[str]):
    """Record the bearer token of every request (the session key AReaL hands the agent)."""

    @app.middleware("http")
    async def record(request, call_next):
        keys.append(request.headers.get("authorization"))
        return await call_next(request)

    return app


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("style", STYLES)
async def test_agent_runs_as_areal_inline_mode(rows, address_dir, tmp_path, monkeypatch, style):
    """Every tool style, searches through the discovered server, the reward spec's float back."""
    monkeypatch.setenv("RAG_SERVER_ADDR_DIR", str(address_dir))
    app, requests = fake_openai([t for _, t in rows], "vllm", style)
    keys: list[str] = []
    record = tmp_path / "episodes.jsonl"
    agent = ASearcherAgent(
        env={"style": style, "topk": 5, "reward": REWARD, "record_path": str(record)}
    )
    with ServerThread(_with_keys(app, keys)) as url:
        async with httpx.AsyncClient() as http:  # AReaL's workflow_context client
            rewards = [
                await agent.run(row, base_url=url + "/v1", http_client=http, api_key="session-7")
                for row, _ in rows
            ]
            assert not http.is_closed  # AReaL's client is AReaL's to close
    assert all(type(r) is float for r in rewards)  # OpenAIProxyWorkflow takes float or dict only
    assert set(keys) == {"Bearer session-7"} and requests["refused"] == 0
    episodes = _records(record)
    assert len(episodes) == len(rows) and all(e["terminated"] for e in episodes)
    for i, (reward, ep) in enumerate(zip(rewards, episodes)):
        assert ep["question"] == rows[i][1].question
        opened = ep["counts"].get("open" if style == "browser" else "access", 0)
        assert ep["counts"]["search"] == 2 and opened == (style != "search-r1")
        assert ep["rewards"]["search_cost"] >= 2
        assert reward == pytest.approx(ep["rewards"]["f1"] - 0.05 * ep["rewards"]["search_cost"])
        assert ep["rewards"]["f1"] == (0.0 if i in (WRONG, FLAKY) else 1.0)


async def test_agent_errors_name_the_fix(rows, tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_SERVER_ADDR_DIR", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    row = rows[0][0]
    with pytest.raises(ConfigError, match="RAG_SERVER_ADDR_DIR"):
        await ASearcherAgent().run(row, base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        await ASearcherAgent(server="http://127.0.0.1:1").run(row)
    with pytest.raises(ConfigError, match="toppk"):
        ASearcherAgent(env={"toppk": 3})
    with pytest.raises(ConfigError, match="reward"):
        ASearcherAgent(env={"reward": "f1:1,nonsense:2"})


async def test_policy_failure_rejects_the_trajectory(rows, address_dir, monkeypatch):
    """A refused policy request raises (AReaL then drops the trajectory) instead of reporting
    a 0 reward the model never earned."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    monkeypatch.setenv("RAG_SERVER_ADDR_DIR", str(address_dir))
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat():
        return JSONResponse({"error": {"message": "no", "type": "invalid_request_error"}}, 400)

    with ServerThread(app) as url:
        with pytest.raises(PolicyError, match="refused"):
            await ASearcherAgent().run(rows[0][0], base_url=url, api_key="k")


@pytest.mark.slow
def test_areal_proxy_workflow_takes_the_agent_in_both_modes(rows, address_dir, monkeypatch):
    """AReaL's own ``OpenAIProxyWorkflow`` accepts the agent; subproc mode's ``_wrap_run`` runs
    the pickled agent with the endpoint in the environment, as its process pool does."""
    from areal.experimental.openai.proxy.workflow import OpenAIProxyWorkflow, _wrap_run

    agent = ASearcherAgent(env={"reward": REWARD})
    for mode in ("inline", "subproc"):
        workflow = OpenAIProxyWorkflow(mode=mode, agent=agent, proxy_addr="http://proxy")
        assert workflow.agent is agent
    monkeypatch.setenv("RAG_SERVER_ADDR_DIR", str(address_dir))
    app, _ = fake_openai([t for _, t in rows], "sglang", "asearcher")
    keys: list[str] = []
    with ServerThread(_with_keys(app, keys)) as url:
        agent.search_client()  # made here, left behind by pickling
        copy = pickle.loads(pickle.dumps(agent))
        assert copy._search is None
        for key in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
            monkeypatch.setenv(key, "unset")  # restored after the test
        envs = {"OPENAI_BASE_URL": url + "/v1", "OPENAI_API_KEY": "session-9"}
        reward = _wrap_run(copy, rows[0][0], envs)
    # the right answer (f1 1) after two searches and one access: three tool calls of cost 0.05
    assert type(reward) is float and reward == pytest.approx(1.0 - 0.05 * 3)
    assert set(keys) == {"Bearer session-9"}


@pytest.mark.slow
def test_launcher_yaml_loads_with_areal_config_classes(monkeypatch):
    """The YAML through AReaL's own loader (``parse_cli_args`` and ``to_structured_cfg``, the
    steps of ``load_expr_config`` before it writes the config into the experiment folder)."""
    from areal.api.cli_args import parse_cli_args, to_structured_cfg
    from omegaconf import OmegaConf

    monkeypatch.syspath_prepend(str(YAML.parent))
    sys.modules.pop("areal_asearcher", None)
    import areal_asearcher

    raw, _ = parse_cli_args(["--config", str(YAML), "search_env.style=tool-call"])
    cfg = OmegaConf.to_object(to_structured_cfg(raw, areal_asearcher.ASearcherRLConfig))
    assert cfg.gconfig.n_samples == 16 and cfg.rollout.max_concurrent_rollouts == 128
    assert cfg.actor.reward_norm.group_size == 16 and cfg.scheduler.type == "local"
    assert cfg.rollout.agent.agent_cls_path == areal_asearcher.AGENT
    assert cfg.rollout.agent.mode == "inline"
    agent = ASearcherAgent(**areal_asearcher.agent_kwargs(cfg))
    assert agent.env.style == "tool-call" and agent.env.reward == REWARD
    assert agent.sampling.max_tokens == cfg.gconfig.max_new_tokens and agent.server is None
    module, name = areal_asearcher.AGENT.rsplit(".", 1)
    assert getattr(sys.modules[module], name) is ASearcherAgent


def test_import_env_integrations_areal_imports_no_areal():
    """The module imports AReaL (and torch) only when its RolloutWorkflow is asked for."""
    import subprocess

    code = (
        "import sys, env.integrations.areal; print('areal' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr[-500:]


_LOGGING = """
import logging
import env.evaluate as ev
import areal.utils.logging as al
al.getLogger("RolloutWorkflow").info("an AReaL line")  # AReaL resets the logging tree
ev.log.info("lost before")
from env.integrations.areal import ASearcherAgent
ASearcherAgent("http://127.0.0.1:1")
ev.log.info("info after")
ev.log.warning("warning after")
al.getLogger("Another")  # a later reset
ev.log.info("info after another reset")
"""


@pytest.mark.slow
def test_our_log_lines_reach_areals_handlers_after_its_resets():
    """AReaL's getLogger makes a new logging tree at every call: our modules' loggers hung off
    a root with no handler and their INFO lines were lost (the first probe). The agent hangs them
    under AReaL's console handler (fresh process: nobody else set logging up)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _LOGGING], capture_output=True, text=True,
                         timeout=300, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if "(AReaL)" in line]
    assert any("RolloutWorkflow INFO: an AReaL line" in line for line in lines), out.stdout
    assert "lost before" not in out.stdout + out.stderr
    for text in ("INFO: info after", "WARNING: warning after", "INFO: info after another reset"):
        assert any(f"env.evaluate {text}" in line for line in lines), out.stdout


@pytest.mark.slow
def test_loggers_under_a_root_with_handlers_are_left_alone():
    """Under pytest the first root has handlers (its log capture): ours keep their parents."""
    import logging

    import areal.utils.logging as areal_logging

    import env.evaluate as ev
    from env.integrations.areal import follow_areal_logging

    parent = ev.log.parent
    areal_logging.getLogger("RolloutWorkflow")  # a reset
    follow_areal_logging()
    assert ev.log.parent is parent and logging.getLogger().handlers
