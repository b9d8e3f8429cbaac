"""Context management for long horizons: which past observations the policy sees in full.

An episode of 100+ tool calls (ASearcher reports over 100, with 400k output tokens) does not
fit a context if every observation stays in it. ``EnvConfig.context`` picks a policy:

- ``full``: every observation in full (the default; what the env did before);
- ``keep-last:N``: the last N observations in full, older ones replaced by a one-line stub;
- ``cap-tokens:T`` / ``cap-chars:C``: the newest observations in full as long as all
  observations together (stubs included) stay within T tokens (the env's tokenizer) or C
  characters; the newest one is always shown in full (it is already within the observation
  budget). Stubs count too, so the cap holds while the stubs themselves fit in it (about 100
  characters a turn); past that the episode's ``max_context_*`` budget truncates it.

Stubbing only moves forward: once an observation is a stub it stays one. So a trajectory
records each turn's stub and the request from which it was shown (``stubbed_from``), and
``seen_observations`` rebuilds exactly what the policy was sent in any request.

>>> p = parse_context("keep-last:2")
>>> w = ContextWindow(p)
>>> [w.add(10, 2) for _ in range(4)]
[[], [], [0], [1]]
>>> w.start, w.total
(2, 24)
>>> w = ContextWindow(parse_context("cap-chars:25"))
>>> [w.add(10, 2) for _ in range(4)]
[[], [], [0], [1]]
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

MODES = ("full", "keep-last", "cap-tokens", "cap-chars")


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    """A parsed ``EnvConfig.context``: the mode and its number (0 for ``full``)."""

    mode: str = "full"
    limit: int = 0

    @property
    def tokens(self) -> bool:
        return self.mode == "cap-tokens"

    def __str__(self) -> str:
        return self.mode if self.mode == "full" else f"{self.mode}:{self.limit}"


def parse_context(text: str | ContextPolicy | None) -> ContextPolicy:
    """``"full"``, ``"keep-last:N"``, ``"cap-tokens:T"`` or ``"cap-chars:C"`` as a policy.

    >>> parse_context("keep-last:3"), str(parse_context(None))
    (ContextPolicy(mode='keep-last', limit=3), 'full')
    >>> parse_context("last:3")
    Traceback (most recent call last):
    ...
    env.errors.ConfigError: context 'last:3' is unknown; use full, keep-last:N, cap-tokens:T or cap-chars:C (N >= 1)
    """
    if isinstance(text, ContextPolicy):
        return text
    if text is None or (isinstance(text, str) and text.strip() == "full"):
        return ContextPolicy()
    mode, _, number = str(text).strip().partition(":")
    try:
        limit = int(number)
    except ValueError:
        limit = 0
    if mode not in MODES[1:] or limit < 1:
        raise ConfigError(
            f"context {text!r} is unknown; use full, keep-last:N, cap-tokens:T or cap-chars:C "
            "(N >= 1)"
        )
    return ContextPolicy(mode, limit)


class ContextWindow:
    """The observations of one episode so far, by size: which ones are shown in full.

    ``add(full, stub)`` takes the size of a new observation and of its stub and returns the
    indices of the observations that become stubs from the next request on (oldest first).
    ``total`` is the size of all observations as the next request shows them.
    """

    def __init__(self, policy: ContextPolicy):
        self.policy = policy
        self.full: list[int] = []
        self.stub: list[int] = []
        self.start = 0  # observations before this index are stubs
        self.total = 0

    def add(self, full: int, stub: int) -> list[int]:
        self.full.append(full)
        self.stub.append(min(stub, full))
        self.total += full
        first = self.start
        mode, limit = self.policy.mode, self.policy.limit
        last = len(self.full) - 1  # the newest observation is always shown in full
        if mode == "keep-last":
            target = max(0, len(self.full) - limit)
            while self.start < target:
                self._stub_next()
        elif mode != "full":
            while self.total > limit and self.start < last:
                self._stub_next()
        return list(range(first, self.start))

    def _stub_next(self) -> None:
        self.total += self.stub[self.start] - self.full[self.start]
        self.start += 1


def seen_observations(trajectory: dict, request: int) -> list[str]:
    """The observations of turns 1..``request`` as the policy saw them in its request number
    ``request`` (0: the prompt alone), from a trajectory's turns (``stub``/``stubbed_from``).

    >>> t = {"turns": [{"observation": "A", "stub": "a", "stubbed_from": 2}, {"observation": "B"}]}
    >>> seen_observations(t, 1), seen_observations(t, 2)
    (['A'], ['a', 'B'])
    """
    out = []
    for turn in trajectory["turns"][:request]:
        since = turn.get("stubbed_from")
        out.append(turn["stub"] if since is not None and since <= request else turn["observation"])
    return out
