"""``SearchEnv``: one search-agent episode at a time, with Gymnasium's signatures.

No auto-reset: ``step`` after the episode ended raises ``ResetNeededError``. Malformed actions
never raise; they come back as an observation that says what was wrong.

    env = SearchEnv(client, style="asearcher"); obs, info = env.reset(options={"question": q, "answers": [a]})
    obs, reward, terminated, truncated, info = env.step("<search>...</search>")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from .config import episode_options, load_task_list, make_config
from .episode import Episode
from .errors import ConfigError, ResetNeededError
from .noise import negative_pool
from .tools import Plan, VisitBackend, arun_plan, plan_calls, run_plan
from .types import EnvConfig, Task
from .visit import Visitor, make_visitor


class TextSpace(gym.Space):
    """Any string up to ``max_length`` characters (observations and actions are free text)."""

    def __init__(self, max_length: int = 10**7, seed: int | None = None):
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        n = int(self.np_random.integers(0, 64))
        return "".join(chr(int(c)) for c in self.np_random.integers(32, 127, size=n))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace({self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, TextSpace) and other.max_length == self.max_length


class SearchEnv(gym.Env):
    """Search and page access as tools for a text policy; rewards scored at the answer.

    ``client``: any ``retriever.protocol.SearchClient`` (sync or async methods). ``tasks``: QA
    items (or a file) that ``reset`` draws from, seeded, when ``options`` has no question.
    Keyword settings override ``config`` (see ``EnvConfig``).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        client=None,
        config: EnvConfig | None = None,
        *,
        tasks: Sequence[Task] | str | None = None,
        render_mode: str | None = None,
        visitor: Visitor | None = None,
        **settings,
    ):
        self.config = make_config(config, **settings)
        self.client = client
        self.tasks = load_task_list(tasks)
        self.render_mode = render_mode
        self.observation_space = TextSpace()
        self.action_space = TextSpace()
        self.episode = Episode(self.config, negative_pool(self.config.noise, client))
        # visit (EnvConfig.visit): the tool's extractor, its cache and stats
        self.visitor = make_visitor(client, self.config, self.episode.style, visitor)
        self.backend = client if self.visitor is None else VisitBackend(client, self.visitor)
        self._closed = False

    def _options(self, options: dict | None) -> dict:
        missing = (
            "reset needs options={'question': ..., 'answers': [...]} or an env built with tasks="
        )
        return episode_options(options, self.tasks, self.np_random, missing)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        options = self._options(options)
        noise_seed = None
        if seed is None and self.config.noise is not None:  # drawn, so seeded runs repeat
            noise_seed = int(self.np_random.integers(1 << 62))
        return self.episode.reset(options, seed=seed, noise_seed=noise_seed)

    def _plan(self, action: str) -> Plan | None:
        """The backend plan of this action's tool call; None when the action calls no tool."""
        call = self.episode.prepare(action)
        if call is None:
            return None
        if self.client is None:
            raise ConfigError("this env has no search client; pass client= to SearchEnv")
        return plan_calls([call], self.config.search_k, self.config.retriever)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        plan = self._plan(action)
        return self.episode.finish(None if plan is None else run_plan(self.backend, plan)[0])

    async def areset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[str, dict]:
        return self.reset(seed=seed, options=options)

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """``step`` for coroutine trainers: an async client is awaited, a sync one runs in a thread."""
        plan = self._plan(action)
        return self.episode.finish(
            None if plan is None else (await arun_plan(self.backend, plan))[0]
        )

    def trajectory(self) -> dict:
        """The current (or last) episode as a JSON-able dict."""
        if not self.episode.active:
            raise ResetNeededError("no episode yet: call reset() first")
        return self.episode.trajectory()

    def render(self) -> str | None:
        if self.render_mode != "ansi" or not self.episode.active:
            return None
        parts = [self.episode.prompt]
        for turn in self.episode.turns:
            parts += [turn["action"], turn["observation"]]
        return "".join(parts)

    def close(self) -> None:
        """Safe to call twice; the client is the caller's and stays open (the visitor's HTTP
        pool of a sync ``step`` is closed)."""
        if isinstance(self.backend, VisitBackend):
            self.backend.close()
        self._closed = True
