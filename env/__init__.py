"""Gym-style search-agent environment over a ``retriever.protocol.SearchClient``.

``import env`` is light: no torch, faiss or index_build. ``gymnasium.make("wikisearch/Search-v0",
client=...)`` builds a ``SearchEnv``.
"""

from __future__ import annotations

import gymnasium as _gym

from .errors import ConfigError, EnvError, ResetNeededError, TaskFormatError
from .types import STYLES, Action, EnvConfig, Task
from .visit_config import VisitConfig

__version__ = "0.1.0"
ENV_ID = "wikisearch/Search-v0"

if ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="env.search_env:SearchEnv")


def __getattr__(name: str):
    # lazy: SearchEnv / BatchedSearchEnv pull in the parsing, formatting and reward modules
    if name == "SearchEnv":
        from .search_env import SearchEnv

        return SearchEnv
    if name == "BatchedSearchEnv":
        from .batched import BatchedSearchEnv

        return BatchedSearchEnv
    raise AttributeError(f"module 'env' has no attribute {name!r}")


__all__ = [
    "ENV_ID",
    "STYLES",
    "Action",
    "BatchedSearchEnv",
    "ConfigError",
    "EnvConfig",
    "EnvError",
    "ResetNeededError",
    "SearchEnv",
    "Task",
    "TaskFormatError",
    "VisitConfig",
]
