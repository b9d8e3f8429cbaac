"""The LLM judge of ``env.evaluate`` as a training reward: batched, cached, bounded, flagged.

``JudgeReward(url, model).score(items)`` asks the judge (``env.policy.judge``) about many
(question, answers, prediction) items at once: at most ``concurrency`` requests in flight, each
cut after ``timeout`` seconds. Verdicts are cached by a hash of (question, answers, prediction,
judge model, prompt text), in memory and optionally in a JSONL file, so a repeated item makes no
request. A failed request or a reply out of format gives ``None``: the sample is flagged, left
out of the reward (never scored 0 silently) and counted in ``stats`` and the log. An item with no
prediction (the policy never answered) scores 0.0 without asking.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from .answer_cache import append_answer, load_answers
from .errors import ConfigError
from .policy import JUDGE_PROMPT, OpenAIClient, judge

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JudgeItem:
    """One sample to judge."""

    question: str
    answers: tuple[str, ...]
    prediction: str | None


@dataclass
class JudgeStats:
    """Counts since the judge was made: requests sent, cache hits, flagged samples (failed or
    out-of-format verdicts, left out of the reward)."""

    requests: int = 0
    cache_hits: int = 0
    flagged: int = 0
    judged: int = field(default=0)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "flagged": self.flagged,
            "judged": self.judged,
        }


def cache_key(item: JudgeItem, model: str, prompt: str) -> str:
    """The cache key of one judgement: a hash of everything that decides the verdict.

    >>> a = cache_key(JudgeItem("q", ("a",), "p"), "m", "P")
    >>> a == cache_key(JudgeItem("q", ("a",), "p"), "m", "P"), a == cache_key(JudgeItem("q", ("a",), "p"), "m2", "P")
    (True, False)
    """
    blob = json.dumps([item.question, list(item.answers), item.prediction, model, prompt])
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class JudgeReward:
    """1.0 / 0.0 per sample from an OpenAI-compatible judge model; None for a flagged sample.

    ``concurrency``: judge requests in flight at most; ``timeout``: seconds one request may take
    in all (the client's retries included); ``cache_path``: a JSONL file of verdicts, read at
    start and appended to; ``prompt``: the judge prompt (``env.policy.JUDGE_PROMPT``'s fields).
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 60.0,
        retries: int = 1,
        cache_path: str | os.PathLike | None = None,
        prompt: str = JUDGE_PROMPT,
    ):
        if concurrency < 1 or not timeout > 0:
            raise ConfigError(
                f"judge concurrency must be >= 1 and timeout > 0, got {concurrency} and {timeout}"
            )
        self.url, self.model, self.api_key = url, model, api_key
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.prompt = prompt
        self.cache_path = os.fspath(cache_path) if cache_path is not None else None
        self.cache: dict[str, bool] = {}
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        if self.cache_path and os.path.exists(self.cache_path):
            self._load_cache()

    def _load_cache(self) -> None:
        self.cache.update(load_answers(self.cache_path, "verdict", bool, "a judge verdict"))

    def _remember(self, key: str, verdict: bool) -> None:
        with self._lock:
            self.cache[key] = verdict
            if self.cache_path:
                append_answer(self.cache_path, key, "verdict", verdict)

    async def ascore(self, items: Sequence[JudgeItem]) -> list[float | None]:
        """The reward of each item: 1.0 correct, 0.0 wrong or unanswered, None flagged."""
        out: list[float | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            if item.prediction is None:
                out[i] = 0.0
                continue
            key = cache_key(item, self.model, self.prompt)
            if key in self.cache:
                self.stats.cache_hits += 1
                out[i] = float(self.cache[key])
            else:
                todo.setdefault(key, []).append(i)  # the same item twice: one request
        if todo:
            gate = asyncio.Semaphore(self.concurrency)
            client = OpenAIClient(
                self.url, self.model, api_key=self.api_key, timeout=self.timeout,
                retries=self.retries, max_connections=self.concurrency,
            )  # fmt: skip
            try:
                verdicts = await asyncio.gather(
                    *(self._ask(client, gate, items[idxs[0]]) for idxs in todo.values())
                )
            finally:
                await client.aclose()
            for (key, idxs), verdict in zip(todo.items(), verdicts):
                if verdict is not None:
                    self._remember(key, verdict)
                for i in idxs:
                    out[i] = None if verdict is None else float(verdict)
        flagged = sum(v is None for v in out)
        self.stats.flagged += flagged
        self.stats.judged += len(items) - flagged
        if flagged:
            log.warning("judge %s: %d of %d samples flagged (failed or out of format); "
                        "left out of the reward", self.model, flagged, len(items))  # fmt: skip
        return out

    async def _ask(self, client: OpenAIClient, gate: asyncio.Semaphore, item: JudgeItem):
        async with gate:
            self.stats.requests += 1
            try:
                async with asyncio.timeout(self.timeout):
                    verdict, reply = await judge(
                        client, item.question, list(item.answers), item.prediction, self.prompt
                    )
            except TimeoutError:
                log.warning("judge %s: no verdict within %g s", self.model, self.timeout)
                return None
            if verdict is None:
                log.debug("judge reply out of format: %.200s", reply)
            return verdict

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]:
        """``ascore`` for sync callers (verl reward functions): runs in its own event loop (in a
        thread when the caller already runs one)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ascore(items))
        result: list = []
        thread = threading.Thread(target=lambda: result.append(asyncio.run(self.ascore(items))))
        thread.start()
        thread.join()
        return result[0]
