"""Env steps per second: batched (one backend call per step) vs the same episodes one at a time.

Backend: the in-process client over the HotpotQA mini corpus (BM25), cache warm. Each episode
is a scripted oracle: search both gold titles, access a page, answer (4 steps). A replay client
that returns recorded results isolates the env's own overhead (parsing, formatting, scoring).

    python scripts/bench/env_steps.py [--episodes 512] [--repeat 5] [--style asearcher]
    python scripts/bench/env_steps.py --smoke  # 16 episodes, one repeat, nothing recorded
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import common as c


class ReplayClient:
    """Answers from results recorded off a real client (dict lookups only)."""

    def __init__(self, inner):
        self.inner = inner
        self.docs: dict[tuple, list] = {}
        self.pages: dict[tuple, dict | None] = {}

    def retrieve(self, queries, topk=3, retriever=None):
        missing = [q for q in queries if (q, topk) not in self.docs]
        if missing:
            for q, docs in zip(missing, self.inner.retrieve(missing, topk, retriever)):
                self.docs[(q, topk)] = docs
        return [self.docs[(q, topk)] for q in queries]

    def access(self, urls=(), titles=(), ids=(), offset=0, max_chars=None):
        out = []
        for kind, names in (("u", urls), ("t", titles), ("i", ids)):
            for name in names:
                key = (kind, name, offset, max_chars)
                if key not in self.pages:
                    args = {"urls": [], "titles": [], "ids": []}
                    args[{"u": "urls", "t": "titles", "i": "ids"}[kind]] = [name]
                    self.pages[key] = self.inner.access(**args, offset=offset, max_chars=max_chars)[
                        0
                    ]
                out.append(self.pages[key])
        return out


def scripts_for(tasks, style: str) -> list[list[str]]:
    c.use_test_helpers()
    from env_support import gold_titles

    out = []
    for task in tasks:
        a, b = (gold_titles(task) + gold_titles(task))[:2]
        if style == "tool-call":
            turns = [
                f'<tool_call>{{"name": "search", "arguments": {{"query": {json.dumps(a)}}}}}</tool_call>',
                f'<tool_call>{{"name": "search", "arguments": {{"query": {json.dumps(b)}}}}}</tool_call>',
                f'<tool_call>{{"name": "access", "arguments": {{"url": {json.dumps(b)}}}}}</tool_call>',
                f"<answer>{task.answers[0]}</answer>",
            ]
        else:
            turns = [
                f"<think>first</think>\n<search>{a}</search>",
                f"<think>second</think>\n<search>{b}</search>",
                f"<think>read</think>\n<access>{b}</access>",
                f"<think>done</think>\n<answer>{task.answers[0]}</answer>",
            ]
        out.append(turns)
    return out


def run_batched(client, tasks, scripts, style) -> tuple[float, int]:
    from env.batched import BatchedSearchEnv

    benv = BatchedSearchEnv(client, num_envs=len(tasks), style=style)
    t = time.perf_counter()
    benv.reset(options=[task.options() for task in tasks])
    steps = 0
    for turn in range(4):
        benv.step([s[turn] for s in scripts])
        steps += len(scripts)
    return time.perf_counter() - t, steps


def run_serial(client, tasks, scripts, style) -> tuple[float, int]:
    from env.search_env import SearchEnv

    env = SearchEnv(client, style=style)
    t = time.perf_counter()
    steps = 0
    for task, script in zip(tasks, scripts):
        env.reset(options=task.options())
        for text in script:
            env.step(text)
            steps += 1
    return time.perf_counter() - t, steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--style", default="asearcher", choices=["asearcher", "search-r1", "tool-call"])
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.episodes, args.repeat = 16, 1
    c.use_test_helpers()
    from env_support import hotpot_tasks

    from index_build.__main__ import main as build
    from retriever.client import InProcessClient

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name) / "hotpot"
    hotpot = c.TEST_DATA / "hotpotqa-distractor-500.jsonl"
    assert build(["corpus", "--input", str(hotpot), "--out", str(root), "--no-progress"]) == 0
    assert build(["bm25", "--index", str(root), "--no-progress"]) == 0
    tasks = (hotpot_tasks() * (args.episodes // 500 + 1))[: args.episodes]
    scripts = scripts_for(tasks, args.style)
    client = InProcessClient(root)
    replay = ReplayClient(client)

    results = {}
    for label, backend in (("in-process", client), ("replay", replay)):
        for mode, fn in (("batched", run_batched), ("one-at-a-time", run_serial)):
            fn(backend, tasks, scripts, args.style)  # warm-up: fills the caches
            rates = []
            for _ in range(args.repeat):
                seconds, steps = fn(backend, tasks, scripts, args.style)
                rates.append(steps / seconds)
            results[(label, mode)] = c.median(rates)

    # the backend alone: the same calls a batched step makes, without the env
    queries = (
        [s[0].split("<search>")[1].split("</search>")[0] for s in scripts]
        if args.style != "tool-call"
        else None
    )
    raw = []
    if queries:
        for _ in range(args.repeat):
            t = time.perf_counter()
            client.retrieve(queries, topk=3)
            raw.append(len(queries) / (time.perf_counter() - t))
    client.close()
    tmp.cleanup()

    header = ["backend", "mode", "steps/s (median)", "vs one-at-a-time"]
    table = []
    for label in ("in-process", "replay"):
        base = results[(label, "one-at-a-time")]
        for mode in ("batched", "one-at-a-time"):
            rate = results[(label, mode)]
            table.append([label, mode, f"{rate:,.0f}", f"{rate / base:.2f}x"])
    if raw:
        table.append(
            ["in-process", "retrieve() alone, 1 call", f"{c.median(raw):,.0f} queries/s", "-"]
        )
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    summary = {
        "bench": "env",
        "style": args.style,
        "episodes": args.episodes,
        "steps_per_s": {f"{k[0]}/{k[1]}": round(v) for k, v in results.items()},
        "batched_speedup_inprocess": round(
            results[("in-process", "batched")] / results[("in-process", "one-at-a-time")], 2
        ),
        "env_overhead_steps_per_s": round(results[("replay", "batched")]),
        "goal_5000_met": results[("replay", "batched")] >= 5000,
    }
    print(json.dumps(summary))
    c.record(
        args,
        argv,
        "Env steps per second",
        table,
        header,
        f"{args.episodes} scripted episodes x 4 steps (search, search, access, answer), HotpotQA "
        "mini corpus, BM25, service cache warm. `replay` answers from recorded results: "
        "the env's own overhead. Goal: env overhead >= 5,000 steps/s.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
