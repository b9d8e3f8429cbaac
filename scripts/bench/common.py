"""Helpers shared by the benchmarks: machine description, timing, appending to BENCHMARKS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "BENCHMARKS.md"
SHARED_DATA = REPO.parent / "shared" / "data"


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1e6:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{model}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def median(xs) -> float:
    return statistics.median(xs)


def append_section(
    title: str, command: str, table: list[list], header: list[str], notes: str = ""
) -> None:
    """Append a dated table to BENCHMARKS.md (never rewrites earlier rows)."""
    lines = [
        "",
        f"## {title} ({_dt.date.today().isoformat()}, commit {git_rev()})",
        "",
        f"Machine: {machine()}. Command: `{command}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table]
    if notes:
        lines += ["", notes]
    if not BENCHMARKS.exists():
        BENCHMARKS.write_text(
            "# Benchmarks\n\nEvery row comes from a script under `scripts/bench/`; rerun it to check.\n"
        )
    with open(BENCHMARKS, "a") as f:
        f.write("\n".join(lines) + "\n")


async def read_response(reader) -> tuple[int, bytes, bytes]:
    """Status, head and body of one HTTP/1.1 response on raw asyncio streams (the load
    generators' cheapest client: no HTTP library between them and the server)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, head, await reader.readexactly(length)


def measure(fn, queries: list[str], k: int, batch: int) -> dict:
    """queries/s and per-call latency (ms) of ``fn(list_of_queries, k)``."""
    fn(queries[:batch], k)  # warm up
    lat = []
    start = time.perf_counter()
    for lo in range(0, len(queries), batch):
        t = time.perf_counter()
        fn(queries[lo : lo + batch], k)
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    import numpy as np

    lat_ms = np.array(lat) * 1e3
    return {
        "qps": len(queries) / total,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
    }
