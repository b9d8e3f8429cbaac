"""Shared pieces of the GPU check (scripts/bench/gpu.py): sizes, timing, the skip signal."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WIKI18 = 21_015_324


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: the real ones, or toys for ``--quick``."""

    rows: int
    dim: int
    batches: tuple[int, ...]
    subset: int
    passages: int
    layers: int
    hidden: int
    store: int
    shard: int
    concurrency: tuple[int, ...]
    seconds: float


REAL = Sizes(
    WIKI18, 768, (1, 64, 1024, 4096), 1 << 20, 8192, 12, 768, 8000, 2000, (1, 64, 512), 3.0
)
# quick: 30 small shards, so that the kill after the first one lands well before the last
QUICK = Sizes(20_000, 64, (1, 16, 64), 5_000, 32, 2, 64, 120, 4, (1, 4, 16), 0.5)


class Skip(Exception):
    """A section that cannot run here (a package or a device is missing)."""


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, budget_s: float) -> list[float]:
    """Seconds of ``reps`` calls (after one warm-up), stopping early when ``budget_s`` is spent."""
    fn()
    sync(device)
    out, start = [], time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(out) >= 3:
            break
    return out


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
