"""Where a single-query ``POST /retrieve`` spends its time, layer by layer (issue 26).

Two views, printed as one table and recorded:

- in process, no sockets: the median cost of each layer called on its own (body parse +
  pydantic validation, the BM25 library search, the service's queue hand-off to its worker
  thread and back, building the answer from the store, orjson + the Response object, and the
  whole ASGI app with the search stubbed, through the fast path and through FastAPI);
- under load: ``python -m retriever.server`` driven by ``server.py``'s raw-socket clients at
  1 and 16 clients while py-spy samples it; each sample goes to the layer of its innermost
  recognised frame (uvicorn/httptools, Starlette/FastAPI, our handler, the hand-off, the BM25
  kernel, uvloop's C code), shown as a share of the server's samples and as microseconds of
  server CPU per request (share x the server's CPU per request, measured from its own counters).

    .venv/bin/python scripts/bench/server_layers.py --index /tmp/h5/hotpot
    .venv/bin/python scripts/bench/server_layers.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common as c
import server as load

log = logging.getLogger(__name__)

# (substring of a frame, layer): the innermost frame that matches decides a sample's layer
RULES = [
    ("retriever/bm25/", "BM25 search (worker thread)"),
    ("numpy/", "BM25 search (worker thread)"),
    ("Batcher._take_batch", "hand-off: worker wake-up and batching"),
    ("Batcher._serve", "hand-off: worker wake-up and batching"),
    ("_call_set_state", "hand-off: futures and loop wake-up"),
    ("Future._invoke_callbacks", "hand-off: futures and loop wake-up"),
    ("RetrievalService.submit.<locals>.fill", "hand-off: futures and loop wake-up"),
    ("retriever/store/", "answer building (store reads, dicts)"),
    ("retriever/index.py", "answer building (store reads, dicts)"),
    ("retrieve_response", "answer building (store reads, dicts)"),
    ("format_hits", "answer building (store reads, dicts)"),
    ("json_response", "orjson + Response object"),
    ("fastpath.py", "our handler (fast path: headers, body read)"),
    ("asyncio/futures.py", "hand-off: futures and loop wake-up"),
    ("retriever/server/batching.py", "hand-off: submit (event loop side)"),
    ("retriever/server/service.py", "hand-off: submit (event loop side)"),
    ("retriever/server/limits.py", "hand-off: submit (event loop side)"),
    ("wire.py", "body parse (orjson) + pydantic validation"),
    ("pydantic", "body parse (orjson) + pydantic validation"),
    ("read_body", "our handler (fast path: headers, body read)"),
    ("RequestMetrics", "metrics middleware"),
    ("prometheus_client", "metrics middleware"),
    ("retriever/server/metrics.py", "metrics middleware"),
    ("hosts.py", "FastAPI/Starlette: middleware, routing, dependencies"),
    ("starlette/", "FastAPI/Starlette: middleware, routing, dependencies"),
    ("fastapi/", "FastAPI/Starlette: middleware, routing, dependencies"),
    ("metrics/_internal", "FastAPI/Starlette: middleware, routing, dependencies"),
    ("contextlib.py", "FastAPI/Starlette: middleware, routing, dependencies"),
    ("RequestResponseCycle.send", "uvicorn: response writes (send syscalls)"),
    ("HeadWithBody", "uvicorn: response writes (send syscalls)"),
    ("uvicorn/middleware", "uvicorn: ASGI task, proxy headers"),
    ("run_asgi", "uvicorn: ASGI task, proxy headers"),
    ("httptools_impl", "uvicorn: httptools parsing, protocol callbacks"),
    ("h11_impl", "uvicorn: h11 parsing, protocol callbacks"),
    ("retriever/server/lifecycle.py", "uvicorn: httptools parsing, protocol callbacks"),
    ("Runner.run", "event loop (uvloop's C code: epoll, recv, scheduling)"),
]


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for key, name in RULES:
            if key in frame:
                return name
    return "other"


def layer_shares(raw: Path) -> dict[str, float]:
    """py-spy's raw (collapsed) output -> share of the non-idle samples per layer."""
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if "Condition.wait" in frames[-1] and "_take_batch" in stack:
            continue  # the worker thread idle, waiting for a request
        counts[layer_of(frames)] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.items()}


def profile_under_load(
    index: str, clients: int, seconds: float, queries: list[str], flags, repo: Path = c.REPO
):
    """(layer shares, server CPU ms per request, req/s) of a server under ``clients``."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).is_file():  # it comes with ray[default]; without it, no shares
        log.warning("py-spy is not installed: the under-load shares are left out")
        py_spy = None
    server, _ = load.start_server(index, "bm25", 64, flags, repo)
    try:
        url = server.url
        load.drive(url, "bm25", queries[-200:], clients, min(1.0, seconds), 1)  # warm up
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.txt"
            spy = py_spy and subprocess.Popen(
                [py_spy, "record", "--pid", str(server.pid), "--format", "raw", "-o", str(raw),
                 "-r", "200", "-d", str(int(seconds) + 1), "--nonblocking", "-t"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(0.5)  # py-spy attached
            before = load.server_cpu(server.pid)
            r = load.drive(url, "bm25", queries, clients, seconds, 1)
            cpu_ms = 1000 * (load.server_cpu(server.pid) - before) / max(r["requests"], 1)
            if spy:
                spy.wait(seconds + 30)
            shares = layer_shares(raw) if raw.exists() else {}
    finally:
        server.stop(30)
    return shares, cpu_ms, r["qps"]


def in_process(index: str, queries: list[str], n: int) -> dict[str, float]:
    """Median microseconds of each layer called alone (one query, topk 3)."""
    import orjson

    from retriever import wire
    from retriever.server.app import create_app
    from retriever.server.fastpath import format_hits
    from retriever.server.service import RetrievalService
    from retriever.server.service_config import ServiceConfig
    from retriever.server.web import json_response

    service = RetrievalService(ServiceConfig(index=index, retrievers=("bm25",), cache_size=0))
    service.start()
    loop = asyncio.new_event_loop()
    try:
        retriever = service.index.retriever("bm25")
        bodies = [orjson.dumps({"queries": [q], "topk": 3, "retriever": "bm25"}) for q in queries]
        m = len(queries)

        def us(fn, count=n) -> float:
            times = []
            for i in range(count):
                t = time.perf_counter()
                fn(i % m)
                times.append(time.perf_counter() - t)
            return 1e6 * c.median(times)

        def parse(i):
            obj, _ = wire.decode_body(bodies[i], "application/json")
            return wire.parse(wire.RetrieveRequest, obj)

        requests = [parse(i) for i in range(m)]
        hits = [retriever.search([q], 3) for q in queries]
        answers = [format_hits(service, hits[i], requests[i], False) for i in range(m)]
        out = {
            "body parse (orjson) + pydantic validation": us(parse),
            "BM25 search (library call, 1 query)": us(lambda i: retriever.search([queries[i]], 3)),
            "service.asearch round trip (hand-off + search)": us(
                lambda i: loop.run_until_complete(service.asearch([queries[i]], 3, "bm25"))
            ),
            "answer building (store reads, dicts)": us(
                lambda i: format_hits(service, hits[i], requests[i], False)
            ),
            "orjson + Response object": us(lambda i: json_response(answers[i])),
        }
        out["hand-off alone (round trip - library search)"] = (
            out["service.asearch round trip (hand-off + search)"]
            - out["BM25 search (library call, 1 query)"]
        )

        async def stub(queries, topk=None, retriever=None, rerank_depth=None):
            return hits[0]

        service.asearch = stub  # the app alone: the search answers at once
        for label, fast in (("fast path", True), ("FastAPI route", False)):
            app = create_app(service, background=False, fast_path=fast)

            def call(i, app=app):
                loop.run_until_complete(_asgi(app, bodies[i]))

            out[f"whole ASGI app, search stubbed ({label})"] = us(call)
        out["FastAPI/Starlette per request (route - fast path)"] = (
            out["whole ASGI app, search stubbed (FastAPI route)"]
            - out["whole ASGI app, search stubbed (fast path)"]
        )
    finally:
        loop.close()
        service.stop()
    return out


async def _asgi(app, body: bytes) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/retrieve", "raw_path": b"/retrieve", "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--index", help="index root with a bm25 part")
    ap.add_argument("--clients", default="1,16", help="load points profiled with py-spy")
    ap.add_argument("--seconds", type=float, default=6.0, help="per load point")
    ap.add_argument("--calls", type=int, default=2000, help="in-process calls per layer")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    ap.add_argument(
        "--repo",
        type=Path,
        default=c.REPO,
        help="profile the server of this checkout under load (e.g. the commit before a change)",
    )
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.index = str(c.smoke_index())
        args.clients, args.seconds, args.calls = "4", 1.0, 200
    if not args.index:
        ap.error("--index is required (or --smoke)")
    queries = c.nq_questions(3610, smoke=args.smoke)
    alone = in_process(args.index, queries, args.calls)
    levels = [int(x) for x in args.clients.split(",")]
    loaded = {n: profile_under_load(args.index, n, args.seconds, queries, args.server_arg,
                                    args.repo)
              for n in levels}  # fmt: skip
    layers = sorted({k for shares, _, _ in loaded.values() for k in shares},
                    key=lambda k: -max(s.get(k, 0) for s, _, _ in loaded.values()))  # fmt: skip
    header = ["layer", "in-process us (alone)"]
    for n in levels:
        header += [f"{n} clients: share", f"{n} clients: us CPU/req"]
    rows = [[k, f"{v:.1f}"] + ["" for _ in levels for _ in (0, 1)] for k, v in alone.items()]
    for k in layers:
        row = [k, ""]
        for n in levels:
            shares, cpu_ms, _ = loaded[n]
            share = shares.get(k, 0.0)
            row += [f"{100 * share:.1f}%", f"{1000 * cpu_ms * share:.0f}"]
        rows.append(row)
    totals = ["server total (CPU per request; req/s)", ""]
    for n in levels:
        _, cpu_ms, qps = loaded[n]
        totals += [f"{qps:.0f} req/s", f"{1000 * cpu_ms:.0f}"]
    rows.append(totals)
    c.print_table(header, rows)
    out = {"bench": "server_layers", "index": args.index, "machine": c.machine(),
           "in_process_us": {k: round(v, 1) for k, v in alone.items()},
           "under_load": {str(n): {"cpu_ms_per_request": round(cpu, 3), "req_s": round(q),
                                   "shares": {k: round(v, 4) for k, v in s.items()}}
                          for n, (s, cpu, q) in loaded.items()}}  # fmt: skip
    print(json.dumps(out))
    notes = (
        f"Server code under load: {'this tree' if args.repo == c.REPO else args.repo}. "
        "Single-query /retrieve, topk 3, cache off. In-process rows: median microseconds of each "
        f"layer called alone ({args.calls} calls, no sockets). Under load: py-spy (200 Hz, "
        "non-idle samples of every thread) over the server while server.py's raw-socket clients "
        f"drive it for {args.seconds:g} s; a sample counts for the innermost frame a rule "
        "recognises; us CPU/req = share x the server's own CPU time per answered request. "
        "Shares of threads waiting for the GIL count for where they wait. Shared, noisy "
        "machine: compare rows within this run."
    )
    c.record(args, argv, "Server: where a /retrieve request's time goes (bm25)", rows, header,
             notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
