"""``BatchedSearchEnv``: N episodes stepped together; all searches of a step are ONE backend call.

    benv = BatchedSearchEnv(client, num_envs=64, style="search-r1")
    obs, infos = benv.reset(options=[task.options() for task in batch])
    obs, rewards, terminated, truncated, infos = benv.step(texts)   # None skips an episode

Coroutine trainers that run one coroutine per episode call ``astep_one(i, text)``: concurrent
calls are coalesced into one backend call per event-loop round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from .config import episode_options, load_task_list, make_config
from .episode import Episode
from .errors import ConfigError, ResetNeededError
from .noise import negative_pool
from .tools import Call, VisitBackend, arun_plan, plan_calls, run_plan
from .types import EnvConfig, Task
from .visit import Visitor, make_visitor

StepBatch = tuple[list[str], list[float], list[bool], list[bool], list[dict]]


class BatchedSearchEnv:
    """N independent episodes sharing one client and one config. No auto-reset."""

    def __init__(
        self,
        client=None,
        num_envs: int = 1,
        config: EnvConfig | None = None,
        *,
        tasks: Sequence[Task] | str | None = None,
        visitor: Visitor | None = None,
        **settings,
    ):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        self.config = make_config(config, **settings)
        self.client = client
        self.num_envs = num_envs
        self.tasks = load_task_list(tasks)
        pool = negative_pool(self.config.noise, client)
        self.episodes = [Episode(self.config, pool) for _ in range(num_envs)]
        # visit (EnvConfig.visit): one visitor, its cache and stats shared by the episodes
        self.visitor = make_visitor(client, self.config, self.episodes[0].style, visitor)
        self.backend = client if self.visitor is None else VisitBackend(client, self.visitor)
        self._rng = np.random.default_rng()
        self._pending: list[tuple[int, Call, asyncio.Future]] = []
        self._flush_scheduled = False

    def __len__(self) -> int:
        return self.num_envs

    # ---- reset ----------------------------------------------------------------------------
    def _option_for(self, options: dict | None) -> dict:
        missing = "reset needs one options dict with a 'question' per episode, or tasks="
        return episode_options(options, self.tasks, self._rng, missing)

    def reset(
        self,
        *,
        seed: int | None = None,
        options: Sequence[dict | None] | None = None,
        indices: Sequence[int] | None = None,
    ) -> tuple[list[str], list[dict]]:
        """Reset the episodes at ``indices`` (default: all); ``options[j]`` goes to ``indices[j]``.

        With ``seed``, tasks drawn from ``tasks=`` are the same every time.
        """
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        if options is not None and len(options) != len(indices):
            raise ConfigError(
                f"{len(options)} options for {len(indices)} episodes; give one per episode"
            )
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        obs, infos = [], []
        for j, i in enumerate(indices):
            option = self._option_for(None if options is None else options[j])
            noise_seed = None
            if seed is None and self.config.noise is not None:  # drawn, so seeded runs repeat
                noise_seed = int(self._rng.integers(1 << 62))
            o, info = self.episodes[i].reset(
                option, seed=None if seed is None else seed + j, noise_seed=noise_seed
            )
            obs.append(o)
            infos.append(info)
        return obs, infos

    async def areset(self, **kwargs) -> tuple[list[str], list[dict]]:
        return self.reset(**kwargs)

    # ---- step -----------------------------------------------------------------------------
    def _prepare(self, actions: Sequence[str | None]) -> list[Call | None]:
        if len(actions) != self.num_envs:
            raise ConfigError(
                f"{len(actions)} actions for {self.num_envs} episodes; use None to skip one"
            )
        # the caller's mistakes are found before any episode takes its action: a step either
        # takes every action or none
        for i, (episode, action) in enumerate(zip(self.episodes, actions)):
            if action is not None and (not episode.active or episode.done):
                raise ResetNeededError(
                    f"episode {i} has not been reset or has ended; reset it or pass None for it"
                )
        calls = [
            None if action is None else episode.prepare(action)
            for episode, action in zip(self.episodes, actions)
        ]
        if any(c is not None for c in calls) and self.client is None:
            raise ConfigError("this env has no search client; pass client= to BatchedSearchEnv")
        return calls

    def _finish(self, actions, results) -> StepBatch:
        obs, rewards, terminated, truncated, infos = [], [], [], [], []
        for episode, action, result in zip(self.episodes, actions, results):
            if action is None:
                obs.append("")
                rewards.append(0.0)
                terminated.append(bool(episode.active and episode.terminated))
                truncated.append(bool(episode.active and episode.truncated))
                infos.append({"skipped": True})
                continue
            o, r, te, tr, info = episode.finish(result)
            obs.append(o)
            rewards.append(r)
            terminated.append(te)
            truncated.append(tr)
            infos.append(info)
        return obs, rewards, terminated, truncated, infos

    def _plan(self, calls):
        cfg = self.config
        return plan_calls(calls, cfg.search_k, cfg.retriever)

    def step(self, actions: Sequence[str | None]) -> StepBatch:
        """One turn of every episode whose action is not None (stepping an ended one raises)."""
        calls = self._prepare(actions)
        results = run_plan(self.backend, self._plan(calls)) if any(calls) else [None] * len(calls)
        return self._finish(actions, results)

    async def astep(self, actions: Sequence[str | None]) -> StepBatch:
        calls = self._prepare(actions)
        results = (
            await arun_plan(self.backend, self._plan(calls)) if any(calls) else [None] * len(calls)
        )
        return self._finish(actions, results)

    async def astep_one(self, i: int, action: str) -> tuple[str, float, bool, bool, dict]:
        """Step episode ``i`` from its own coroutine; concurrent calls share backend calls."""
        episode = self.episodes[i]
        call = episode.prepare(action)
        if call is None:
            return episode.finish(None)
        if self.client is None:
            raise ConfigError("this env has no search client; pass client= to BatchedSearchEnv")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((i, call, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().create_task(self._flush())
        return episode.finish(await future)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every coroutine that is ready this round add its call
        pending, self._pending, self._flush_scheduled = self._pending, [], False
        try:
            results = await arun_plan(self.backend, self._plan([c for _, c, _ in pending]))
        except BaseException as exc:  # every waiter is answered, also when the backend fails
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(pending, results):
            if not future.done():
                future.set_result(result)

    def trajectories(self) -> list[dict]:
        return [e.trajectory() for e in self.episodes if e.active]

    def close(self) -> None:
        """Safe to call twice; the client is the caller's (the visitor's HTTP pool of a sync
        ``step`` is closed here; ``aclose`` closes it after ``astep``)."""
        if isinstance(self.backend, VisitBackend):
            self.backend.close()

    async def aclose(self) -> None:
        """``close`` for coroutine trainers: also closes the visitor's HTTP pool of this loop."""
        self.close()
        if self.visitor is not None:
            await self.visitor.aclose()
