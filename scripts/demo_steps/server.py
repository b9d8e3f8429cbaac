"""Demo step: serve the demo index root over HTTP, query it with the client, stop it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from retriever.errors import ServiceUnavailableError

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _wait_ready(client, server: subprocess.Popen, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            return client.wait_ready(timeout=1.0, interval=0.1)
        except ServiceUnavailableError:
            continue
    raise RuntimeError(f"the server was not ready after {timeout} s")


def run(root: Path, then=None) -> None:
    """Serve ``root``, query it; ``then(client)`` runs against the live server before it stops."""
    from retriever.client import HTTPClient
    from retriever.index import Index

    if not Index.open(root).names():
        print("   no bm25/ or dense-NAME/ part in the index root yet: server step skipped")
        return

    port = _free_port()
    cmd = [sys.executable, "-m", "retriever.server", "--index", str(root), "--port", str(port)]
    cmd += ["--log-level", "warning"]  # the demo prints what the server answers
    print("   $", " ".join(cmd[1:]))
    server = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        with HTTPClient(f"http://127.0.0.1:{port}", retries=2) as client:
            health = _wait_ready(client, server)
            info = client.info()
            print(
                f"   ready: retrievers {sorted(health['retrievers'])}, "
                f"{info['corpus']['num_docs']} passages, load {info['load_seconds']:.2f} s, "
                f"RSS {info['rss_bytes_at_ready'] / 2**20:.0f} MB"
            )
            queries = ["Who was the first president of the United States?", "anarchism"]
            for name in info["retrievers"]:
                results = client.retrieve(queries, topk=2, retriever=name)
                for q, hits in zip(queries, results):
                    print(f"   /retrieve [{name}] {q!r}")
                    for hit in hits:
                        print(f"      {hit['score']:8.3f}  {hit['title']}: {_short(hit['text'])}")
            title = results[0][0]["title"]
            pages = client.access(titles=[title, "No Such Page"], max_chars=200)
            page = pages[0]
            print(
                f"   /access {title!r}: chars {page['offset']}..{page['offset'] + 200} of "
                f"{page['total_chars']}: {_short(page['contents'])}"
            )
            print(f"   /access 'No Such Page': {pages[1]}")
            if then is not None:
                then(client)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        print(f"   server stopped (exit code {code})")
