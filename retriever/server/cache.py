"""An LRU cache of search results keyed by (retriever, query, k): RL rollouts repeat queries.

Bounded in entries and in (estimated) bytes: a few hundred distinct 1 MB queries must not grow
the server by hundreds of MB.

>>> c = LRUCache(2)
>>> c.put(("bm25", "a", 3), [])
>>> c.get(("bm25", "a", 3)), c.get(("bm25", "b", 3))
([], None)
>>> c.hits, c.misses
(1, 1)
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class LRUCache:
    """Thread-safe least-recently-used mapping with hit and miss counts; size 0 disables it."""

    def __init__(self, maxsize: int = 100_000, max_bytes: int = 0):
        """``max_bytes`` > 0 also bounds the estimated size of keys and values together."""
        if maxsize < 0 or max_bytes < 0:
            raise ValueError(f"cache size must be >= 0, got {maxsize} entries, {max_bytes} bytes")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable) -> Any | None:
        """The cached value (and mark it recently used), or None; counts a hit or a miss."""
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.maxsize == 0:
            return
        size = approx_bytes(key) + approx_bytes(value)
        if self.max_bytes and size > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything else
        with self._lock:
            self.nbytes += size - self._sizes.get(key, 0)
            self._sizes[key] = size
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize or (
                self.max_bytes and self.nbytes > self.max_bytes
            ):
                old, _ = self._data.popitem(last=False)
                self.nbytes -= self._sizes.pop(old)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._sizes.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {
            "size": len(self._data),
            "maxsize": self.maxsize,
            "bytes": self.nbytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "hit_rate": self.hits / total if total else 0.0,
        }


def approx_bytes(obj: Any) -> int:
    """Memory of a cache key or value: strings, numbers, dataclass instances (a ``Hit``), and
    tuples/lists of them. Past 8 items the first stands for the rest: a 1,000-hit list costs
    no 1,000 calls."""
    if isinstance(obj, tuple | list):
        if len(obj) > 8:
            return sys.getsizeof(obj) + len(obj) * approx_bytes(obj[0])
        return sys.getsizeof(obj) + sum(approx_bytes(x) for x in obj)
    size = sys.getsizeof(obj)
    if isinstance(obj, str | bytes | int | float | bool) or obj is None:
        return size
    names = getattr(type(obj), "__slots__", None) or tuple(getattr(obj, "__dict__", ()))
    return size + sum(sys.getsizeof(getattr(obj, n, None)) for n in names)
