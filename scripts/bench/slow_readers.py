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
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "enwiki-sample-pages-articles.xml.bz2"


def build_index(root: Path) -> None:
    from index_build.__main__ import main as build

    for argv in (["corpus", "--input", str(SAMPLE), "--out", str(root)],
                 ["bm25", "--index", str(root)]):  # fmt: skip
        if build([*argv, "--no-progress"]) != 0:
            raise SystemExit(f"building the index failed at: {' '.join(argv)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


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


def metric_lines(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
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
    args = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    root = args.index
    if root is None:
        root = str(Path(tmp.name) / "index")
        build_index(Path(root))
    body, n_titles = large_request(root, int(args.answer_mb * 1e6))
    port = free_port()
    cmd = [sys.executable, "-m", "retriever.server", "--index", root, "--port", str(port),
           "--log-level", "warning", "--no-ui", "--no-warmup",
           "--max-queries-per-request", str(max(10_000, n_titles)),
           "--max-connections", str(args.clients + 50), *extra]  # fmt: skip
    log = tempfile.TemporaryFile()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise SystemExit(f"server not ready: {log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/access"
        answer = httpx.post(url, content=body, timeout=60)  # read in full: the baseline
        if answer.status_code != 200:
            raise SystemExit(f"/access answered {answer.status_code}: {answer.text[:300]}")
        answer_mb = len(answer.content) / 1e6
        time.sleep(1)
        rss_ready = rss_mb(proc.pid)
        head = (
            f"POST /access HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        t0 = time.monotonic()
        samples = []
        for wave in range(args.waves):
            for _ in range(args.clients):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little
                s.connect(("127.0.0.1", port))
                s.sendall(head + body)
                socks.append(s)
            while time.monotonic() - t0 < args.hold * (wave + 1):
                samples.append((wave + 1, round(time.monotonic() - t0, 1), rss_mb(proc.pid)))
                time.sleep(0.5)
        metrics = metric_lines(port)
        alive = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        tmp.cleanup()
    peak = max(r for _, _, r in samples)
    end = samples[-1][2]
    print(f"# {machine()}; server flags: {' '.join(extra) or '(defaults)'}")
    print(f"answer {answer_mb:.1f} MB; {args.waves} waves of {args.clients} clients that never "
          f"read, {args.hold:g} s apart; RSS in MB")  # fmt: skip
    print(f"{'wave':>4} {'t (s)':>6} {'RSS':>8} {'over ready':>11}")
    for wave, t, r in samples[:: max(1, len(samples) // 16)] + samples[-1:]:
        print(f"{wave:>4} {t:>6} {r:>8.0f} {r - rss_ready:>11.0f}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
