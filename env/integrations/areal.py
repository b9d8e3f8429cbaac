"""AReaL 1.0 (ASearcher's own trainer): the search environment as an AReaL agent and workflow.

Agent form (how AReaL 1.0's ``examples/search_agent`` recipes run): ``ASearcherAgent`` is an
object with ``async def run(data, **extra_kwargs) -> float``. AReaL's ``OpenAIProxyWorkflow``
hands it ``base_url``, ``api_key`` (session-scoped) and ``http_client`` (inline mode), or sets
``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (subproc mode); its proxy records the tokens and
logprobs of every chat completion, and the float returned is the reward of the last one::

    trainer.train(workflow="env.integrations.areal.ASearcherAgent",
                  workflow_kwargs={"env": {"style": "asearcher", "reward": "f1:1,search_cost:-0.05"}})

Token-level form: ``ASearcherWorkflow`` is a ``RolloutWorkflow`` whose ``arun_episode(engine,
data)`` runs the same agent through AReaL's ``ArealOpenAI`` client over the inference engine
and returns the interactions with their rewards (built on first access: importing AReaL
imports torch).

Every episode goes through the env's own loop (``env.evaluate.run_episode``): the style's prompt
(ASearcher's agent prompt by default), its tool syntax (``asearcher``, ``search-r1``,
``tool-call``), its observations and budgets, and the reward spec of ``EnvConfig.reward``.
Searches go to ``python -m retriever.server`` at ``server`` or, when none is given, to every
server listed in ``$RAG_SERVER_ADDR_DIR`` (``--save-address-to``), as ASearcher finds them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from env.config import make_config
from env.errors import ConfigError, PolicyError
from env.evaluate import EvalConfig, run_episode
from env.policy import OpenAIClient, SamplingConfig, first_choice, message_text, restore_stop
from env.tasks import row_to_task
from env.types import EnvConfig

log = logging.getLogger(__name__)

__all__ = ["ASearcherAgent", "ArealChat"]  # and ASearcherWorkflow, built on first access


_HUB: list[logging.Logger] = []  # the AReaL logger ours hang under, once made


def follow_areal_logging() -> None:
    """Hang our modules' loggers (``env.*``, ``retriever.*``) under a logger AReaL made.

    AReaL's ``getLogger`` makes a new root and logger tree at every call, so a logger one of
    our modules made at import ends under a root with no handler, at WARNING: its INFO lines
    (a visit's cost, the servers found) were lost and its warnings printed bare. Once AReaL's
    logging is imported, each such logger gets as parent ``areal.utils.logging.getLogger("env")``
    (AReaL's console format and level, and its file handlers where AReaL set them up). The agent
    calls this when made and at each episode (modules imported since are picked up). Left alone:
    a logger under the current root (made after AReaL's last reset), or under a root that has
    handlers (logging the user set up before AReaL's first reset, or pytest's)."""
    areal_logging = sys.modules.get("areal.utils.logging")
    if areal_logging is None:
        return
    if not _HUB:
        hub = areal_logging.getLogger("env")
        hub.propagate = False  # its handlers print it; the root above it has none
        _HUB.append(hub)
    hub, root = _HUB[0], logging.Logger.root  # AReaL's latest (logging.root stays the first)
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] not in ("env", "retriever"):
            continue
        logger = getattr(module, "log", None)
        if not isinstance(logger, logging.Logger) or logger is hub or logger.parent is hub:
            continue
        top = logger
        while top.parent is not None:
            top = top.parent
        if top is not root and not top.handlers:  # orphaned, and nobody set its root up
            logger.parent = hub
            # its cached "is INFO on?" answers came from the old root
            getattr(logger, "_cache", {}).clear()


def _config(value: Any, cls: type, what: str) -> Any:
    """A frozen config from itself, a dict (the launcher YAML's ``workflow_kwargs``) or None."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**dict(value))
        except TypeError as exc:
            raise ConfigError(f"{what}: {exc}; see {cls.__name__}'s fields") from None
    raise ConfigError(f"{what} must be a {cls.__name__} or a dict, got {type(value).__name__}")


class ArealChat:
    """The policy client of the episode loop over AReaL's ``ArealOpenAI`` (the token-level
    form): each chat turn is one ``chat.completions.create`` that AReaL records with its tokens
    and logprobs."""

    def __init__(self, client: Any):
        self.client = client

    async def chat(
        self, messages: list[dict], stops: list[str], sampling: SamplingConfig, **extra
    ) -> tuple[str, dict]:
        completion = await self.client.chat.completions.create(
            messages=messages,
            stop=stops or None,
            max_completion_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            **extra,
        )
        choice = first_choice(completion.model_dump())
        return restore_stop(message_text(choice.get("message")), choice, stops), choice

    async def complete(self, prompt: str, stops: list[str], sampling: SamplingConfig, **extra):
        raise ConfigError("AReaL records chat completions only; run the agent in chat mode")

    async def aclose(self) -> None:
        """The ArealOpenAI client is the workflow's: nothing to close."""


class ASearcherAgent:
    """An AReaL agent (``async run(data, **extra_kwargs) -> float``) that runs one question of
    ``data`` (any QA row layout ``env.tasks.row_to_task`` reads) through the search env.

    ``server``: retrieval server URL(s); None reads ``$RAG_SERVER_ADDR_DIR`` at the first
    episode. ``search_client``: a ready client instead (in-process use, tests). ``env``,
    ``sampling``: ``EnvConfig`` / ``SamplingConfig`` or dicts of their fields. ``model``: the
    name sent to the endpoint (AReaL's proxy takes any; its examples send ``default``).
    ``policy_retries`` is 0 as in AReaL's own agents: a resent request would be recorded twice.
    """

    def __init__(
        self,
        server: str | Sequence[str] | None = None,
        *,
        env: EnvConfig | Mapping | None = None,
        sampling: SamplingConfig | Mapping | None = None,
        model: str = "default",
        policy_timeout: float = 600.0,
        policy_retries: int = 0,
        search_client: Any = None,
    ):
        # make_config: unknown keys and rewards are a ConfigError now, not at the first episode
        self.env = make_config(_config(env, EnvConfig, "env"))
        self.sampling = _config(sampling, SamplingConfig, "sampling")
        if not policy_timeout > 0 or policy_retries < 0:
            raise ConfigError(
                f"policy_timeout must be > 0 and policy_retries >= 0, "
                f"got {policy_timeout} and {policy_retries}"
            )
        self.server = [server] if isinstance(server, str) else server
        self.model = model
        self.policy_timeout = policy_timeout
        self.policy_retries = policy_retries
        self._search = search_client
        follow_areal_logging()

    def __getstate__(self) -> dict:
        """AReaL's subproc mode pickles the agent into worker processes: the HTTP search client
        (locks, sockets) stays behind and is made again there."""
        state = dict(self.__dict__)
        if self.server is not None or os.environ.get("RAG_SERVER_ADDR_DIR"):
            state["_search"] = None
        return state

    def search_client(self):
        """The retrieval client, made at first use (from ``server`` or the address folder)."""
        if self._search is None:
            from retriever.client import HTTPClient

            if self.server is not None:
                self._search = HTTPClient(list(self.server))
            elif os.environ.get("RAG_SERVER_ADDR_DIR"):
                self._search = HTTPClient.discover()
            else:
                raise ConfigError(
                    "no retrieval server: pass server=URL to ASearcherAgent or set "
                    "RAG_SERVER_ADDR_DIR to the folder retriever.server --save-address-to writes"
                )
            log.info("searching through %s", self._search.urls)
        return self._search

    def _eval_config(self, base_url: str) -> EvalConfig:
        return EvalConfig(
            data=(), model=self.model, policy_url=base_url, env=self.env, sampling=self.sampling
        )

    async def episode(self, data: Mapping, policy: Any, base_url: str = "") -> dict:
        """One episode of the QA row ``data`` with ``policy`` (``OpenAIClient`` or
        ``ArealChat``); its trajectory, with ``reward`` (the env's return: the reward spec
        minus format penalties). A policy failure raises ``PolicyError``: AReaL then rejects
        the trajectory instead of training on a reward the model did not earn."""
        from env.batched import BatchedSearchEnv

        follow_areal_logging()  # modules imported since, and AReaL's resets since
        task = row_to_task(dict(data), position="AReaL data row")
        # one slot per episode: concurrent episodes may run on different event loops (subproc
        # mode); the retrieval server coalesces their searches into batches
        benv = BatchedSearchEnv(self.search_client(), num_envs=1, config=self.env)
        trajectory = await run_episode(0, benv, policy, task, self._eval_config(base_url))
        if trajectory["policy_error"] is not None:
            raise PolicyError(
                f"question {task.id or task.question[:60]!r}: {trajectory['policy_error']}"
            )
        episode = benv.episodes[0]
        penalty = self.env.format_penalty * trajectory["counts"].get("invalid", 0)
        trajectory["reward"] = float(episode.reward_spec.score(trajectory["rewards"]) - penalty)
        return trajectory

    async def run(self, data: dict, **extra_kwargs: Any) -> float:
        """AReaL's agent entry point: the episode's reward as a float (AReaL sets it on the
        last completion and discounts it back over the earlier turns)."""
        openai_client = extra_kwargs.get("openai_client")  # ASearcherWorkflow's ArealOpenAI
        if openai_client is not None:
            return (await self.episode(data, ArealChat(openai_client)))["reward"]
        base_url = extra_kwargs.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ConfigError(
                "no policy endpoint: AReaL passes base_url (inline mode) or sets "
                "OPENAI_BASE_URL (subproc mode); set it when calling run() yourself"
            )
        api_key = extra_kwargs.get("api_key") or os.environ.get("OPENAI_API_KEY")
        policy = OpenAIClient(
            base_url,
            self.model,
            api_key=api_key,
            timeout=self.policy_timeout,
            retries=self.policy_retries,
            http_client=extra_kwargs.get("http_client"),
        )
        try:
            return (await self.episode(data, policy, base_url))["reward"]
        finally:
            await policy.aclose()


def _workflow_class() -> type:
    """``ASearcherWorkflow``, subclassing AReaL's ``RolloutWorkflow`` (imported here: AReaL's
    package imports torch)."""
    from areal.api.workflow_api import RolloutWorkflow

    class ASearcherWorkflow(RolloutWorkflow):
        """The token-level form: ``arun_episode(engine, data)`` runs ``ASearcherAgent``
        through AReaL's ``ArealOpenAI`` over ``engine`` and returns the recorded interactions,
        the last one holding the episode's reward. ``tokenizer``: a tokenizer or its path;
        the other keyword arguments are ``ASearcherAgent``'s."""

        def __init__(
            self,
            tokenizer: Any,
            *,
            export_style: str = "individual",
            turn_discount: float = 1.0,
            agent: ASearcherAgent | None = None,
            **agent_kwargs: Any,
        ):
            if isinstance(tokenizer, str):
                from areal.utils.hf_utils import load_hf_tokenizer

                tokenizer = load_hf_tokenizer(tokenizer)
            if export_style not in ("individual", "concat"):
                raise ConfigError(
                    f"export_style {export_style!r} is unknown; use individual or concat"
                )
            self.tokenizer = tokenizer
            self.export_style = export_style
            self.turn_discount = turn_discount
            self.agent = agent if agent is not None else ASearcherAgent(**agent_kwargs)

        async def arun_episode(self, engine: Any, data: dict[str, Any]) -> dict[str, Any]:
            from areal.experimental.openai import ArealOpenAI

            client = ArealOpenAI(engine=engine, tokenizer=self.tokenizer)
            reward = await self.agent.run(data, openai_client=client)
            client.set_last_reward(reward)
            client.apply_reward_discount(turn_discount=self.turn_discount)
            return client.export_interactions(style=self.export_style)

    ASearcherWorkflow.__module__ = __name__
    ASearcherWorkflow.__qualname__ = "ASearcherWorkflow"  # pickled and imported by this name
    return ASearcherWorkflow


_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "ASearcherWorkflow":
        if name not in _LAZY:
            _LAZY[name] = _workflow_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
