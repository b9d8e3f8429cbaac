"""Web-style endpoints under the load shapes of ``/retrieve``: p50/p99 and requests/s.

One server (``python -m retriever.server``, result cache off) and a load-generator process
of closed-loop keep-alive clients (1, 16, 64) sending one query per request to ``/retrieve``
(the baseline, measured in the same run), Serper-style ``POST /search``, OpenResearcher-style
``POST /search`` and Jina-Reader-style ``GET /r/<url>``; the endpoints alternate at each
concurrency so the machine's drift hits them alike. The web search endpoints add a
query-biased snippet per hit (``retriever/server/snippets.py``) to the same search. The
server's CPU per request (its process's user + system time over the run / requests) is the
cost figure that a busy shared machine disturbs least.

    .venv/bin/python scripts/bench/web_api.py --index /tmp/h5/wx
    .venv/bin/python scripts/bench/web_api.py --smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp

import common as c
import server as load

ENDPOINTS = ("retrieve", "serper", "openresearcher", "jina")


def request_bytes(endpoint: str, host: str, q: str, url: str) -> bytes:
    """One HTTP/1.1 request of ``endpoint`` for query ``q`` (or page ``url``)."""
    import orjson

    if endpoint == "jina":
        return c.http_request("GET", f"/r/{url}", host)
    path, body = {
        "retrieve": ("/retrieve", {"queries": [q], "topk": 3}),
        "serper": ("/search", {"q": q, "num": 3}),
        "openresearcher": ("/search", {"query": q, "topn": 3}),
    }[endpoint]
    return c.http_request("POST", path, host, orjson.dumps(body))


def _generator(args) -> tuple[list[float], int, float]:
    """Closed-loop clients in this process for ``seconds``: latencies, errors, elapsed."""
    base, endpoint, queries, urls, clients, seconds = args

    def request(i: int, n: int, host: str) -> bytes:
        j = i + (n + 1) * (clients * 7 + 1)
        return request_bytes(endpoint, host, queries[j % len(queries)], urls[j % len(urls)])

    return c.closed_loop(base, clients, seconds, request)


def drive(pool, server, endpoint: str, queries, urls, clients: int, seconds: float) -> dict:
    before = load.server_cpu(server.pid)
    lat, errors, elapsed = pool.apply(
        _generator, ((server.url, endpoint, queries, urls, clients, seconds),)
    )
    ms = [1000 * x for x in lat]
    return {
        "rps": len(ms) / elapsed,
        "p50_ms": c.percentile(ms, 50),
        "p99_ms": c.percentile(ms, 99),
        "cpu_ms": 1000 * (load.server_cpu(server.pid) - before) / max(len(ms), 1),
        "errors": errors,
    }


def page_urls(base: str, queries: list[str]) -> list[str]:
    """Links the server's own Serper endpoint returns: pages the Reader endpoint has."""
    import httpx

    body = [{"q": q, "num": 3} for q in queries[:50]]
    out = httpx.post(base + "/search", json=body, timeout=120).json()
    return sorted({o["link"] for r in out for o in r["organic"]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--index", help="index root with a bm25 part")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--seconds", type=float, default=3.0, help="per endpoint and point")
    ap.add_argument("--repeats", type=int, default=1, help="alternating rounds (median)")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.index = str(c.smoke_index())
        args.concurrency, args.seconds = "1,4", 0.4
    if not args.index:
        ap.error("--index is required (or --smoke)")
    queries = c.nq_questions(2000, smoke=args.smoke)
    levels = [int(n) for n in args.concurrency.split(",")]
    rows, out = [], {"index": args.index, "machine": c.machine()}
    with c.ServerProcess(args.index, "--cache-size", "0", "--queue-size", "4096") as server:
        urls = page_urls(server.url, queries)
        with mp.get_context("spawn").Pool(1) as pool:
            for endpoint in ENDPOINTS:  # warm up every path once
                drive(pool, server, endpoint, queries, urls, 4, min(0.5, args.seconds))
            for n in levels:
                fns = {
                    e: (lambda e=e, n=n: drive(pool, server, e, queries, urls, n, args.seconds))
                    for e in ENDPOINTS
                }
                runs = c.alternate(fns, args.repeats)
                for e in ENDPOINTS:
                    r = c.medians(runs[e])
                    row = [e, n, round(r["rps"]), round(r["p50_ms"], 2), round(r["p99_ms"], 2)]
                    rows.append(row + [round(r["cpu_ms"], 3), int(r["errors"])])
                    out[f"{e}@{n}"] = {k: round(v, 2) for k, v in r.items()}
    header = ["endpoint", "clients", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "errors"]
    c.print_table(header, rows)
    print(json.dumps(out))
    c.record(
        args,
        argv,
        "Web-API endpoints vs /retrieve (one query per request, cache off)",
        rows,
        header,
        "serper/openresearcher: POST /search with a query-biased snippet per hit; "
        "jina: GET /r/<url> of a page from those results; /retrieve is the baseline.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
