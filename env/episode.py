"""One episode's state machine, shared by ``SearchEnv`` and ``BatchedSearchEnv``.

A step is split in two so that many episodes can share one backend call: ``prepare(text)``
parses the turn and returns the tool ``Call`` to run (or None), ``finish(result)`` formats the
observation, scores and returns the Gymnasium step tuple.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter

from . import formatting as fmt
from .browser import Browser
from .context import ContextWindow, parse_context
from .errors import ResetNeededError
from .evidence import evidence_of
from .noise import EpisodeNoise, NegativePool, gold_of
from .parsing import clean_text, turn_format_ok
from .reward_spec import parse_reward_spec
from .rewards import REWARDS, Outcome, score_all
from .styles import get_style, parse_action
from .tools import Call, ToolResult
from .types import (
    ACCESS,
    ANSWER,
    BROWSE_KINDS,
    INVALID,
    SEARCH,
    VISIT,
    Action,
    EnvConfig,
    PageWindow,
)

log = logging.getLogger(__name__)
_ZERO_REWARDS = dict.fromkeys(REWARDS, 0.0)
MAX_INFO_ERROR = (
    500  # characters of an error in info and trajectories (the policy's copy is budgeted)
)


class Episode:
    """State of one question being worked on: turns, counts, pages read, context size."""

    def __init__(self, config: EnvConfig, pool: NegativePool | None = None):
        self.config = config
        self.pool = pool  # random passages for noise (env.noise), shared by the env's episodes
        self.style = get_style(config.style).with_tools(config.tools)
        self._turn_style = self.style  # the style answering the turn in ``finish``
        self.browser: Browser | None = None
        self.obs_budget = fmt.Budget(config.obs_max_chars, config.obs_max_tokens, config.tokenizer)
        self._context_tokenizer = config.tokenizer if config.max_context_tokens else None
        self._context_limit = config.max_context_tokens or config.max_context_chars
        self.context_policy = parse_context(config.context)
        # the unit of cap-tokens is the tokenizer's; of keep-last and cap-chars characters
        self._window_tokenizer = config.tokenizer if self.context_policy.tokens else None
        self.reward_spec = parse_reward_spec(config.reward)
        self.active = False
        self.done = True
        self._pending: tuple[str, Action] | None = None

    # ---- reset ----------------------------------------------------------------------------
    def reset(
        self, options: dict, seed: int | None = None, noise_seed: int | None = None
    ) -> tuple[str, dict]:
        question = options.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"options['question'] must be a non-empty string, got {question!r}")
        answers = options.get("answers", ())
        answers = (answers,) if isinstance(answers, str) else tuple(str(a) for a in answers)
        self.question, self.answers = question, answers
        self.meta = {k: v for k, v in options.items() if k not in ("question", "answers")}
        self.seed = seed
        self.noise = (  # noise_seed: drawn by the env when reset had no seed (logged)
            None
            if self.config.noise is None
            else EpisodeNoise(
                self.config.noise,
                self.config.topk,
                options,
                seed if noise_seed is None else noise_seed,
                self.pool,
            )
        )
        self.turn_noise: dict | None = None
        self.turn = 0
        self.counts: Counter = Counter()
        self.invalid_reasons: Counter = Counter()
        self.pages_read: dict[str, int] = {}
        self.format_ok = True
        self.prediction: str | None = None
        self.terminated = self.truncated = False
        self.truncated_reason: str | None = None
        self.rewards = dict(_ZERO_REWARDS)
        self.prompt, self.messages = self.style.prompt(question, self.config.system_prompt)
        self.context_size = fmt.size_of(self.prompt, self._context_tokenizer)
        self.turns: list[dict] = []
        self.window = ContextWindow(self.context_policy)
        self._window_turns: list[int] = []  # the turn index of each observation in the window
        self.active, self.done = True, False
        self._pending = None
        self.browser = (
            Browser(self.style.link_base, self.style.search_as_page) if self.style.browses else None
        )
        info = {
            "question": question,
            "answers": list(answers),
            "messages": [dict(m) for m in self.messages],
            "tools": self.style.tool_specs(),
            "style": self.config.style,
            "turn": 0,
        }
        return self.prompt, info

    # ---- step, in two halves ----------------------------------------------------------------
    def prepare(self, text: object) -> Call | None:
        """Parse one turn; return the tool call to run for it (None for answers and errors)."""
        if not self.active:
            raise ResetNeededError("call reset() before step()")
        if self.done:
            raise ResetNeededError(
                "the episode has ended (terminated or truncated); call reset() to start the next one"
            )
        if isinstance(text, str):
            text = clean_text(text)
        action = parse_action(text, self.style)
        text = text if isinstance(text, str) else repr(text)
        if action.valid and self.style.checks_turn_format and not turn_format_ok(text):
            self.format_ok = False
        self._pending = (text, action)
        if action.kind == SEARCH:
            return Call(action)
        if action.kind == ACCESS:
            page = action.page or self.pages_read.get(action.arg, 0) + 1
            return Call(action, PageWindow(page, self.config.page_chars))
        if action.kind in BROWSE_KINDS:  # the style offers them only with a browser
            request = self.browser.prepare(action)
            return None if request is None else Call(action, request=request)
        if action.kind == VISIT:
            return Call(action)
        return None

    def finish(self, result: ToolResult | None) -> tuple[str, float, bool, bool, dict]:
        text, action = self._pending
        self._pending = None
        self.turn += 1
        self.counts[action.kind] += 1
        self.turn_noise = None
        if self.noise is not None and action.kind == SEARCH and result and result.docs is not None:
            # what the policy is shown (and every record of it) is the result after noise
            result.docs, self.turn_noise = self.noise.apply(result.docs, self.turn)
        error = action.error
        # the style that answers this turn (the browser answers a harmony call in harmony)
        style = self._turn_style = self.style.for_turn(text)
        budget = self.obs_budget
        reward = 0.0
        shown: dict | None = None
        visit: dict | None = None
        if action.kind == INVALID:
            self.invalid_reasons[action.reason] += 1
            self.format_ok = False
            obs = fmt.format_error(error, style, budget)
            reward -= self.config.format_penalty
        elif action.kind == ANSWER:
            self.prediction = action.arg
            self.terminated = True
            obs = ""
        elif action.kind in BROWSE_KINDS:
            result = self.browser.finish(result)
            if result.error is not None:
                error = result.error
                self.counts["tool_error"] += 1
                obs = fmt.format_tool_error(error, style, budget)
            else:
                obs = budget.fit(str(result.view.get("text", "")), style.wrap)
                shown = _shown([result.view]) | {"loc": result.view.get("loc", 0)}
        elif action.kind == VISIT:
            obs, error, shown, visit = self._visit_obs(result)
            visit = {"goal": getattr(action, "goal", "")} | visit
        elif result is None or result.error is not None:
            error = result.error if result is not None else "the tool returned nothing"
            self.counts["tool_error"] += 1
            obs = fmt.format_tool_error(error, style, budget)
        elif action.kind == SEARCH:
            view = (
                None
                if self.browser is None
                else self.browser.add_search(action.arg, result.docs or [])
            )
            if view is not None:  # the browser style: results as a view of numbered links
                obs = budget.fit(view["text"], style.wrap)
            else:
                obs = fmt.format_search(result.docs or [], style, budget)
            shown = _shown(result.docs or [])
        else:
            obs, error = self._page_obs(action, result.page)
            if error is None:
                shown = _shown([result.page]) | {"offset": result.page.get("offset", 0)}
        if error is not None and len(error) > MAX_INFO_ERROR:
            error = error[:MAX_INFO_ERROR] + fmt.ELLIPSIS
        self.turns.append(
            {
                "turn": self.turn,
                "action": text,
                "kind": action.kind,
                "arg": action.arg,
                "reason": action.reason,
                "error": error,
                "observation": obs,
                "shown": shown,
            }
        )
        if self.turn_noise is not None:
            self.turns[-1]["noise"] = self.turn_noise
        if visit is not None:  # the extractor's cost and cache use (no endpoint, no key)
            self.turns[-1]["visit"] = visit
        shown_delta = self._manage_context(obs)
        if not self.terminated:
            if self.turn >= self.config.max_turns:
                self.truncated, self.truncated_reason = True, "max_turns"
            if self._context_limit is not None:
                self.context_size += fmt.size_of(text, self._context_tokenizer)
                self.context_size += shown_delta
                if self.context_size > self._context_limit:
                    self.truncated, self.truncated_reason = True, "context"
        if self.terminated or self.truncated:
            self.done = True
            outcome = Outcome(
                self.prediction, self.answers, self.format_ok, evidence=self.evidence()
            )
            self.rewards = score_all(outcome)
            reward += self.reward_spec.score(self.rewards)
            if self.config.record_path:
                self._record()
        return obs, reward, self.terminated, self.truncated, self._info(action, error, shown)

    def _manage_context(self, obs: str) -> int:
        """Put this turn's observation in the context window; the older ones it pushes out
        become stubs (recorded in their turn: ``stub``, ``stubbed_from``). Returns how much
        the context the policy is shown grew, in the units of ``max_context_*``."""
        if not obs:
            return 0
        size = fmt.size_of(obs, self._context_tokenizer) if self._context_limit else 0
        if self.context_policy.mode == "full":
            return size
        turn = self.turns[-1]
        stub = self._turn_style.wrap(
            f"[turn {turn['turn']} ({turn['kind']} {turn['arg'][:80]!r}): observation "
            "omitted to save context]"
        )
        turn["stub"] = stub if len(stub) < len(obs) else obs  # a short one stays as it is
        self._window_turns.append(len(self.turns) - 1)
        stubbed = self.window.add(
            fmt.size_of(obs, self._window_tokenizer), fmt.size_of(stub, self._window_tokenizer)
        )
        for i in stubbed:
            old = self.turns[self._window_turns[i]]
            old["stubbed_from"] = self.turn  # the request after this turn shows the stub
            if self._context_limit and len(old["stub"]) < len(old["observation"]):
                size -= fmt.size_of(old["observation"], self._context_tokenizer)
                size += fmt.size_of(old["stub"], self._context_tokenizer)
        return size

    def shown_observations(self) -> list[str]:
        """Each turn's observation as the policy's next request shows it (``EnvConfig.context``:
        old ones may be stubs)."""
        return [
            t["stub"] if t.get("stubbed_from") is not None else t["observation"] for t in self.turns
        ]

    def evidence(self):
        """What the tool calls so far showed, with the task's gold evidence (reset options
        ``supporting_titles`` / ``supporting_ids``), for the evidence rewards."""
        return evidence_of(self.turns, *gold_of(self.meta))

    def _visit_obs(self, result: ToolResult | None) -> tuple[str, str | None, dict | None, dict]:
        """(observation, error, shown, cost) of a visit: the extractor's evidence and summary
        within the observation budget, or its failure as a tool error."""
        visit = None if result is None else result.visit
        cost = {"cached": False, "tries": 0} if visit is None else visit.cost()
        if result is None or result.error is not None or visit is None:
            error = "the tool returned nothing" if result is None else result.error
            error = error or "visit failed: the visitor returned nothing"
            self.counts["tool_error"] += 1
            self.counts["visit_error"] += 1
            obs = fmt.format_tool_error(error, self._turn_style, self.obs_budget)
            return obs, error, None, cost
        obs = self.obs_budget.fit(visit.text, self._turn_style.wrap)
        return obs, None, _shown([{"url": visit.url, "title": visit.title}]), cost

    def _page_obs(self, action: Action, page: dict) -> tuple[str, str | None]:
        offset, total = page.get("offset", 0), page.get("total_chars", 0)
        if not isinstance(offset, int) or not isinstance(total, int):
            offset, total = 0, 0
        window = PageWindow.at(max(offset, 0), self.config.page_chars)
        n = window.count(total)
        if window.page > n:
            self.counts["tool_error"] += 1
            error = f"{action.arg[:200]} has {n} page(s); page {window.page} does not exist"
            return fmt.format_tool_error(error, self._turn_style, self.obs_budget), error
        self.pages_read[action.arg] = window.page
        return fmt.format_page(page, window, n, self._turn_style, self.obs_budget), None

    def _info(self, action: Action, error: str | None, shown: dict | None = None) -> dict:
        return {
            "turn": self.turn,
            "action": action.kind,
            "query": action.arg if action.kind in (SEARCH, ACCESS, VISIT) else None,
            "shown": shown,
            "reason": action.reason,
            "error": error,
            "counts": dict(self.counts),
            "invalid_reasons": dict(self.invalid_reasons),
            "rewards": dict(self.rewards),
            "prediction": self.prediction,
            "format_ok": self.format_ok,
            "context_size": self.context_size,
            "truncated_reason": self.truncated_reason,
            "noise": self.turn_noise,
        }

    # ---- trajectory ------------------------------------------------------------------------
    def trajectory(self) -> dict:
        """The episode so far as a JSON-able dict (what ``record_path`` stores)."""
        return {
            "question": self.question,
            "answers": list(self.answers),
            "meta": self.meta,
            "seed": self.seed,
            "style": self.config.style,
            "context": self.config.context,
            "prompt": self.prompt,
            "turns": list(self.turns),
            "prediction": self.prediction,
            "rewards": dict(self.rewards),
            "counts": dict(self.counts),
            "invalid_reasons": dict(self.invalid_reasons),
            "format_ok": self.format_ok,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "truncated_reason": self.truncated_reason,
            "num_turns": self.turn,
            "noise": None if self.noise is None else self.noise.summary(),
        }

    def _record(self) -> None:
        line = json.dumps(self.trajectory(), ensure_ascii=False, default=str) + "\n"
        path = os.fspath(self.config.record_path)
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(line)


def _title(doc: dict) -> str:
    title = doc.get("title")
    if not title:  # Search-R1 / FlashRAG servers: contents = '"Title"\ntext'
        title = str(doc.get("contents") or "").split("\n", 1)[0].strip().strip('"')
    return str(title)


def _shown(docs: list) -> dict:
    """Ids, titles and urls of the passages (or the page) a tool call showed."""
    docs = [d for d in docs if isinstance(d, dict)]
    return {
        "ids": [str(d.get("id") or "") for d in docs],
        "titles": [_title(d) for d in docs],
        "urls": [str(d.get("url") or "") for d in docs],
    }
