"""Every benchmark script runs: ``python scripts/bench/X.py --smoke`` on bundled data, exit 0.

The scripts are found by glob, so a new script without a smoke mode fails here. The rule for
what is a script: a file in ``scripts/bench/`` with an ``if __name__ == "__main__":`` block;
the others (``common.py``, ``gpu_common.py``, ...) are helper modules the scripts import.
A smoke run records only to ``$BENCH_RECORD`` (here a file under ``tmp_path``): BENCHMARKS.md and
the history file must come out unchanged. ``$BENCH_SMOKE_CACHE`` points every run at one folder
per session, so the tiny shared index is built once, not by each script.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from retriever_fakes import fake_generator

BENCH = REPO / "scripts" / "bench"
RECORDS = [REPO / "BENCHMARKS.md", REPO / "docs" / "benchmarks-history.md"]
PACKAGES = {"retriever", "env", "index_build"}


def is_script(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")


SCRIPTS = sorted(p for p in BENCH.glob("*.py") if is_script(p))
# scripts whose --smoke another test runs, with checks of its own (not twice per `make test`)
ELSEWHERE = {"gpu.py": REPO / "tests" / "scripts" / "test_gpu_check.py"}


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-smoke-cache")


def test_scripts_and_helpers_are_told_apart():
    helpers = {p.name for p in BENCH.glob("*.py") if not is_script(p)}
    assert "common.py" in helpers and len(SCRIPTS) >= 15, (helpers, SCRIPTS)


def test_smoke_runs_left_to_other_tests_are_run_there():
    for name, test in ELSEWHERE.items():
        assert (BENCH / name) in SCRIPTS and '"--smoke"' in test.read_text(encoding="utf-8"), name


def test_no_script_shadows_a_package_or_edits_sys_path():
    """``python scripts/bench/X.py`` puts scripts/bench first on sys.path: a file named like a
    package there (the old ``env.py``) hides the installed one. The packages come from the
    editable install; the one path set-up, for tests/ helpers, lives in common.py."""
    assert not {p.stem for p in BENCH.glob("*.py")} & PACKAGES
    editing = [
        p.name
        for p in BENCH.glob("*.py")
        if p.name != "common.py" and "sys.path.insert" in p.read_text(encoding="utf-8")
    ]
    assert editing == []


@pytest.fixture
def common(monkeypatch):
    """scripts/bench/common.py, imported the way the scripts import it."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    return common


def test_smoke_index_is_built_once_per_cache(common, tmp_path, monkeypatch):
    """Under ``$BENCH_SMOKE_CACHE`` every script gets the same tiny index: an index already
    there is handed out as it is (here a stub whose empty source could not be built from)."""
    monkeypatch.setenv("BENCH_SMOKE_CACHE", str(tmp_path))
    root = tmp_path / "wiki3" / "index"
    for part in ("corpus", "bm25"):
        (root / part).mkdir(parents=True)
        (root / part / "manifest.json").write_text("{}")
    (tmp_path / "wiki3" / "tiny-wiki.txt.gz").write_bytes(b"")
    assert common.smoke_index() == root
    assert common.smoke_index(tmp_path / "elsewhere") == root


def test_record_honours_no_record_and_smoke(common, tmp_path, monkeypatch):
    from argparse import Namespace

    monkeypatch.delenv("BENCH_RECORD", raising=False)
    monkeypatch.setattr(sys, "argv", ["scripts/bench/x.py", "--smoke"])
    rows = [{"system": "ours", "k": 3, "batch": 1, "qps": 10.4, "p50_ms": 1.234, "p99_ms": 2.0}]
    table = common.qps_table(rows)
    assert table == [["ours", 3, 1, "10", "1.23", "2.00"]]
    assert common.record(Namespace(no_record=True, smoke=False), None, "t", table, []) is None
    assert common.record(Namespace(smoke=True), None, "t", table, common.QPS_HEADER) is None
    monkeypatch.setenv("BENCH_RECORD", str(tmp_path / "r.md"))
    path = common.record(Namespace(smoke=True), None, "Title", table, common.QPS_HEADER, "n")
    text = path.read_text()
    assert "## Title (" in text and "Command: `python scripts/bench/x.py --smoke`" in text
    assert "| ours | 3 | 1 | 10 | 1.23 | 2.00 |" in text and text.endswith("\nn\n")


def test_closed_loop_drives_keep_alive_clients_and_counts_errors(common):
    """The one load generator of the HTTP benchmarks: each client sends its own requests on a
    kept-alive connection; answers ``ok`` refuses are errors, not latencies."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(body.decode())
            out = b'{"result": []}' if body != b"bad" else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        lat, errors, elapsed = common.closed_loop(
            url,
            2,
            0.3,
            lambda i, n, host: common.http_request(
                "POST", "/retrieve", host, b"bad" if i else f"{i}:{n}".encode()
            ),
            ok=lambda status, body: status == 200 and body.startswith(b'{"result"'),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert len(lat) > 0 and errors > 0 and elapsed >= 0.3
    assert len(lat) + errors == len(seen)
    assert [s for s in seen if s != "bad"] == [f"0:{n}" for n in range(len(lat))]


def test_in_processes_spreads_clients_and_merges_results(common):
    """Five clients over two spawned processes: shares 3 and 2, latencies in ms, errors summed,
    elapsed of the slowest; never more processes than clients."""
    lat, errors, elapsed = common.in_processes(fake_generator, 5, 2, lambda i, s: (i, s))
    assert lat == [1.0] * 5 and errors == 1 and elapsed == 1.5
    assert common.in_processes(fake_generator, 1, 4, lambda i, s: (i, s)) == ([1.0], 0, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", [p for p in SCRIPTS if p.name not in ELSEWHERE], ids=lambda p: p.name
)
def test_smoke_mode_runs(script: Path, tmp_path: Path, smoke_cache: Path):
    record = tmp_path / "record.md"
    before = {p: p.read_bytes() if p.exists() else None for p in RECORDS}
    env = {
        **os.environ,
        "BENCH_RECORD": str(record),
        "BENCH_SMOKE_CACHE": str(smoke_cache),
        "TMPDIR": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OPENAI_API_KEY": "unused",
    }
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-4000:]
    assert {p: p.read_bytes() if p.exists() else None for p in RECORDS} == before
    objects = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except ValueError:
                pass
    assert objects, f"no JSON line in the output of {script.name}:\n{proc.stdout[-2000:]}"
    if "append_section(" in script.read_text(encoding="utf-8"):
        assert "\n## " in record.read_text(encoding="utf-8"), "smoke run recorded no section"
    print(f"{script.name}: {seconds:.1f} s, {cpu_s:.1f} CPU-s")
