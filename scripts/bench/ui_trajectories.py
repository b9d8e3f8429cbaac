"""Trajectory viewer at scale: page a 100k-episode trajectories.jsonl through the byte-offset
index (``retriever.server.trajectories``) against the naive way (parse the whole file per
request, then filter, sort and slice).

The episodes are real ``env`` trajectories (the /ui test data: the env over a HotpotQA index),
varied per line (dataset, question, rewards, counts) and repeated to the requested count.

    python scripts/bench/ui_trajectories.py --episodes 100000 [--record]
    python scripts/bench/ui_trajectories.py --smoke  # 300 episodes, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import common as c

QUERIES = {
    "first page, file order": {},
    "failed only, by F1 desc": {"failed_only": True, "sort": "f1", "descending": True},
    "one dataset, by turns": {"dataset": "musique", "sort": "turns"},
    "question contains 'who 1'": {"text": "who 1"},
    "page 1000 of 2000": {"offset": 50_000},
}


def write_file(path: Path, records: list[dict], n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            rec = dict(rng.choice(records))
            rec["dataset"] = rng.choice(["nq", "hotpotqa", "musique", "bamboogle"])
            rec["question"] = f"{rng.choice(['Who', 'What', 'When'])} {rng.randrange(10**6)}?"
            rec["rewards"] = {**rec["rewards"], "em": float(rng.random() < 0.4)}
            rec["rewards"]["f1"] = round(rng.random(), 3)
            rec["num_turns"] = rng.randrange(1, 11)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def naive_page(path: Path, q) -> list[int]:
    """What a viewer without an index does per request."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            rec = json.loads(line)
            em = rec["rewards"]["em"]
            if q.failed_only and em >= 1:
                continue
            if q.dataset and rec["dataset"] != q.dataset:
                continue
            if q.text and q.text.casefold() not in rec["question"].casefold():
                continue
            key = number if q.sort == "line" else rec["rewards"].get(q.sort, rec.get("num_turns"))
            rows.append((key, number))
    rows.sort(key=lambda r: r[0], reverse=q.descending)
    return [n for _, n in rows[q.offset : q.offset + q.limit]]


def http_timings(
    root: Path, path: Path, repeats: int, episodes: int
) -> tuple[dict[str, float], float]:
    """Median ms of each query's page, and of one episode, from a live server's /ui/api."""
    import httpx

    c.use_test_helpers()
    from ui_support import LiveServer

    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService, ServiceConfig

    config = ServiceConfig(index=str(root), warmup=False, trajectories=(str(path),))
    service = RetrievalService(config).start()
    out = {}
    try:
        with LiveServer(create_app(service)) as base, httpx.Client(base_url=base) as client:
            while client.get("/ui/api/trajectories/0?limit=1").status_code == 503:
                time.sleep(0.2)  # indexing in the background
            for label, options in QUERIES.items():
                params = {"limit": 50, "offset": options.get("offset", 0)}
                params["sort"] = options.get("sort", "line")
                params["desc"] = int(options.get("descending", False))
                params["failed"] = int(options.get("failed_only", False))
                params.update({k: options[k] for k in ("dataset",) if k in options})
                if "text" in options:
                    params["q"] = options["text"]
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    client.get("/ui/api/trajectories/0", params=params).raise_for_status()
                    times.append(1000 * (time.perf_counter() - t0))
                out[label] = c.median(times)
            times = []
            for line in random.Random(5).sample(range(1, min(1000, episodes)), 50):
                t0 = time.perf_counter()
                client.get(f"/ui/api/trajectories/0/{line}").raise_for_status()
                times.append(1000 * (time.perf_counter() - t0))
    finally:
        service.stop()
    return out, c.median(times)


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=15, help="timed page requests per query")
    ap.add_argument("--naive-repeats", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="append the table to the history")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="300 episodes, one repeat; records only to $BENCH_RECORD",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.episodes, args.repeats, args.naive_repeats = 300, 1, 1

    c.use_test_helpers()
    from ui_support import build_index, write_trajectories

    from retriever.server.ui.trajectories import Query, TrajectoryFile

    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        tmp = Path(tmp)
        root = build_index(tmp / "index")
        records = write_trajectories(tmp / "seed.jsonl", root)
        path = tmp / "trajectories.jsonl"
        t0 = time.perf_counter()
        write_file(path, records, args.episodes)
        size = os.path.getsize(path)
        print(
            f"wrote {args.episodes} episodes, {size / 2**20:.0f} MB in {time.perf_counter() - t0:.1f}s"
        )

        before = rss()
        f = TrajectoryFile(path)
        t0 = time.perf_counter()
        assert f.refresh() == args.episodes
        index_s = time.perf_counter() - t0
        index_mb = (rss() - before) / 2**20
        t0 = time.perf_counter()
        f.refresh()
        noop_ms = 1000 * (time.perf_counter() - t0)
        print(f"index: {index_s:.2f}s ({size / 2**20 / index_s:.0f} MB/s), +{index_mb:.0f} MB RSS")

        table = []
        for label, options in QUERIES.items():
            q = Query(limit=50, **options)
            t0 = time.perf_counter()
            page = f.page(q)
            cold = 1000 * (time.perf_counter() - t0)
            warm = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                f.refresh()  # what each API request does first
                f.page(q)
                warm.append(1000 * (time.perf_counter() - t0))
            naive = []
            for _ in range(args.naive_repeats):
                t0 = time.perf_counter()
                expected = naive_page(path, q)
                naive.append(1000 * (time.perf_counter() - t0))
            got = [row["line"] for row in page["rows"]]
            assert got == expected, (label, got[:5], expected[:5])
            ratio = c.median(naive) / c.median(warm)
            table.append(
                [
                    label,
                    page["total"],
                    f"{cold:.1f}",
                    f"{c.median(warm):.1f}",
                    f"{c.median(naive):.0f}",
                    f"{ratio:.0f}x",
                ]
            )
            print(" | ".join(str(c) for c in table[-1]))
        reads = []
        rng = random.Random(3)
        for _ in range(200):
            row = rng.randrange(args.episodes)
            t0 = time.perf_counter()
            f.read(row)
            reads.append(1000 * (time.perf_counter() - t0))
        print(
            f"one episode by line: median {c.median(reads):.2f} ms; no-op refresh {noop_ms:.2f} ms"
        )
        http_ms, episode_http = http_timings(root, path, args.repeats, args.episodes)
        for row in table:
            row.insert(4, f"{http_ms[row[0]]:.1f}")
            print(f"{row[0]}: over HTTP {row[4]} ms")

    header = [
        "request (50 rows)",
        "matching",
        "first ms",
        "median ms",
        "HTTP ms",
        "naive ms",
        "naive/ours",
    ]
    notes = (
        f"{args.episodes} episodes, {size / 2**20:.0f} MB. Index built once in {index_s:.1f}s "
        f"({size / 2**20 / index_s:.0f} MB/s, +{index_mb:.0f} MB RSS); later requests re-stat "
        f"the file ({noop_ms:.2f} ms) and index only what was appended. One episode by line: "
        f"median {c.median(reads):.2f} ms ({episode_http:.1f} ms over HTTP). 'first' includes "
        "building that sort order (cached until the file grows); 'median' is the library call, "
        "'HTTP' the same page from /ui/api/trajectories of a live server (uvicorn, httpx client, "
        "same process); 'naive' parses the whole file per request."
    )
    if args.record or args.smoke:
        c.record(
            args, argv, f"Trajectory viewer paging, {args.episodes} episodes", table, header, notes
        )
    print(
        json.dumps(
            {
                "episodes": args.episodes,
                "mb": round(size / 2**20),
                "index_s": round(index_s, 2),
                "rows": table,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
