"""``visit(url, goal)``: a page read by an extractor model that keeps what the goal needs.

Long-horizon web agents (Tongyi DeepResearch, ASearcher's web agent) do not show the policy a
raw page: a second, OpenAI-compatible model reads it with the agent's goal and answers a JSON
object with the ``evidence`` (passages quoted from the page) and a ``summary``. ``Visitor``
does that over our own pages (the ``access`` backend):

- the page sent to the extractor is bounded in tokens (``max_input_tokens``; counted with a
  tokenizer when given, else estimated at ``CHARS_PER_TOKEN`` characters a token);
- a reply out of format, or a refusal because the input is too long, is retried with the page
  cut shorter (``shrink``), ``retries`` times; then it is a tool error;
- a model that fails (timeout, connection lost, refused after the client's retries) is a tool
  error the policy sees, never an empty success;
- results are cached by (url, goal, model, prompt) in memory and optionally a JSONL file;
- every extractor call is logged with its cost (tokens from the reply's ``usage``, seconds) and
  counted in ``stats``.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import formatting as fmt
from .answer_cache import append_answer, load_answers
from .errors import ConfigError, PolicyError
from .policy import OpenAIClient, SamplingConfig, json_object_in
from .types import VISIT, EnvConfig
from .visit_config import VISIT_PROMPT, VisitConfig  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # the estimate when no tokenizer is given (English prose, BPE vocabularies)
MAX_GOAL_CHARS = 2000
MAX_URL_CHARS = 2000
_TOO_LONG = ("context length", "context_length", "too long", "maximum context", "too many tokens")


@dataclass
class VisitResult:
    """What a visit returned: the observation ``text``, or ``error`` (the tool error the
    policy is shown), plus the extracted fields and how the answer came about."""

    url: str
    goal: str
    text: str = ""
    error: str | None = None
    evidence: str = ""
    summary: str = ""
    title: str = ""
    cached: bool = False
    tries: int = 0
    page_tokens: int = 0
    # what this visit's extractor calls cost (0 for a cache hit): the env records it per turn
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def cost(self) -> dict:
        """The visit's cost and cache use, as a trajectory records it."""
        return {
            "cached": self.cached,
            "tries": self.tries,
            "page_tokens": self.page_tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 4),
        }

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VisitStats:
    """Counts since the visitor was made: extractor calls and their cost."""

    visits: int = 0
    cache_hits: int = 0
    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def cache_key(url: str, goal: str, model: str, prompt: str) -> str:
    """The cache key of one visit: a hash of what decides the extractor's answer.

    >>> cache_key("u", "g", "m", "P") == cache_key("u", "g", "m", "P"), cache_key("u", "g", "m", "P") == cache_key("u", "g2", "m", "P")
    (True, False)
    """
    blob = json.dumps([url, goal, model, prompt], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def parse_extraction(text: str) -> dict | None:
    """The ``evidence`` and ``summary`` of an extractor reply (a JSON object, possibly in a code
    fence or after some words); None when the reply is out of format.

    >>> parse_extraction('```json\\n{"rationale": "r", "evidence": "e", "summary": "s"}\\n```')
    {'evidence': 'e', 'summary': 's'}
    >>> parse_extraction('{"evidence": ["a", "b"], "summary": "s"}')
    {'evidence': 'a\\nb', 'summary': 's'}
    >>> parse_extraction("the page says yes") is None, parse_extraction('{"summary": ""}') is None
    (True, True)
    """
    obj = json_object_in(text)
    if obj is None:
        return None
    out = {}
    for key in ("evidence", "summary"):
        value = obj.get(key, "")
        if isinstance(value, list):
            value = "\n".join(str(v) for v in value)
        if not isinstance(value, str):
            return None
        out[key] = value.strip()
    return out if out["summary"] else None


def render(url: str, title: str, goal: str, evidence: str, summary: str) -> str:
    """The observation of a successful visit (the shape of Tongyi's visit tool)."""
    name = f"{url} ({title})" if title and title != url else url
    return (
        f"The useful information in {name} for the goal {goal!r}:\n\n"
        f"Evidence in page:\n{evidence or '(none)'}\n\nSummary:\n{summary}"
    )


def check_visit_args(url: object, goal: object) -> str | None:
    """What is wrong with a visit's arguments (a message for the policy), or None.

    >>> check_visit_args("https://en.wikipedia.org/wiki/Paris", "population")
    >>> print(check_visit_args("", "x"))
    visit needs a url: a non-empty string (a URL from the search results), got ''
    """
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_CHARS:
        shown = repr(url)[:100]
        return f"visit needs a url: a non-empty string (a URL from the search results), got {shown}"
    if not isinstance(goal, str) or not goal.strip():
        return f"visit needs a goal: a non-empty string saying what to look for, got {goal!r:.100}"
    if len(goal) > MAX_GOAL_CHARS:
        return f"the visit goal has {len(goal)} characters; say it in at most {MAX_GOAL_CHARS}"
    return None


class Visitor:
    """``await visitor.visit(url, goal)`` over a search client's ``access`` and an extractor
    model. One visitor per process: it holds the cache, the stats and the HTTP pool."""

    def __init__(self, client: Any, config: VisitConfig, *, tokenizer: Any = None):
        self.client, self.config, self.tokenizer = client, config, tokenizer
        self.stats = VisitStats()
        self.cache: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._gate: asyncio.Semaphore | None = None
        self._extractor: OpenAIClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the HTTP pool
        self._sync_loop: asyncio.AbstractEventLoop | None = None  # the loop of ``run``
        if config.cache_path and os.path.exists(config.cache_path):
            self._load_cache()

    # ---- cache ----------------------------------------------------------------------------
    def _load_cache(self) -> None:
        self.cache.update(load_answers(self.config.cache_path, "result", dict, "a visit result"))

    def _remember(self, key: str, result: VisitResult) -> None:
        fields = {k: getattr(result, k) for k in ("text", "evidence", "summary", "title")}
        with self._lock:
            self.cache[key] = fields
            if self.config.cache_path:
                append_answer(self.config.cache_path, key, "result", fields)

    # ---- the tool -------------------------------------------------------------------------
    async def visit(self, url: object, goal: object) -> VisitResult:
        """The goal's evidence and summary from the page at ``url``; a ``VisitResult`` whose
        ``error`` says what went wrong when it could not be had (never raises for bad input
        or a failed model; a search-backend outage does raise, as in ``env.tools``)."""
        self.stats.visits += 1
        problem = check_visit_args(url, goal)
        if problem is not None:
            return VisitResult(str(url)[:MAX_URL_CHARS], str(goal)[:MAX_GOAL_CHARS], error=problem)
        url, goal = url.strip(), " ".join(goal.split())
        key = cache_key(url, goal, self.config.model, self.config.prompt)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return VisitResult(url, goal, cached=True, **hit)
        page = await self._page(url)
        if page is None:
            return VisitResult(
                url,
                goal,
                error=f"no page found for {url!r:.200}; use a URL from the search results",
            )
        result = await self._extract(url, goal, page)
        if result.ok:
            self._remember(key, result)
        else:
            self.stats.failures += 1
        return result

    async def _page(self, url: str) -> dict | None:
        """The page's text, enough of it to fill the input bound (an unknown url: None)."""
        limit = self.config.max_input_tokens * CHARS_PER_TOKEN * 2
        for kwargs in ({"urls": [url]}, {"titles": [url]}):
            pages = await self._access(**kwargs, offset=0, max_chars=limit)
            if isinstance(pages, list) and pages and isinstance(pages[0], dict):
                return pages[0]
        return None

    async def _access(self, **kwargs) -> list | None:
        afn = getattr(self.client, "aaccess", None)
        try:
            if afn is not None and inspect.iscoroutinefunction(afn):
                return await afn(**kwargs)
            return await asyncio.to_thread(self.client.access, **kwargs)
        except ValueError as exc:  # a refused request (bad url): no page
            log.debug("visit: access refused %s: %s", kwargs, exc)
            return None

    def _budget(self, tokens: int) -> fmt.Budget:
        if self.tokenizer is not None:
            return fmt.Budget(max_tokens=tokens, tokenizer=self.tokenizer)
        return fmt.Budget(max_chars=tokens * CHARS_PER_TOKEN)

    def _client(self) -> OpenAIClient:
        loop = asyncio.get_running_loop()
        if self._extractor is not None and self._loop is not loop:
            # an HTTP pool belongs to the loop it was made on (e.g. an env stepped both with
            # step and astep): the visitor makes another for this loop
            log.debug("visit: a new extractor client for another event loop")
            self._extractor = None
        if self._extractor is None:
            cfg = self.config
            self._loop = loop
            self._extractor = OpenAIClient(
                cfg.url, cfg.model, api_key=cfg.api_key, timeout=cfg.timeout, retries=1,
                max_connections=cfg.concurrency,
            )  # fmt: skip
            self._gate = asyncio.Semaphore(cfg.concurrency)
        return self._extractor

    async def _extract(self, url: str, goal: str, page: dict) -> VisitResult:
        cfg = self.config
        client = self._client()
        title = str(page.get("title") or "")
        text = str(page.get("contents") or "")
        tokens = cfg.max_input_tokens
        why = ""
        spent = {"prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}
        for attempt in range(cfg.retries + 1):
            shown = self._budget(tokens).cut(text)
            prompt = cfg.prompt.format(url=url, goal=goal, page=shown)
            reply, failure = await self._call(client, url, attempt, prompt, spent)
            if failure is not None and not any(s in failure.lower() for s in _TOO_LONG):
                return VisitResult(url, goal, title=title, tries=attempt + 1, **spent,
                                   error=f"visit failed: the extractor model failed: {failure}")  # fmt: skip
            parsed = None if failure is not None else parse_extraction(reply)
            if parsed is not None:
                size = fmt.size_of(shown, self.tokenizer)
                body = render(url, title, goal, parsed["evidence"], parsed["summary"])
                return VisitResult(url, goal, text=body, title=title, tries=attempt + 1,
                                   page_tokens=size, **parsed, **spent)  # fmt: skip
            why = failure or f"a reply out of format: {reply[:200]!r}"
            tokens = max(1, int(tokens * cfg.shrink))
            log.info("visit %s: try %d got %s; trying again with %d page tokens",
                     url, attempt + 1, why[:200], tokens)  # fmt: skip
        tries = cfg.retries + 1
        how = "1 try" if tries == 1 else f"{tries} tries, the page cut shorter each time"
        return VisitResult(
            url, goal, title=title, tries=tries, **spent,
            error=f"visit failed: the extractor model gave no usable answer in {how} "
            f"(last: {why[:300]})",
        )  # fmt: skip

    async def _call(
        self, client: OpenAIClient, url: str, attempt: int, prompt: str, spent: dict
    ) -> tuple[str, str | None]:
        """One extractor request, logged with its cost (also added to ``spent``): (reply
        text, failure or None)."""
        sampling = SamplingConfig(max_tokens=self.config.max_output_tokens, temperature=0.0)
        t0 = time.perf_counter()
        usage: dict = {}
        reply, failure = "", None
        async with self._gate:
            try:
                async with asyncio.timeout(self.config.timeout):
                    reply, _, usage = await client.chat_usage(
                        [{"role": "user", "content": prompt}], [], sampling
                    )
            except TimeoutError:
                failure = f"no reply within {self.config.timeout:g} s"
            except PolicyError as exc:
                failure = str(exc)
        seconds = time.perf_counter() - t0
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        with self._lock:
            self.stats.calls += 1
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            self.stats.seconds += seconds
        spent["prompt_tokens"] += prompt_tokens
        spent["completion_tokens"] += completion_tokens
        spent["seconds"] += seconds
        log.info(
            "visit extractor call: url=%s model=%s try=%d prompt_chars=%d prompt_tokens=%d "
            "completion_tokens=%d seconds=%.3f outcome=%s",
            url, self.config.model, attempt + 1, len(prompt), prompt_tokens, completion_tokens,
            seconds, "ok" if failure is None else failure[:200],
        )  # fmt: skip
        return reply, failure

    def run(self, coro):
        """Run ``coro`` (visits) for a sync caller, on a loop the visitor keeps: the envs that
        share this visitor share its HTTP pool too."""
        if self._sync_loop is None or self._sync_loop.is_closed():
            self._sync_loop = asyncio.new_event_loop()
        return self._sync_loop.run_until_complete(coro)

    def close(self) -> None:
        """Closes what ``run`` made (its loop and the HTTP pool on it); safe twice."""
        if self._sync_loop is not None and not self._sync_loop.is_closed():
            self._sync_loop.run_until_complete(self.aclose())
            self._sync_loop.close()
        self._sync_loop = None

    async def aclose(self) -> None:
        """Closes the extractor's HTTP pool when it is this loop's (one made on another loop
        cannot be closed from here: it is dropped)."""
        if self._extractor is not None and self._loop is asyncio.get_running_loop():
            await self._extractor.aclose()
        self._extractor = None


def make_visitor(
    client: Any, config: EnvConfig, style: Any, visitor: Visitor | None = None
) -> Visitor | None:
    """An env's visitor when its tools include visit (None otherwise): ``visitor`` when given
    (e.g. one shared by several envs, with its cache), else one made from ``config.visit``."""
    if VISIT not in style.tools:
        return None
    if visitor is not None:
        return visitor
    if config.visit is None:
        raise ConfigError("the visit tool needs an extractor: set EnvConfig.visit or pass visitor=")
    return Visitor(client, config.visit)
