"""One retry policy for every client: exponential backoff with jitter that honours ``Retry-After``.

The policy is sans-IO: it decides (retry or not, how long to wait) and never sleeps or sends
anything itself, so the HTTP client, the in-process client and the env's policy client drive it
from sync or async code alike. Imports nothing heavy (the HTTP client must stay light).

>>> policy = RetryPolicy(retries=3, backoff=0.1, max_backoff=1.0, jitter=False)
>>> [policy.delay(a) for a in range(4)]
[0.1, 0.2, 0.4, 0.8]
>>> policy.delay(0, retry_after="2.5")
2.5
>>> policy.gives_up(3), policy.gives_up(2)
(True, False)
>>> retryable_status(503), retryable_status(429), retryable_status(422), retryable_status(500)
(True, True, False, False)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# answers worth sending again: overloaded (429) and unavailable (502-504); a 4xx is the caller's
# fault and a 500 is a bug until a caller says otherwise (retryable_status(500, proxy=True))
RETRYABLE = frozenset({429, 502, 503, 504})


def retryable_status(status: int, *, proxy: bool = False) -> bool:
    """Whether an HTTP status is worth a retry; ``proxy``: a 500 that came from a proxy in
    front of the service (not the service's own JSON error) is one replica's failure."""
    return status in RETRYABLE or (proxy and status == 500)


def parse_retry_after(value: str | float | None, cap: float) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds form), capped; None when absent or not
    a number (the HTTP-date form is not used by the servers we talk to)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return min(max(seconds, 0.0), cap)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries``: how many times a failed call is sent again; the wait before attempt
    ``a + 1`` is ``min(max_backoff, backoff * 2**a)`` scaled by a jitter in [0.5, 1), or what
    the server's ``Retry-After`` asked for (capped at ``max_retry_after``)."""

    retries: int = 5
    backoff: float = 0.1
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"retry settings must be >= 0, got {self}")

    def gives_up(self, attempt: int) -> bool:
        """True when attempt number ``attempt`` (0-based) was the last one allowed."""
        return attempt >= self.retries

    def delay(self, attempt: int, retry_after: str | float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        asked = parse_retry_after(retry_after, self.max_retry_after)
        if asked is not None:
            return asked
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return base * (0.5 + random.random() / 2) if self.jitter else base


class Retry(Exception):
    """Raised by a call driven by ``run`` / ``arun`` to ask for another attempt; carries the
    cause and an optional ``Retry-After`` value."""

    def __init__(self, cause: BaseException, retry_after: str | float | None = None):
        super().__init__(str(cause))
        self.cause = cause
        self.retry_after = retry_after


def run(policy: RetryPolicy, call: Callable[[int], T], sleep=time.sleep) -> T:
    """Call ``call(attempt)`` until it returns; it raises ``Retry`` to go again. After the
    last attempt the ``Retry``'s cause is raised."""
    attempt = 0
    while True:
        try:
            return call(attempt)
        except Retry as retry:
            if policy.gives_up(attempt):
                raise retry.cause from None
            sleep(policy.delay(attempt, retry.retry_after))
        attempt += 1


async def arun(policy: RetryPolicy, call: Callable[[int], Awaitable[T]], sleep=asyncio.sleep) -> T:
    """``run`` for coroutines."""
    attempt = 0
    while True:
        try:
            return await call(attempt)
        except Retry as retry:
            if policy.gives_up(attempt):
                raise retry.cause from None
            await sleep(policy.delay(attempt, retry.retry_after))
        attempt += 1
