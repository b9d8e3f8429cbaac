"""Plain value types of the env: the parsed action, the page window, the task, the config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .context import parse_context
from .errors import ConfigError
from .noise import NoiseConfig, noise_config
from .visit_config import VisitConfig

STYLES = ("asearcher", "search-r1", "tool-call", "browser")

# action kinds
SEARCH = "search"
ACCESS = "access"
ANSWER = "answer"
INVALID = "invalid"
# the browser tools (env.browser): gpt-oss's open and find, and a page's table of contents
OPEN = "open"
FIND = "find"
SECTIONS = "sections"
BROWSE_KINDS = (OPEN, FIND, SECTIONS)
# visit(url, goal): a page read by an extractor model for a goal (env.visit; EnvConfig.visit)
VISIT = "visit"
TOOLS = (SEARCH, ACCESS, OPEN, FIND, SECTIONS, VISIT, ANSWER)

# reset options / task meta that carry gold evidence (supporting page titles, passage ids)
GOLD_KEYS = ("supporting_titles", "supporting_ids")


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
class PageWindow:
    """Chunk ``page`` (1-based) of a page read in chunks of ``size`` characters: the one place
    that turns a page number into the ``offset`` the backend takes, and back.

    >>> w = PageWindow(3, 1000)
    >>> w.offset, PageWindow.at(w.offset, 1000) == w, w.count(2001)
    (2000, True, 3)
    """

    page: int
    size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @classmethod
    def at(cls, offset: int, size: int) -> PageWindow:
        """The window that starts at character ``offset``."""
        return cls(offset // size + 1, size)

    def count(self, total_chars: int) -> int:
        """How many windows a page of ``total_chars`` has (at least one)."""
        return max(1, math.ceil(total_chars / self.size))


@dataclass(frozen=True, slots=True)
class Task:
    """One QA item: a question and its accepted answers (aliases)."""

    question: str
    answers: tuple[str, ...]
    id: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def options(self) -> dict:
        """The ``options`` dict ``reset`` takes for this task (with its gold evidence, when it
        has some, for the evidence rewards)."""
        options = {
            "question": self.question,
            "answers": list(self.answers),
            "id": self.id,
            "source": self.source,
        }
        for key in GOLD_KEYS:
            if self.meta.get(key):
                options[key] = list(self.meta[key])
        return options


@dataclass(frozen=True)
class EnvConfig:
    """Settings of an episode. Budgets: ``None`` means unlimited.

    - ``obs_max_chars`` / ``obs_max_tokens``: budget of one observation, everything the policy is
      shown included (wrapper, headers, URLs, error messages); tokens need a tokenizer.
    - ``page_chars``: size of one page chunk of the access tool ("page k of N").
    - ``max_context_chars`` / ``max_context_tokens``: budget of the whole episode text (prompt,
      actions, observations); when spent the episode is truncated.
    - ``reward``: name in ``env.rewards.REWARDS`` or a weighted sum of them (``env.reward_spec``:
      ``"f1:1,evidence_recall:0.5"`` or a dict; checked, and a dict kept as its string form, by
      ``env.config.make_config``); ``format_penalty`` is subtracted from the step
      reward of each malformed action (0 = no penalty).
    - ``record_path``: append each finished episode's trajectory to this JSONL file.
    - ``noise``: a ``env.noise.NoiseConfig`` (or a dict or ``"MODE,key=value"`` text) that
      replaces a scheduled fraction of search results; the step comes from reset options'
      ``train_step``.
    - ``context``: which past observations the policy is shown in full (``env.context``).
    - ``tools``: the tools the policy may call, replacing the style's own (``answer`` always
      stays), e.g. ``("search", "access", "open", "find")`` adds the browser tools to a style;
      ``"visit"`` needs ``visit``.
    - ``visit``: the extractor model of the visit tool (``env.visit_config.VisitConfig`` or a
      dict of its fields); its api key is never recorded.
    """

    style: str = field(default="asearcher", metadata={"help": "tool syntax", "choices": STYLES})
    topk: int = field(default=3, metadata={"help": "passages per search"})
    retriever: str | None = field(
        default=None, metadata={"help": "bm25, dense-NAME or hybrid (default: the server's)"}
    )
    max_turns: int = field(default=128, metadata={"help": "turns before an episode is truncated"})
    obs_max_chars: int | None = field(
        default=6000, metadata={"help": "characters of one observation, wrapper included"}
    )
    obs_max_tokens: int | None = None
    page_chars: int = field(default=4000, metadata={"help": "characters of one page chunk"})
    max_context_chars: int | None = field(
        default=None, metadata={"help": "characters of a whole episode before truncation"}
    )
    max_context_tokens: int | None = None
    tokenizer: Any = field(default=None, compare=False)
    reward: str = field(
        default="f1",
        metadata={
            "help": "reward the env reports (all are recorded): a name or a weighted sum, "
            "e.g. f1:1,evidence_recall:0.5,search_cost:-0.05"
        },
    )
    format_penalty: float = field(
        default=0.0, metadata={"help": "subtracted from the reward of each malformed action"}
    )
    record_path: str | None = None
    system_prompt: str | None = field(
        default=None, metadata={"help": "system prompt replacing the style's"}
    )
    context: str = field(
        default="full",
        metadata={
            "help": "what past observations the policy sees: full, keep-last:N (older ones as a "
            "one-line stub), cap-tokens:T or cap-chars:C (all observations within T/C)"
        },
    )
    noise: NoiseConfig | None = field(
        default=None,
        metadata={
            "help": "noise in search results (env.noise), e.g. hard-negative,p_end=0.5,steps=1000"
        },
    )

    tools: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "tools the policy may call instead of the style's, e.g. "
            "search,access,open,find,sections,visit (answer always stays)"
        },
    )
    visit: VisitConfig | None = field(default=None, metadata={"help": "the visit extractor"})

    @property
    def search_k(self) -> int:
        """Hits fetched per search: ``topk``, deeper when noise backfills from lower ranks."""
        return self.topk if self.noise is None else self.noise.search_k(self.topk)

    def __post_init__(self):
        object.__setattr__(self, "noise", noise_config(self.noise))  # dict / text: one parser
        context = parse_context(self.context)  # one parser; the text form is kept
        object.__setattr__(self, "context", str(context))
        if context.tokens and self.tokenizer is None:
            raise ConfigError(
                f"context {self.context!r} counts tokens and needs a tokenizer; or use cap-chars:C"
            )
        if self.tools is not None:
            given = (self.tools,) if isinstance(self.tools, str) else tuple(self.tools)
            tools = tuple(n.strip() for item in given for n in str(item).split(",") if n.strip())
            unknown = [t for t in tools if t not in TOOLS]
            if unknown or not tools:
                raise ConfigError(
                    f"tools {self.tools!r} names unknown tools {unknown}; use some of {', '.join(TOOLS)}"
                )
            tools += (ANSWER,) if ANSWER not in tools else ()
            object.__setattr__(self, "tools", tools)
        if isinstance(self.visit, dict):
            object.__setattr__(self, "visit", VisitConfig(**self.visit))
        if self.visit is not None and not isinstance(self.visit, VisitConfig):
            raise ConfigError(
                f"visit must be a VisitConfig or a dict of its fields, got {type(self.visit).__name__}"
            )
        if VISIT in (self.tools or ()) and self.visit is None:
            raise ConfigError(
                "tools include visit but no extractor model is set: give visit=VisitConfig(url, "
                "model) (env.evaluate: --visit-url and --visit-model)"
            )
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
        # the reward spec is checked where the config is used (env.config.make_config, Episode):
        # the registry of rewards sits above these types
