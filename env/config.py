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
from .types import EnvConfig, Task


def make_config(config: EnvConfig | None = None, **overrides) -> EnvConfig:
    """An ``EnvConfig`` from a base config and keyword overrides (unknown keys are an error)."""
    config = config or EnvConfig()
    if not overrides:
        return config
    names = {f.name for f in dataclasses.fields(EnvConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown env settings {unknown}; known: {sorted(names)}")
    return dataclasses.replace(config, **overrides)


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
