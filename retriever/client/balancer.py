"""Several server URLs behind one client: least-outstanding choice and passive fail-over.

A trainer given ``http://node1:8000,http://node2:8000`` sends each request to the URL with the
fewest requests in flight; a URL that failed is skipped for a while, then tried again. No
background probing: the requests themselves are the health checks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ..errors import BadRequestError

__all__ = ["Balancer", "parse_urls"]


class Balancer:
    """Which base URL a request goes to: the one with the fewest requests in flight among those
    not marked down (round-robin among equals). A URL that failed is marked down for a while;
    when every URL is down, the one that comes back first is tried anyway."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.outstanding = dict.fromkeys(urls, 0)
        self.down_until = dict.fromkeys(urls, 0.0)
        self._rank = {u: i for i, u in enumerate(urls)}
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self) -> str:
        with self._lock:
            now = time.monotonic()
            up = [u for u in self.urls if self.down_until[u] <= now]
            if not up:
                up = [min(self.urls, key=self.down_until.__getitem__)]
            n, start = len(self.urls), self._next
            self._next = (start + 1) % n
            url = min(up, key=lambda u: (self.outstanding[u], (self._rank[u] - start) % n))
            self.outstanding[url] += 1
            return url

    def release(self, url: str) -> None:
        with self._lock:
            self.outstanding[url] -= 1

    def mark_down(self, url: str, seconds: float) -> None:
        with self._lock:
            self.down_until[url] = max(self.down_until[url], time.monotonic() + seconds)

    def mark_up(self, url: str) -> None:
        if self.down_until[url]:
            with self._lock:
                self.down_until[url] = 0.0

    def any_up(self) -> bool:
        now = time.monotonic()
        return any(t <= now for t in self.down_until.values())


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """Base URLs from a list or a comma-separated string, without trailing slashes.

    >>> parse_urls("http://a:8000/, http://b:8000")
    ['http://a:8000', 'http://b:8000']
    """
    if isinstance(urls, str):
        urls = urls.split(",")
    out = [u.strip().rstrip("/") for u in urls if u.strip()]
    if not out:
        raise BadRequestError("no server URL given: pass http://HOST:PORT (or several)")
    for u in out:
        if not u.startswith(("http://", "https://")):
            raise BadRequestError(f"server URL {u!r} must start with http:// or https://")
    if len(set(out)) != len(out):
        raise BadRequestError(f"server URLs repeat: {out}")
    return out
