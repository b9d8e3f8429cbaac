"""How an env is set up, shared by ``SearchEnv`` and ``BatchedSearchEnv``: the config with its
keyword overrides, the task list, and one episode's reset options.

Kept apart from ``env.search_env`` so that the batched env, which steps ``Episode`` objects
itself, does not import the Gymnasium env (a layer above it; see ``[tool.importlinter]``).

>>> make_config(topk=5).topk
5
>>> episode_options({"question": "q?", "answers": ["a"]}, [], None, "unused")["question"]
'q?'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from .errors import ConfigError
from .reward_spec import parse_reward_spec
from .types import EnvConfig, Task


def make_config(config: EnvConfig | None = None, **overrides) -> EnvConfig:
    """An ``EnvConfig`` from a base config and keyword overrides (unknown keys are an error),
    its reward spec checked (``ConfigError`` naming an unknown reward) and a dict spec kept as
    its string form, so the config stays hashable.

    >>> make_config(reward={"f1": 1, "search_cost": -0.05}).reward
    'f1:1,search_cost:-0.05'
    """
    config = config or EnvConfig()
    if overrides:
        names = {f.name for f in dataclasses.fields(EnvConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown env settings {unknown}; known: {sorted(names)}")
        config = dataclasses.replace(config, **overrides)
    spec = parse_reward_spec(config.reward)
    if not isinstance(config.reward, str):
        config = dataclasses.replace(config, reward=str(spec))
    return config


def load_task_list(tasks: Sequence[Task] | str | os.PathLike | None) -> list[Task]:
    """The tasks an env draws from: a list as given, or the tasks of a QA file."""
    if tasks is None:
        return []
    if isinstance(tasks, str | os.PathLike):
        from .tasks import load_tasks

        return load_tasks(tasks)
    return list(tasks)


def episode_options(options: dict | None, tasks: Sequence[Task], rng, missing: str) -> dict:
    """One episode's reset options: ``options`` when it names a question, else a task drawn with
    ``rng`` (a numpy Generator) and ``options`` over it; ``ConfigError(missing)`` with neither."""
    if options and "question" in options:
        return options
    if not tasks:
        raise ConfigError(missing)
    task = tasks[int(rng.integers(len(tasks)))]
    return {**task.options(), **(options or {})}
