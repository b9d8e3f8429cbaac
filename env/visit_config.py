"""The settings of ``visit(url, goal)``'s extractor model (``env.visit``): kept apart from the
visitor so that ``EnvConfig`` can hold them without importing the HTTP client."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

VISIT_PROMPT = """You read a web page for a research assistant and keep only what serves its goal.

Page: {url}
Goal: {goal}

Page content:
<page>
{page}
</page>

Steps: find the parts of the page that bear on the goal; quote them word for word as evidence
(with enough context to be understood); then write a summary that answers the goal from that
evidence alone. If the page has nothing on the goal, say so in the summary and leave the
evidence empty.

Reply with a JSON object only:
{{"rationale": "<which parts of the page matter and why>", "evidence": "<the quoted passages>", "summary": "<what the evidence says about the goal>"}}"""


@dataclass(frozen=True)
class VisitConfig:
    """Settings of the extractor: model endpoint, input bound, retries, cache."""

    url: str = field(metadata={"help": "OpenAI-compatible base URL of the extractor model"})
    model: str = field(metadata={"help": "extractor model name"})
    max_input_tokens: int = field(default=8000, metadata={"help": "page tokens sent at most"})
    max_output_tokens: int = field(default=1024, metadata={"help": "tokens of one reply"})
    retries: int = field(
        default=2, metadata={"help": "shorter tries after a reply out of format or too long"}
    )
    shrink: float = field(default=0.5, metadata={"help": "page kept at each shorter try"})
    timeout: float = field(default=120.0, metadata={"help": "seconds one extractor request"})
    concurrency: int = field(default=8, metadata={"help": "extractor requests in flight"})
    cache_path: str | None = None
    api_key: str | None = field(default=None, repr=False)  # a secret: kept out of logs
    prompt: str = VISIT_PROMPT

    def __post_init__(self):
        if self.max_input_tokens < 16 or self.max_output_tokens < 1:
            raise ConfigError(
                "visit max_input_tokens must be >= 16 and max_output_tokens >= 1, got "
                f"{self.max_input_tokens} and {self.max_output_tokens}"
            )
        if self.retries < 0 or not 0 < self.shrink < 1:
            raise ConfigError(
                f"visit retries must be >= 0 and 0 < shrink < 1, got {self.retries}, {self.shrink}"
            )
        if not self.timeout > 0 or self.concurrency < 1:
            raise ConfigError(
                f"visit timeout must be > 0 and concurrency >= 1, got {self.timeout}, "
                f"{self.concurrency}"
            )
        for name in ("url", "goal", "page"):
            if "{" + name + "}" not in self.prompt:
                raise ConfigError(f"the visit prompt must contain {{{name}}}; it does not")
