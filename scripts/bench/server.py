"""Server throughput: coalesced batching vs one query per batch (``--max-batch 1``, Search-R1's design).

Starts ``python -m retriever.server`` in a subprocess per mode, and drives it from a load
generator in separate processes (so the client never steals the server's event loop): closed-loop
clients sending single-query ``/retrieve`` requests at each concurrency, with the NQ test
questions as queries and the result cache off. Then one request of 2,560 queries (how Search-R1's
trainer calls). Prints a table and one JSON line; appends the rows to BENCHMARKS.md.

``--baseline-repo DIR`` compares this checkout's server with another checkout's instead (both
coalesced, same flags and index, alternating runs): the before/after of a change to the server.

    .venv/bin/python scripts/bench/server.py --index /tmp/h5/wx --retriever bm25
    .venv/bin/python scripts/bench/server.py --smoke  # a few bundled articles, 0.5 s per point
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common as c


def start_server(
    index: str, retriever: str, max_batch: int, extra: list[str], repo: Path = c.REPO
) -> tuple[c.ServerProcess, float]:
    """A ready server process running the code of ``repo`` (this checkout, or a baseline
    copy); its RSS at ready from ``/info``."""
    import httpx

    flags = ["--retrievers", retriever, "--max-batch", str(max_batch), "--cache-size", "0"]
    server = c.ServerProcess(index, *flags, "--queue-size", "4096", *extra, repo=repo)
    server.wait()
    return server, httpx.get(server.url + "/info").json()["rss_bytes_at_ready"]


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of the server process, its threads and its ``--workers``
    processes so far."""
    import psutil

    total = 0.0
    process = psutil.Process(pid)
    for p in [process, *process.children()]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _generator(args) -> tuple[list[float], int, float]:
    """One load-generator process: ``clients`` closed-loop clients for ``seconds``."""
    url, retriever, queries, clients, seconds, offset, per_request = args
    import orjson

    step = (clients * 7 + 1) * per_request

    def request(i: int, n: int, host: str) -> bytes:
        at = (offset + i + n * step) % (len(queries) - per_request + 1)
        body = orjson.dumps(
            {"queries": queries[at : at + per_request], "topk": 3, "retriever": retriever}
        )
        return c.http_request("POST", "/retrieve", host, body)

    return c.closed_loop(
        url,
        clients,
        seconds,
        request,
        lambda status, data: status == 200 and data.startswith(b'{"result"'),
    )


def drive(
    url: str,
    retriever: str,
    queries: list[str],
    concurrency: int,
    seconds: float,
    procs: int,
    per_request: int = 1,
):
    latencies, errors, elapsed = c.in_processes(
        _generator,
        concurrency,
        procs,
        lambda i, share: (url, retriever, queries, share, seconds, i * 1000, per_request),
    )
    return {
        "qps": len(latencies) / elapsed,
        "queries_s": per_request * len(latencies) / elapsed,
        "p50_ms": c.percentile(latencies, 50),
        "p99_ms": c.percentile(latencies, 99),
        "requests": len(latencies),
        "errors": errors,
    }


def big_request(url: str, retriever: str, queries: list[str], repeats: int = 3) -> float:
    import httpx

    body = {"queries": queries[:2560], "topk": 3, "return_scores": True, "retriever": retriever}

    def once() -> float:
        t = time.perf_counter()
        r = httpx.post(url + "/retrieve", json=body, timeout=600)
        r.raise_for_status()
        assert len(r.json()["result"]) == len(body["queries"])
        return time.perf_counter() - t

    return c.median(once() for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--index", help="index root with the retriever part")
    ap.add_argument("--retriever", default="bm25")
    ap.add_argument("--concurrency", default="1,16,64,256")
    ap.add_argument("--seconds", type=float, default=6.0, help="per concurrency point")
    ap.add_argument("--procs", type=int, default=1, help="load-generator processes")
    ap.add_argument("--max-batch", type=int, default=64, help="coalesced mode's batch size")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    ap.add_argument(
        "--tree-arg",
        action="append",
        default=[],
        help="extra flag for this tree's server only (e.g. --tree-arg=--workers --tree-arg=2)",
    )
    ap.add_argument(
        "--queries-per-request",
        type=int,
        default=1,
        help="queries in each client request (issue 26's 4 clients x 64 queries: 64)",
    )
    ap.add_argument(
        "--baseline-repo",
        type=Path,
        help="instead of max-batch 1, compare against a server running the code of this "
        "checkout (e.g. `git archive REV | tar -x -C DIR`), same flags, same index",
    )
    ap.add_argument("--repeats", type=int, default=1, help="runs per point (median reported)")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.index = str(c.smoke_index())
        args.concurrency, args.seconds, args.repeats = "4", 0.5, 1  # one point, no warm-up
    if not args.index:
        ap.error("--index is required (or --smoke)")
    queries = c.nq_questions(3610, smoke=args.smoke)
    per_request = args.queries_per_request
    levels = [int(n) for n in args.concurrency.split(",")]
    if args.baseline_repo:
        modes = {
            "this tree": (args.max_batch, c.REPO, args.tree_arg),
            "baseline": (args.max_batch, args.baseline_repo, []),
        }
    else:
        modes = {
            "coalesced": (args.max_batch, c.REPO, args.tree_arg),
            "max-batch 1": (1, c.REPO, args.tree_arg),
        }
    first, second = list(modes)
    rows, out = [], {"retriever": args.retriever, "index": args.index, "machine": c.machine()}
    # Both servers run side by side (an idle one costs no CPU) and the modes alternate at each
    # concurrency, so drift in the machine's load does not favour the mode measured last.
    servers = {}
    pids: dict[str, int] = {}
    try:
        for mode, (max_batch, repo, own) in modes.items():
            flags = [*args.server_arg, *own]
            server, rss = start_server(args.index, args.retriever, max_batch, flags, repo)
            servers[mode] = (server, server.url)
            pids[mode] = server.pid
            out[f"{mode} ready_s"] = round(server.ready_s, 2)
            out[f"{mode} rss_mb"] = round(rss / 2**20)
        for _, url in servers.values():  # warm up: every query once, then the loop
            for i in range(0, len(queries), 512):
                big_request(url, args.retriever, queries[i : i + 512], repeats=1)
            if not args.smoke:  # each drive starts its load generators afresh: seconds
                drive(url, args.retriever, queries[-200:], 8, min(1.5, args.seconds), args.procs)
        for n in levels:
            runs: dict[str, list[dict]] = {mode: [] for mode in servers}
            for _ in range(args.repeats):  # alternate: drift hits both modes alike
                for mode, (_, url) in servers.items():
                    before = server_cpu(pids[mode])
                    r = drive(
                        url, args.retriever, queries, n, args.seconds, args.procs, per_request
                    )
                    # CPU the server spent per answered request: robust to other jobs' load
                    r["cpu_ms"] = 1000 * (server_cpu(pids[mode]) - before) / max(r["requests"], 1)
                    runs[mode].append(r)
            for mode in servers:
                r = c.medians(runs[mode])
                rows.append(
                    [
                        mode,
                        n,
                        per_request,
                        f"{r['qps']:.0f}",
                        f"{r['queries_s']:.0f}",
                        f"{r['p50_ms']:.1f}",
                        f"{r['p99_ms']:.1f}",
                        f"{r['cpu_ms']:.2f}",
                        r["errors"],
                    ]
                )
                out[f"{mode} c={n}"] = {k: round(v, 2) for k, v in r.items()}
                print(
                    f"{mode:12s} c={n:<4d} {r['qps']:8.0f} q/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  cpu {r['cpu_ms']:.2f} ms/req  errors {r['errors']}",
                    flush=True,
                )
        for mode, (_, url) in servers.items():
            t = big_request(url, args.retriever, queries)
            out[f"{mode} 2560 queries in one request s"] = round(t, 3)
            print(
                f"{mode}: one request of 2,560 queries: {t:.2f} s ({2560 / t:.0f} q/s)", flush=True
            )
    finally:
        for server, _ in servers.values():
            server.stop(30)
    ratios = {}
    for n in levels:
        a, b = out[f"{first} c={n}"]["qps"], out[f"{second} c={n}"]["qps"]
        ratios[n] = a / b if b else float("inf")
    out["speedup"] = {str(n): round(v, 2) for n, v in ratios.items()}
    cpu = {n: out[f"{first} c={n}"]["cpu_ms"] / out[f"{second} c={n}"]["cpu_ms"] for n in levels}
    big = out[f"{first} 2560 queries in one request s"]

    header = ["mode", "clients", "queries/request", "req/s", "queries/s", "p50 ms", "p99 ms",
              "server CPU ms/req", "errors"]  # fmt: skip
    print()
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(x) for x in row))
    print(f"req/s {first} / {second}: " + ", ".join(f"c={n}: {v:.2f}x" for n, v in ratios.items()))
    print(
        f"server CPU/request {first} / {second}: "
        + ", ".join(f"c={n}: {v:.2f}x" for n, v in cpu.items())
    )
    print(json.dumps({"bench": "server", **out}))
    if not args.no_record:
        what = "this tree vs baseline" if args.baseline_repo else "coalescing"
        notes = (
            f"Retriever `{args.retriever}` on `{args.index}`; {per_request}-query requests, "
            f"topk 3, cache off, {' '.join(args.tree_arg) or 'no extra flags'} for "
            f"{first}, "
            f"{args.procs} load-generator processes, {args.seconds:.0f} s per point, median of "
            f"{args.repeats} alternating run(s). Req/s ratio of {what} ({first} / {second}): "
            + ", ".join(f"c={n}: {v:.2f}x" for n, v in ratios.items())
            + "; server CPU per request ratio: "
            + ", ".join(f"c={n}: {v:.2f}x" for n, v in cpu.items())
            + f". One request of 2,560 queries: {big:.2f} s ({first}), "
            f"{out[f'{second} 2560 queries in one request s']:.2f} s ({second}). "
            f"Time-to-ready {out[f'{first} ready_s']} s, RSS {out[f'{first} rss_mb']} MB."
        )
        c.record(args, argv, f"Server: {first} vs {second} ({args.retriever})", rows, header, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
