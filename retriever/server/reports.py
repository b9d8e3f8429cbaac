"""What ``/health`` and ``/info`` say about a service: workers, state, config, parts, memory.

The functions take the ``RetrievalService`` (typed ``Any``: this module is below it).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

from .. import __version__
from ..cores import default_threads

__all__ = ["health", "info", "rss_bytes"]


def rss_bytes() -> int:
    """Resident memory of this process (0 when psutil is unavailable)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # pragma: no cover - psutil is a dependency, but never fail on metrics
        return 0


def health(service: Any) -> dict:
    """Ready only when loaded and every worker thread is alive (a dead one: ``degraded``)."""
    workers = {
        name: {
            "alive": b.alive,
            "queue_depth": b.depth(),
            "error": None if b.died is None else repr(b.died),
        }
        for name, b in service._batchers.items()
    }
    ok = service.state == "ready" and all(w["alive"] for w in workers.values())
    status = "ok" if ok else ("degraded" if service.state == "ready" else service.state)
    return {
        "status": status,
        "ready": ok,
        "retrievers": workers,
        "error": None if service.error is None else str(service.error),
        "uptime_s": round(time.monotonic() - service._started, 3),
    }


def info(service: Any) -> dict:
    """Version, config (the token only as set/unset), load time, memory, cache, parts."""
    config = {k: v for k, v in asdict(service.config).items() if k != "token"}
    config["index"] = str(service.config.index)
    config["token"] = "set" if service.config.token else None
    out = {
        "version": __version__,
        "pid": os.getpid(),  # which process answered (--workers runs several)
        "threads": default_threads(),  # its kernels' threads where no flag sets them
        "state": service.state,
        "config": config,
        "default_retriever": service.default_retriever,
        "retrievers": {},
        "load_seconds": service.load_seconds,
        "rss_bytes_at_ready": service.rss_at_ready,
        "rss_bytes": rss_bytes(),
        "cache": service.cache.stats(),
    }
    if service.index is not None:
        out["corpus"] = service.index.store.stats()
        parts = service.index.parts()
        for name in service._retrievers:
            if name in service._hybrids:
                h = service._hybrids[name]
                out["retrievers"][name] = {
                    "kind": "hybrid",
                    "parts": [p.name for p in h.parts],
                    "k_rrf": h.k_rrf,
                    "depth": h.depth,
                }
            else:
                out["retrievers"][name] = parts.get(name, {})
    return out
