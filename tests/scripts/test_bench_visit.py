"""scripts/bench/visit.py's model server, which its ``--smoke`` run (stub only) never starts: the
served model gets one torch thread unless told otherwise (two threads on the 2 shared cores made
SmolLM2 about 15x slower, BENCHMARKS.md "CPU generation"), and a server still generating when the
run ends is killed, not waited on for ever."""

from __future__ import annotations

import sys
import time

import httpx
import pytest
from conftest import REPO

BENCH = REPO / "scripts" / "bench"

# A stand-in for ``transformers serve``: answers /health with the thread setting it was started
# with and ignores SIGTERM, as the real one does while a generation is in flight.
FAKE_SERVER = """
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
signal.signal(signal.SIGTERM, signal.SIG_IGN)
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"omp": os.environ.get("OMP_NUM_THREADS")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


@pytest.fixture
def bench(monkeypatch):
    """scripts/bench/visit.py imported the way ``python scripts/bench/visit.py`` runs it."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_visit", BENCH / "visit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("threads", [None, 2])
def test_served_model_threads_and_a_stuck_server_is_killed(bench, tmp_path, threads):
    class FakeServe(bench.Serve):
        def command(self) -> list[str]:
            return [sys.executable, "-c", FAKE_SERVER, str(self.port)]

    kwargs = {} if threads is None else {"threads": threads}
    serve = FakeServe(tmp_path, stop_timeout=0.5, **kwargs)
    with serve as url:
        assert httpx.get(url + "/health", timeout=5).json() == {"omp": str(threads or 1)}
        t = time.monotonic()
    assert serve.proc.poll() is not None  # killed after the grace period despite SIGTERM
    assert time.monotonic() - t < 10


def test_model_threads_flag_defaults_to_one(bench):
    assert bench.parser().parse_args(["--index", "x"]).model_threads == 1
