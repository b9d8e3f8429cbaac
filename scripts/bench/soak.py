"""Soak: a fixed time of mixed, partly hostile load against one server; is it still standing?

Starts ``python -m retriever.server`` over an index root with BM25 and a dense part (by default
it builds one from the bundled XML sample with the packaged MiniLM), then runs for ``--minutes``:

- closed-loop clients sending single-query ``/retrieve`` (BM25 and dense) and 64-query batches;
- ``/access`` readers paging through pages;
- malformed requests (broken JSON, wrong types, unknown retriever, topk out of range) and
  oversized ones (a 1 MB query, an ``/access`` asking for far too many characters);
- slow clients (a request dribbled out a few bytes at a time), clients that send half a request
  and stop, and idle connections that never send anything.

Meanwhile it probes ``/health`` every 0.5 s and samples the server's RSS every 2 s. The
baseline is the same server before the load: ``/health`` latency and RSS at ready, and with
``--valid-minutes M`` the valid clients alone for M minutes first (latencies under load without
the hostile clients). Prints a table and one JSON line, appends both to BENCHMARKS.md
(``--no-record`` to skip); exits 1 naming what failed (tracebacks, 5xx, a connection open past
the timeout, an oversized request answered 200, a probe not answered 200).

    .venv/bin/python scripts/bench/soak.py --minutes 10 --valid-minutes 2
    .venv/bin/python scripts/bench/soak.py --index demo-index --minutes 1 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import common as c

SAMPLE = c.TEST_DATA / "enwiki-sample-pages-articles.xml.bz2"
NQ = c.TEST_DATA / "nq-test.tsv"


def http_raw(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a fresh connection (used for the health probe and readiness)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (int(h.split(b":")[1]) for h in head.split(b"\r\n")
                     if h.lower().startswith(b"content-length:")), None,
                )  # fmt: skip
                if length is not None and len(body) >= length:
                    break
    return int(data.split(b" ", 2)[1]), data


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


# ---- the load ---------------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)

    def add(self, kind: str, status: int | str, seconds: float | None = None) -> None:
        self.status[kind][str(status)] += 1
        if seconds is not None:
            self.latency[kind].append(seconds)


async def _send(reader, writer, method: str, path: str, body: bytes, ctype: str) -> int:
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    status, head, _ = await c.read_response(reader)
    if b"connection: close" in head.lower():
        raise ConnectionResetError("server closed the connection")
    return status


async def client_loop(port, stop, stats: Stats, kind: str, make_request, pause: float = 0.0):
    """A closed-loop keep-alive client: reconnects when the server closes the connection."""
    reader = writer = None
    while time.perf_counter() < stop:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                stats.add(kind, f"connect:{type(exc).__name__}")
                await asyncio.sleep(0.2)
                continue
        method, path, body, ctype = make_request()
        t = time.perf_counter()
        try:
            status = await asyncio.wait_for(_send(reader, writer, method, path, body, ctype), 60)
            stats.add(kind, status, time.perf_counter() - t)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            stats.add(kind, f"io:{type(exc).__name__}")
            writer.close()
            writer = None
        if pause:
            await asyncio.sleep(pause)
    if writer is not None:
        writer.close()


async def slow_client(port, stop, stats: Stats):
    """Dribbles a valid request out a few bytes every 0.5 s; counts what the server did."""
    body = json.dumps({"queries": ["slow query"], "topk": 1}).encode()
    request = (
        f"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            unfinished = False
            for i in range(0, len(request), 8):
                writer.write(request[i : i + 8])
                await writer.drain()
                await asyncio.sleep(0.5)
                if time.perf_counter() > stop:
                    unfinished = i + 8 < len(request)
                    break
            if unfinished:  # the soak ended mid-request: not the server's doing
                stats.add("slow client", "unfinished at end")
                writer.close()
                break
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            stats.add("slow client", int(head.split(b" ", 2)[1]), time.perf_counter() - t)
            writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            stats.add("slow client", f"closed:{type(exc).__name__}")


async def idle_client(port, stop, stats: Stats, half: bool, timeout: float):
    """Opens a connection and sends nothing (or half a request); how long until it is closed?
    At the end, one still open is counted apart when it is younger than the server's
    ``--request-timeout`` (it is not due yet) and older (it should have been closed)."""
    kind = "half request" if half else "idle connection"
    while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if half:
                writer.write(
                    b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{"
                )
            left = max(0.1, stop - time.perf_counter())
            data = await asyncio.wait_for(reader.read(65536), left)
            stats.add(kind, "closed by server" if not data else "answered", time.perf_counter() - t)
            writer.close()
        except TimeoutError:
            age = time.perf_counter() - t
            due = "open past the timeout" if age > timeout + 2 else "open, not due yet"
            stats.add(kind, f"{due} at end")
            writer.close()
        except OSError as exc:
            stats.add(kind, f"io:{type(exc).__name__}")
            await asyncio.sleep(1)


def request_makers(queries: list[str], titles: list[str], dense: str, longest: str):
    j = json.dumps
    rnd = random.Random(0)

    def q() -> str:
        return rnd.choice(queries)

    def single_bm25():
        return "POST", "/retrieve", j({"queries": [q()], "topk": 3, "retriever": "bm25"}).encode(), "application/json"  # fmt: skip

    def single_dense():
        return "POST", "/retrieve", j({"queries": [q()], "topk": 3, "retriever": dense}).encode(), "application/json"  # fmt: skip

    def batch():
        body = {"queries": [q() for _ in range(64)], "topk": 5, "return_scores": True}
        return "POST", "/retrieve", j(body).encode(), "application/json"

    def access():
        body = {
            "titles": [rnd.choice(titles)],
            "offset": rnd.choice([0, 2000, 10**6]),
            "max_chars": 3000,
        }
        return "POST", "/access", j(body).encode(), "application/json"

    bad = [
        b"{not json",
        j({"queries": "not a list"}).encode(),
        j({"queries": ["x"], "topk": -3}).encode(),
        j({"queries": ["x"], "retriever": "no-such-retriever"}).encode(),
        j({"queries": [None, 5]}).encode(),
        b"",
    ]

    def malformed():
        return "POST", "/retrieve", rnd.choice(bad), "application/json"

    big_query = "wikipedia " * 100_000  # 1 MB

    def oversized():
        if rnd.random() < 0.5:
            return "POST", "/retrieve", j({"queries": [big_query + str(rnd.random())]}).encode(), "application/json"  # fmt: skip
        body = {"titles": [longest] * 10_000, "max_chars": 200_000}
        return "POST", "/access", j(body).encode(), "application/json"

    return {
        "retrieve bm25": single_bm25,
        "retrieve dense": single_dense,
        "retrieve batch 64": batch,
        "access": access,
        "malformed": malformed,
        "oversized": oversized,
    }


def load_process(port, seconds, mix, queries, titles, dense, longest, timeout, out) -> None:
    async def main():
        stats = Stats()
        stop = time.perf_counter() + seconds
        makers = request_makers(queries, titles, dense, longest)
        tasks = []
        for kind, n in mix.items():
            if kind in makers:
                pause = 0.5 if kind in ("oversized",) else 0.0
                tasks += [
                    client_loop(port, stop, stats, kind, makers[kind], pause) for _ in range(n)
                ]
        tasks += [slow_client(port, stop, stats) for _ in range(mix.get("slow", 0))]
        tasks += [idle_client(port, stop, stats, False, timeout) for _ in range(mix.get("idle", 0))]
        tasks += [idle_client(port, stop, stats, True, timeout) for _ in range(mix.get("half", 0))]
        await asyncio.gather(*tasks)
        return stats

    stats = asyncio.run(main())
    out.put((dict(stats.status), dict(stats.latency)))


def rows_of(status: dict, latency: dict, prefix: str = "") -> list[list]:
    rows = []
    for kind in sorted(status):
        counts = status[kind]
        lat = latency.get(kind, [])
        total = sum(counts.values())
        rows.append([
            prefix + kind, total, ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
            f"{c.percentile(lat, 50) * 1000:.1f}" if lat else "-",
            f"{c.percentile(lat, 99) * 1000:.1f}" if lat else "-",
        ])  # fmt: skip
    return rows


def monitor(server: c.ServerProcess, stop: float, health: list, rss: list) -> None:
    t0 = time.perf_counter()
    next_rss = t0
    while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
            status, _ = http_raw(server.port, get("/health"), 30)
            health.append((t - t0, status, time.perf_counter() - t))
        except OSError as exc:
            health.append((t - t0, type(exc).__name__, time.perf_counter() - t))
        if t >= next_rss:
            rss.append((t - t0, server.rss_mb()))
            next_rss += 2.0
        time.sleep(max(0.0, 0.5 - (time.perf_counter() - t)))


def main(argv: list[str] | None = None) -> int:
    import multiprocessing as mp

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--index", help="index root with bm25/ and a dense part (default: build one)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--server-args", default="", help="extra server flags, space-separated")
    ap.add_argument(
        "--request-timeout",
        type=float,
        default=20.0,
        help="the server's --request-timeout (idle and half-sent connections close after it)",
    )
    c.add_common_args(ap)
    ap.add_argument(
        "--valid-minutes",
        type=float,
        default=0.0,
        help="first run the valid clients alone this long: /health and latencies under load "
        "without the hostile ones (the baseline the hostile load is judged against)",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    tmp = None
    if args.smoke:  # three articles: the dense encode takes seconds
        args.minutes = 0.05
        index = str(c.smoke_index(dense="minilm"))
    elif args.index is None:
        tmp = tempfile.TemporaryDirectory(prefix="soak-")
        print(f"building the soak index from {SAMPLE.name} ...", flush=True)
        index = str(c.build_index(Path(tmp.name) / "index", SAMPLE, dense="minilm"))
    else:
        index = args.index
    from retriever.index import Index

    idx = Index.open(index)
    dense = idx.default_dense()
    if "bm25" not in idx.names() or dense is None:
        raise SystemExit(f"{index} needs a bm25 part and a dense part for the soak")
    store = idx.store
    titles = sorted({store.get(r).title for r in range(0, len(store), max(1, len(store) // 200))})
    longest = max(titles, key=lambda t: len(store.page(t).text))  # 10,000 copies: oversized
    queries = [line.split("\t", 1)[0] for line in NQ.read_text().splitlines()[:2000]]

    extra = ["--request-timeout", str(args.request_timeout), *args.server_args.split()]
    server = c.ServerProcess(index, *extra)
    ready = server.wait()
    rss_ready = server.rss_mb()
    idle_health = []
    for _ in range(20):
        t = time.perf_counter()
        http_raw(server.port, get("/health"))
        idle_health.append(time.perf_counter() - t)
    print(
        f"server ready in {ready:.1f} s, RSS {rss_ready:.0f} MB; soaking for {args.minutes} min",
        flush=True,
    )

    seconds = args.minutes * 60
    mix = {"retrieve bm25": 8, "retrieve dense": 4, "retrieve batch 64": 1, "access": 4,
           "malformed": 2, "oversized": 1, "slow": 4, "idle": 50, "half": 20}  # fmt: skip
    ctx = mp.get_context("spawn")

    def run_load(seconds: float, mix: dict):
        out = ctx.Queue()
        load_args = (server.port, seconds, mix, queries, titles, dense, longest,
                     args.request_timeout, out)  # fmt: skip
        proc = ctx.Process(target=load_process, args=load_args)
        health: list = []
        rss: list = []
        stop_at = time.perf_counter() + seconds
        mon = threading.Thread(target=monitor, args=(server, stop_at, health, rss), daemon=True)
        proc.start()
        mon.start()
        status, latency = out.get(timeout=seconds + 300)
        proc.join(60)
        mon.join(60)
        return status, latency, health, rss

    valid_rows, valid_health = [], []
    if args.valid_minutes > 0:  # the baseline under load: the same server, valid clients only
        valid = {k: v for k, v in mix.items() if k.startswith(("retrieve", "access"))}
        print(f"valid clients only for {args.valid_minutes} min first", flush=True)
        v_status, v_latency, v_health, _ = run_load(args.valid_minutes * 60, valid)
        valid_rows = rows_of(v_status, v_latency, "valid only: ")
        valid_health = [h[2] for h in v_health if h[1] == 200]
    status, latency, health, rss = run_load(seconds, mix)
    alive = server.proc.poll() is None
    code, stop_seconds, log = server.stop()
    tracebacks = log.count("Traceback")

    rows = valid_rows + rows_of(status, latency)
    h_lat = [h[2] for h in health if h[1] == 200]
    h_bad = Counter(str(h[1]) for h in health if h[1] != 200)
    rss_vals = [r[1] for r in rss]
    half = len(rss_vals) // 2
    summary = {
        "minutes": args.minutes,
        "ready_s": round(ready, 2),
        "rss_ready_mb": round(rss_ready, 1),
        "rss_max_mb": round(max(rss_vals), 1) if rss_vals else None,
        "rss_end_mb": round(rss_vals[-1], 1) if rss_vals else None,
        "rss_first_half_max_mb": round(max(rss_vals[:half]), 1) if half else None,
        "rss_second_half_max_mb": round(max(rss_vals[half:]), 1) if half else None,
        "health_idle_p50_ms": round(c.percentile(idle_health, 50) * 1000, 2),
        "health_valid_load_p50_ms": round(c.percentile(valid_health, 50) * 1000, 2),
        "health_valid_load_p99_ms": round(c.percentile(valid_health, 99) * 1000, 2),
        "health_load_p50_ms": round(c.percentile(h_lat, 50) * 1000, 2),
        "health_load_p99_ms": round(c.percentile(h_lat, 99) * 1000, 2),
        "health_load_max_ms": round(max(h_lat) * 1000, 2) if h_lat else None,
        "health_not_200": dict(h_bad),
        "server_alive_at_end": alive,
        "sigterm_exit_code": code,
        "sigterm_seconds": round(stop_seconds, 2),
        "tracebacks_in_log": tracebacks,
        "status": {k: dict(v) for k, v in status.items()},
    }
    header = ["load", "requests", "outcomes (status: count)", "p50 ms", "p99 ms"]
    print("| " + " | ".join(header) + " |")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print(json.dumps(summary))
    if not args.no_record:
        notes = (
            f"Server ready in {summary['ready_s']} s. RSS: {summary['rss_ready_mb']} MB at ready "
            f"(baseline), max {summary['rss_max_mb']} MB, end {summary['rss_end_mb']} MB (max of first "
            f"half {summary['rss_first_half_max_mb']}, of second half {summary['rss_second_half_max_mb']}). "
            f"/health: {summary['health_idle_p50_ms']} ms p50 idle (baseline); "
            + (
                f"under the valid clients alone for {args.valid_minutes:g} min first (rows 'valid "
                f"only'), p50 {summary['health_valid_load_p50_ms']} ms, p99 "
                f"{summary['health_valid_load_p99_ms']} ms; "
                if valid_health
                else ""
            )
            + "under the full load p50 "
            f"{summary['health_load_p50_ms']} ms, p99 {summary['health_load_p99_ms']} ms, max "
            f"{summary['health_load_max_ms']} ms; probes not answered 200: {dict(h_bad) or 'none'}. "
            f"Server alive at the end: {alive}; SIGTERM -> exit {code} in {summary['sigterm_seconds']} s; "
            f"tracebacks in its log: {tracebacks}. Clients: {mix}; server --request-timeout "
            f"{args.request_timeout:g} s (an idle or half-sent connection is due to close after it)."
        )
        c.append_section(
            f"Soak: {args.minutes:g} min of mixed and hostile load, BM25 + {dense}",
            f"scripts/bench/soak.py --minutes {args.minutes:g}"
            + (f" --valid-minutes {args.valid_minutes:g}" if args.valid_minutes else ""),
            rows, header, notes, smoke=args.smoke,
        )  # fmt: skip
    if tmp is not None:
        tmp.cleanup()
    outcomes = Counter()
    for counts in status.values():
        outcomes.update(counts)
    overdue = sum(v for k, v in outcomes.items() if "past the timeout" in k)
    errors = sum(v for k, v in outcomes.items() if k.isdigit() and int(k) >= 500)
    oversized_ok = status.get("oversized", {}).get("200", 0)
    failed = {
        "server died": not alive, "/health not 200": bool(h_bad), "tracebacks": tracebacks,
        "5xx answers": errors, "connections open past the timeout": overdue,
        "oversized answered 200": oversized_ok, "SIGTERM exit code": code,
    }  # fmt: skip
    failed = {k: v for k, v in failed.items() if v}
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
