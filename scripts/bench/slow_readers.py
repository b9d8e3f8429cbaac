"""Slow readers: clients that ask for a large ``/access`` answer and never read it.

Starts ``python -m retriever.server`` on 127.0.0.1 over an index root with pages (by default it
builds one from the bundled XML sample: corpus and BM25, a few seconds), reads one large answer
in full (the baseline: RSS once the server has built and sent one), then opens ``--clients``
connections that each send the same ``/access`` request with a small receive buffer and never
read. It samples the server's RSS for ``--hold`` seconds and reads ``/metrics`` (connections open
and closed by reason) at the end. Bounded in time; 127.0.0.1 only. Prints a table and one JSON
line; server flags after ``--`` (e.g. ``-- --send-timeout 5``).

    .venv/bin/python scripts/bench/slow_readers.py --clients 40 --hold 25
    .venv/bin/python scripts/bench/slow_readers.py --clients 40 --hold 25 -- --send-timeout 5
    .venv/bin/python scripts/bench/slow_readers.py --smoke  # 3 articles, 4 clients, 1 s waves
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import common as c
import httpx

SAMPLE = c.TEST_DATA / "enwiki-sample-pages-articles.xml.bz2"


def large_request(root: str, answer_chars: int) -> tuple[bytes, int]:
    """An ``/access`` body whose answer carries about ``answer_chars`` characters of page text."""
    from retriever.index import Index

    store = Index.open(root).store
    pages = [store.get_page(row) for row in range(store.num_pages)]
    if not pages:
        raise SystemExit(
            f"{root} has no pages: give an index built from a dump (XML, WikiExtractor)"
        )
    titles, sizes = [p.title for p in pages], [len(p.text) for p in pages]
    chars = 0
    chosen = []
    while chars < answer_chars:
        for title, size in zip(titles, sizes, strict=True):
            chosen.append(title)
            chars += size
            if chars >= answer_chars:
                break
    return json.dumps({"titles": chosen}).encode(), len(chosen)


def metric_lines(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith(("retriever_connections_closed", "retriever_open_connections")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--index", help="index root with pages (default: built from the XML sample)")
    p.add_argument("--clients", type=int, default=40)
    p.add_argument("--answer-mb", type=float, default=15.5, help="page text per answer, MB")
    p.add_argument("--hold", type=float, default=20.0, help="seconds to watch each wave")
    p.add_argument("--waves", type=int, default=2, help="waves of clients, none ever closed")
    c.add_common_args(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.index = args.index or str(c.smoke_index())
        args.clients, args.answer_mb, args.hold, args.waves = 4, 0.2, 1.0, 2

    tmp = tempfile.TemporaryDirectory()
    root = args.index or str(c.build_index(Path(tmp.name) / "index", SAMPLE))
    body, n_titles = large_request(root, int(args.answer_mb * 1e6))
    flags = ["--no-ui", "--no-warmup", "--max-queries-per-request", str(max(10_000, n_titles)),
             "--max-connections", str(args.clients + 50), *extra]  # fmt: skip
    server = c.ServerProcess(root, *flags)
    socks: list[socket.socket] = []
    try:
        server.wait(120)
        answer = httpx.post(f"{server.url}/access", content=body, timeout=60)  # the baseline
        if answer.status_code != 200:
            raise SystemExit(f"/access answered {answer.status_code}: {answer.text[:300]}")
        answer_mb = len(answer.content) / 1e6
        time.sleep(1)
        rss_ready = server.rss_mb()
        head = (
            f"POST /access HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        t0 = time.monotonic()
        samples = []
        for wave in range(args.waves):
            for _ in range(args.clients):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little
                s.connect(("127.0.0.1", server.port))
                s.sendall(head + body)
                socks.append(s)
            while time.monotonic() - t0 < args.hold * (wave + 1):
                samples.append((wave + 1, round(time.monotonic() - t0, 1), server.rss_mb()))
                time.sleep(0.5)
        metrics = metric_lines(server.url)
        alive = httpx.get(f"{server.url}/health", timeout=10).status_code
    finally:
        for s in socks:
            s.close()
        server.stop()
        tmp.cleanup()
    peak = max(r for _, _, r in samples)
    end = samples[-1][2]
    print(f"# {c.machine()}; server flags: {' '.join(extra) or '(defaults)'}")
    print(f"answer {answer_mb:.1f} MB; {args.waves} waves of {args.clients} clients that never "
          f"read, {args.hold:g} s apart; RSS in MB")  # fmt: skip
    header = ["wave", "t (s)", "RSS MB", "over ready MB"]
    table = [[w, t, f"{r:.0f}", f"{r - rss_ready:.0f}"]
             for w, t, r in samples[:: max(1, len(samples) // 16)] + samples[-1:]]  # fmt: skip
    c.print_table(header, table)
    summary = {
        "bench": "slow_readers",
        "clients": args.clients,
        "waves": args.waves,
        "answer_mb": round(answer_mb, 2),
        "flags": extra,
        "rss_ready_mb": round(rss_ready),
        "rss_peak_mb": round(peak),
        "rss_end_mb": round(end),
        "wave_peaks_over_ready_mb": [
            round(max(r for w, _, r in samples if w == i + 1) - rss_ready)
            for i in range(args.waves)
        ],
        "peak_over_ready_mb": round(peak - rss_ready),
        "end_over_ready_mb": round(end - rss_ready),
        "health_at_end": alive,
        "metrics": metrics,
    }
    print(json.dumps(summary))
    c.record(
        args,
        argv,
        f"Slow readers: {args.waves} waves of {args.clients} clients that never read a "
        f"{answer_mb:.1f} MB /access answer",
        table,
        header,
        f"Server flags: {' '.join(extra) or '(defaults)'}. Summary: `{json.dumps(summary)}`",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
