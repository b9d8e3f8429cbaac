"""Plain value types of the env: the parsed action, the config, the task, the episode outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

STYLES = ("asearcher", "search-r1", "tool-call")

# action kinds
SEARCH = "search"
ACCESS = "access"
ANSWER = "answer"
INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Action:
    """One turn of the policy, parsed. ``kind`` is search, access, answer or invalid.

    ``arg`` is the query, the URL/title or the answer; ``page`` the requested page chunk of an
    access (None: the next unread one); ``error`` says what was wrong when ``kind`` is invalid,
    ``reason`` is a short machine-readable tag of it (no_tool, two_tools, unclosed_tag, ...).
    """

    kind: str
    arg: str = ""
    page: int | None = None
    error: str | None = None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.kind != INVALID


@dataclass(frozen=True, slots=True)
class Task:
    """One QA item: a question and its accepted answers (aliases)."""

    question: str
    answers: tuple[str, ...]
    id: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def options(self) -> dict:
        """The ``options`` dict ``reset`` takes for this task."""
        return {
            "question": self.question,
            "answers": list(self.answers),
            "id": self.id,
            "source": self.source,
        }


@dataclass(frozen=True)
class EnvConfig:
    """Settings of an episode. Budgets: ``None`` means unlimited.

    - ``obs_max_chars`` / ``obs_max_tokens``: budget of one observation (tokens need a tokenizer).
    - ``page_chars``: size of one page chunk of the access tool ("page k of N").
    - ``max_context_chars`` / ``max_context_tokens``: budget of the whole episode text (prompt,
      actions, observations); when spent the episode is truncated.
    - ``reward``: name in ``env.rewards.REWARDS``; ``format_penalty`` is subtracted from the step
      reward of each malformed action (0 = no penalty).
    - ``record_path``: append each finished episode's trajectory to this JSONL file.
    """

    style: str = "asearcher"
    topk: int = 3
    retriever: str | None = None
    max_turns: int = 128
    obs_max_chars: int | None = 6000
    obs_max_tokens: int | None = None
    page_chars: int = 4000
    max_context_chars: int | None = None
    max_context_tokens: int | None = None
    tokenizer: Any = field(default=None, compare=False)
    reward: str = "f1"
    format_penalty: float = 0.0
    record_path: str | None = None
    system_prompt: str | None = None

    def __post_init__(self):
        if self.style not in STYLES:
            raise ConfigError(f"style {self.style!r} is unknown; use one of {', '.join(STYLES)}")
        if self.max_turns < 1:
            raise ConfigError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.topk < 1:
            raise ConfigError(f"topk must be >= 1, got {self.topk}")
        if self.page_chars < 1:
            raise ConfigError(f"page_chars must be >= 1, got {self.page_chars}")
        for name in ("obs_max_chars", "obs_max_tokens", "max_context_chars", "max_context_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or None (unlimited), got {value}")
        if (self.obs_max_tokens or self.max_context_tokens) and self.tokenizer is None:
            raise ConfigError(
                "obs_max_tokens / max_context_tokens need a tokenizer (an object with encode and "
                "decode, e.g. transformers.AutoTokenizer.from_pretrained(...)); or use *_chars"
            )
        from .rewards import REWARDS

        if self.reward not in REWARDS:
            raise ConfigError(f"reward {self.reward!r} is unknown; use one of {', '.join(REWARDS)}")
