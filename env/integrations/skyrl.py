"""SkyRL-gym: the search environment registered as ``skyrl_gym`` environment ``wikisearch``.

    import env.integrations.skyrl  # registers "wikisearch"
    e = skyrl_gym.make("wikisearch", env_config={"search_url": "http://127.0.0.1:8000"},
                       extras={"reward_spec": {"ground_truth": {"target": ["Paris"]}}, "max_turns": 4})
    prompt, _ = e.init([{"role": "user", "content": "What is the capital of France?"}])
    out = e.step("<search>capital of France</search>")   # observations, reward, done, metadata

SkyRL's generator builds it from the dataset's ``env_class: wikisearch`` column with the
``environment.skyrl_gym.wikisearch`` config section as ``env_config`` and the row's extras
(``reward_spec.ground_truth``, optional ``max_turns``, ``extra_info``).
``env_config``: ``search_url`` (a running ``python -m retriever.server``; ``/retrieve`` suffix
allowed) or ``index`` (an index root, searched in this process), ``style`` (asearcher,
search-r1, tool-call), ``topk``, ``reward`` (a reward spec, ``env.reward_spec``: a name,
``"f1:1,evidence_recall:0.5,search_cost:-0.05"`` or a dict; gold evidence for the evidence
rewards from the extras' ``supporting_titles`` / ``supporting_ids``, also in ``extra_info``),
``noise`` (``env.noise``: ``"hard-negative,p_end=0.5,steps=1000"`` or a dict; its curriculum
step is the extras' ``train_step``, also in ``extra_info``, default 0), ``max_chars``,
``page_chars``, ``prompt`` (``env``: the env's instructions and the question, the default;
``dataset``: the row's prompt).

No LLM-judge reward here: skyrl-gym 0.4.0's ``step`` is synchronous, per episode, and must
return a float, so there is neither a batched nor an async hook to judge many episodes at once,
nor a way to leave a flagged verdict out (see ``env.integrations.judge``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from retriever.queries import gold_evidence_of

from ..errors import ConfigError, TaskFormatError
from .scoring import answers_of

log = logging.getLogger(__name__)

ENV_ID = "wikisearch"
_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def _config_dict(env_config) -> dict:
    if env_config is None:
        return {}
    if isinstance(env_config, dict):
        return dict(env_config)
    try:  # omegaconf DictConfig (SkyRL's config)
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(env_config, resolve=True))
    except Exception:
        return dict(vars(env_config))


def shared_client(config: dict):
    """One search client per server URL or index root in this process (episodes are many)."""
    if config.get("search_url"):
        key = ("url", str(config["search_url"]).removesuffix("/retrieve").rstrip("/"))
    elif config.get("index"):
        key = ("index", str(config["index"]))
    else:
        raise ConfigError(
            "wikisearch env_config needs search_url (a running retriever.server) or index (an "
            "index root)"
        )
    with _clients_lock:
        if key not in _clients:
            from retriever.client import HTTPClient, InProcessClient

            if key[0] == "url":
                _clients[key] = HTTPClient(key[1], timeout=float(config.get("timeout", 60)))
            else:
                _clients[key] = InProcessClient(key[1])
        return _clients[key]


def _question(prompt: Any, extras: dict) -> str:
    extra = extras.get("extra_info") if isinstance(extras.get("extra_info"), dict) else {}
    if isinstance(extra.get("question"), str) and extra["question"].strip():
        return extra["question"].strip()
    if isinstance(prompt, str):
        return prompt.strip()
    users = [
        m.get("content") for m in prompt or [] if isinstance(m, dict) and m.get("role") == "user"
    ]
    text = str(users[-1]) if users else ""
    if "Question:" in text:
        text = text.rsplit("Question:", 1)[1]
    return text.strip()


def _base():
    from skyrl_gym.envs.base_text_env import BaseTextEnv

    return BaseTextEnv


class WikiSearchEnv(_base()):
    """``BaseTextEnv`` over ``env.SearchEnv``: ``init(prompt)`` starts the episode,
    ``step(action)`` returns SkyRL's ``{observations, reward, done, metadata}``."""

    def __init__(self, env_config=None, extras: dict | None = None, client=None):
        super().__init__()
        from ..search_env import SearchEnv

        config = _config_dict(env_config)
        extras = dict(extras or {})
        self.where = self._row_name(extras)
        spec = extras.get("reward_spec")
        if not isinstance(spec, dict) or "ground_truth" not in spec:
            raise TaskFormatError(
                f"{self.where}: extras need reward_spec.ground_truth (the answers)"
            )
        self.answers = answers_of(spec["ground_truth"], f"{self.where}: reward_spec.ground_truth")
        self.max_turns = int(extras.get("max_turns", config.get("max_turns", 4)))
        self.extras = extras
        self.prompt_mode = config.get("prompt", "env")
        if self.prompt_mode not in ("env", "dataset"):
            raise ConfigError(f"prompt must be 'env' or 'dataset', got {self.prompt_mode!r}")
        settings = {
            "style": config.get("style", "asearcher"),
            "topk": int(config.get("topk", 3)),
            "reward": config.get("reward", "f1"),
            "obs_max_chars": config.get("max_chars", 6000),
            "page_chars": int(config.get("page_chars", 4000)),
            "max_turns": self.max_turns,
        }
        if config.get("retriever"):
            settings["retriever"] = config["retriever"]
        if config.get("noise") is not None:  # env.noise.noise_config reads every form
            settings["noise"] = config["noise"]
        self.train_step = self._train_step(extras)
        self._env = SearchEnv(client if client is not None else shared_client(config), **settings)
        self._info: dict = {}
        self._started = False

    @staticmethod
    def _row_name(extras: dict) -> str:
        extra = extras.get("extra_info") if isinstance(extras.get("extra_info"), dict) else {}
        index = extra.get("index", extras.get("uid"))
        return f"wikisearch row {index}" if index is not None else "wikisearch row"

    def _train_step(self, extras: dict) -> int:
        """The noise curriculum's step: ``extras.train_step`` (or ``extra_info.train_step``);
        SkyRL's generator hands an env only its row's extras, so the step must come with them."""
        extra = extras.get("extra_info") if isinstance(extras.get("extra_info"), dict) else {}
        step = extras.get("train_step", extra.get("train_step", 0))
        try:
            value = int(step)
        except (TypeError, ValueError):
            value = -1
        if isinstance(step, bool) or value < 0 or value != step:
            raise TaskFormatError(f"{self.where}: train_step must be an integer >= 0, got {step!r}")
        return value

    def init(self, prompt):
        question = _question(prompt, self.extras)
        if not question:
            raise TaskFormatError(f"{self.where}: no question in the prompt or extra_info.question")
        titles, ids = gold_evidence_of(self.extras)  # extras or extras.extra_info
        options = {"question": question, "answers": list(self.answers)}
        options.update(supporting_titles=titles, supporting_ids=ids, train_step=self.train_step)
        _, info = self._env.reset(options=options)
        self._started, self.turns, self._info = True, 0, {}
        if self.prompt_mode == "dataset":
            return prompt, {"question": question}
        return info["messages"], {"question": question}

    def step(self, action: str) -> dict:
        if not self._started:
            raise TaskFormatError(f"{self.where}: call init(prompt) before step()")
        self.turns += 1
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._info = info
        done = bool(terminated or truncated)
        observations = [] if done or not obs else [{"role": "user", "content": obs}]
        metadata = {
            "action": info.get("action"),
            "error": info.get("error"),
            "rewards": dict(info.get("rewards") or {}),
            "prediction": info.get("prediction"),
        }
        return {
            "observations": observations,
            "reward": float(reward),
            "done": done,
            "metadata": metadata,
        }

    def get_metrics(self) -> dict[str, Any]:
        counts = self._info.get("counts") or {}
        rewards = self._info.get("rewards") or {}
        return {
            "searches": counts.get("search", 0),
            "accesses": counts.get("access", 0),
            "invalid": counts.get("invalid", 0),
            "answered": float(self._info.get("prediction") is not None),
            **{f"reward_{k}": v for k, v in rewards.items()},
        }

    def close(self) -> None:
        self._env.close()


def register() -> None:
    """Register ``wikisearch`` with skyrl_gym (done on import; safe to call again)."""
    import skyrl_gym

    if ENV_ID not in skyrl_gym.registry:
        skyrl_gym.register(id=ENV_ID, entry_point="env.integrations.skyrl:WikiSearchEnv")


register()
