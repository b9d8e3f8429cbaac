"""Plumbing every benchmark shares, written once: where the data is, the machine, the statistics,
the alternating-runs driver, a server subprocess that is ready, child-process measurement, the
``--smoke`` / ``--no-record`` flags and the record of results.

``python scripts/bench/X.py`` puts this folder first on ``sys.path``, so scripts import this
module as ``common``; ``retriever``, ``env`` and ``index_build`` come from the editable install
(no script here may be named like one of them). Not a script: it has no ``__main__`` block.

Records go to ``docs/benchmarks-history.md`` (dated, append-only); ``BENCHMARKS.md`` holds the
current figures, promoted from there by hand. ``BENCH_RECORD=PATH`` sends them elsewhere; a smoke
run records only there (nothing when it is unset).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"
HISTORY = REPO / "docs" / "benchmarks-history.md"
RECORD_ENV = "BENCH_RECORD"
SMOKE_CACHE_ENV = "BENCH_SMOKE_CACHE"
PY = sys.executable
T = TypeVar("T")
log = logging.getLogger(__name__)


# ---- the machine -------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1e6:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{model}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: offline model hubs, tokenizers quiet."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("OPENAI_API_KEY", "unused")
    return {**env, **extra}


def importable(folder: Path) -> None:
    """Put ``folder`` first on ``sys.path``: the one path set-up of the benchmarks."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def use_test_helpers() -> None:
    """Make ``tests/`` importable (``env_support``, ``ui_support``). The repository goes on the
    path too: tests/ has folders named ``retriever`` and ``env`` (the tests mirror the packages),
    and only a regular package found on the path (the repository's) wins over such folders, in
    this process and in the worker processes it spawns."""
    importable(REPO / "tests")
    importable(REPO)


def use_repo_if_not_installed() -> None:
    """A GPU node with a bare checkout (no ``pip install -e .``): import the packages from it."""
    import importlib.util

    if importlib.util.find_spec("retriever") is None:
        importable(REPO)


# ---- statistics --------------------------------------------------------------------------


def median(xs: Iterable[float]) -> float:
    return percentile(xs, 50)


def percentile(xs: Iterable[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); NaN for no values.

    >>> percentile([1, 2, 3, 4], 50), percentile([5.0], 99), percentile([0, 10], 90)
    (2.5, 5.0, 9.0)
    """
    xs = sorted(xs)
    if not xs:
        return float("nan")
    at = (len(xs) - 1) * p / 100
    lo = int(at)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (at - lo)


def medians(runs: Sequence[dict]) -> dict:
    """Per key, the median over runs (numeric keys only)."""
    return {
        k: median(r[k] for r in runs)
        for k, v in runs[0].items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def median_run(runs: Sequence[dict], key: str = "qps") -> dict:
    """The run with the median ``key`` (a whole run, so its latencies belong to it)."""
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def alternate(fns: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Each ``fn`` once per round, ``repeats`` rounds, the order reversed every other round:
    on a shared, noisy machine drift then hits every variant alike."""
    out: dict[str, list[T]] = {name: [] for name in fns}
    for r in range(repeats):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            out[name].append(fns[name]())
    return out


def seconds_of(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(fn, queries: list[str], k: int, batch: int) -> dict:
    """queries/s and per-call latency (ms) of ``fn(list_of_queries, k)``."""
    fn(queries[:batch], k)  # warm up
    lat = []
    start = time.perf_counter()
    for lo in range(0, len(queries), batch):
        t = time.perf_counter()
        fn(queries[lo : lo + batch], k)
        lat.append((time.perf_counter() - t) * 1e3)
    total = time.perf_counter() - start
    return {
        "qps": len(queries) / total,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
    }


# ---- tables and the record ---------------------------------------------------------------


def table_of(rows: Sequence[dict], keys: Sequence[str]) -> list[list]:
    return [[r.get(k, "-") for k in keys] for r in rows]


QPS_HEADER = ["system", "k", "batch", "queries/s", "p50 ms", "p99 ms"]


def qps_table(rows: Sequence[dict]) -> list[list]:
    """``measure`` results tagged with system, k and batch, as rows under ``QPS_HEADER``."""
    return [
        [r["system"], r["k"], r["batch"], f"{r['qps']:.0f}"]
        + [f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
        for r in rows
    ]


def add_qps_row(rows: list[dict], system: str, k: int, batch: int, runs: Sequence[dict]) -> None:
    """The median of ``measure`` runs, tagged with system, k and batch, appended and printed."""
    r = {"system": system, "k": k, "batch": batch, **median_run(runs)}
    rows.append(r)
    print(
        f"  {system:34s} k={k:<2d} batch={batch:<3d} {r['qps']:9.0f} q/s  "
        f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms",
        flush=True,
    )


def qps_of(rows: Sequence[dict], system: str, k: int, batch: int) -> float:
    return next(r["qps"] for r in rows if (r["system"], r["k"], r["batch"]) == (system, k, batch))


def print_table(header: Sequence[str], table: Sequence[Sequence]) -> None:
    for row in [header, *table]:
        print(" | ".join(str(c) for c in row), flush=True)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a tiny run on bundled data in seconds; records only to ${RECORD_ENV} if set",
    )
    parser.add_argument(
        "--no-record",
        "--no-append",
        dest="no_record",
        action="store_true",
        help=f"do not append to {HISTORY.relative_to(REPO)}",
    )


def record_path(smoke: bool = False) -> Path | None:
    """Where a section goes: ``$BENCH_RECORD``, else the history file (a smoke run: nowhere)."""
    if os.environ.get(RECORD_ENV):
        return Path(os.environ[RECORD_ENV])
    return None if smoke else HISTORY


def append_section(
    title: str,
    command: str,
    table: Sequence[Sequence],
    header: Sequence[str],
    notes: str = "",
    *,
    smoke: bool = False,
) -> Path | None:
    """Append a dated table (never rewrites earlier rows); the file written, if any."""
    path = record_path(smoke)
    if path is None:
        print(f"smoke run: nothing recorded (set {RECORD_ENV}=PATH to see the section)")
        return None
    lines = [
        "",
        f"## {title} ({_dt.date.today().isoformat()}, commit {git_rev()})",
        "",
        f"Machine: {machine()}. Command: `{command}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table]
    if notes:
        lines += ["", notes]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmark history\n\nAppended by the scripts under `scripts/bench/`.\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def record(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    title: str,
    table: Sequence[Sequence],
    header: Sequence[str],
    notes: str = "",
) -> Path | None:
    """``append_section`` for a script's run: skipped under ``--no-record``, the command that
    reproduces it written down, a smoke run sent only to ``$BENCH_RECORD``."""
    if getattr(args, "no_record", False):
        return None
    command = command_line(Path(sys.argv[0]).name, argv)
    return append_section(title, command, table, header, notes, smoke=args.smoke)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run, for the record."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"scripts/bench/{script}", *args])


# ---- child processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def run_sampled(cmd: list[str], env: dict | None = None, every: float = 0.1) -> dict:
    """Run ``cmd`` to the end; wall seconds, peak RSS of the process tree (sampled every
    ``every`` s) and of its largest process, stdout and stderr. The largest process's peak is
    ``ru_maxrss`` (VmHWM-like) when this step raised it; that figure is the largest child of
    this whole process so far, so after a larger earlier step it is the sampled largest."""
    import psutil

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(cmd, env=env or child_env(), stdout=out, stderr=err)
        ps = psutil.Process(proc.pid)
        peak_tree = peak_one = 0
        while proc.poll() is None:
            try:
                rss = [p.memory_info().rss for p in (ps, *ps.children(recursive=True))]
                peak_tree = max(peak_tree, sum(rss))
                peak_one = max(peak_one, *rss)
            except psutil.Error:
                pass
            time.sleep(every)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit {proc.returncode}:\n{stderr[-3000:]}")
    return {
        "seconds": seconds,
        "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "peak_rss_mb": (
            after.ru_maxrss / 1024 if after.ru_maxrss > before.ru_maxrss else peak_one / 2**20
        ),
        "peak_tree_rss_mb": peak_tree / 2**20,
        "stdout": stdout,
        "stderr": stderr,
    }


def python_json(code: str, *args: str, env: dict | None = None) -> dict:
    """Run Python ``code`` in a fresh process; the JSON object on its last stdout line."""
    proc = subprocess.run(
        [PY, "-c", code, *args], env=env or child_env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class ServerProcess:
    """``python -m retriever.server`` (or ``retriever.ray_serve``) in a child process, ready.

    ``with ServerProcess(index, "--retrievers", "bm25") as s: s.url``. Readiness is the client's
    own ``HTTPClient.wait_ready``, polled in short slices so that a server that exits is
    reported at once with the end of its log. ``repo`` runs another checkout's code.
    """

    def __init__(
        self,
        index: str | Path,
        *flags: str,
        module: str = "retriever.server",
        repo: Path = REPO,
        env: dict | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [PY, "-m", module, "--index", str(index), "--port", str(self.port)]
        cmd += ["--log-level", "warning", *flags]
        extra = {} if repo == REPO else {"PYTHONPATH": str(repo)}
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd, cwd=repo, env={**child_env(**extra), **(env or {})},
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.ready_s = float("nan")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait(self, timeout: float = 300.0) -> float:
        """Seconds from start until ``/health`` answers 200."""
        from retriever.client import HTTPClient
        from retriever.errors import RetrieverError

        t0 = time.perf_counter()
        with HTTPClient(self.url, retries=0, timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise SystemExit(
                        f"server exited with {self.proc.returncode} before it was ready:\n"
                        f"{self.output()[-3000:]}"
                    )
                try:
                    client.wait_ready(timeout=1.0, interval=0.1)
                    break
                except RetrieverError:
                    if time.perf_counter() - t0 > timeout:
                        self.stop()
                        raise SystemExit(f"server not ready after {timeout:.0f} s") from None
        self.ready_s = time.perf_counter() - t0
        return self.ready_s

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> tuple[int, float, str]:
        """SIGTERM, then kill after ``timeout``; (exit code, seconds to exit, log)."""
        t = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, time.perf_counter() - t, self.output()

    def __enter__(self) -> ServerProcess:
        try:
            self.wait()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def read_response(reader) -> tuple[int, bytes, bytes]:
    """Status, head and body of one HTTP/1.1 response on raw asyncio streams (the load
    generators' cheapest client: no HTTP library between them and the server)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, head, await reader.readexactly(length)


def http_request(method: str, path: str, host: str, body: bytes | None = None) -> bytes:
    """One HTTP/1.1 keep-alive request as bytes (a JSON body when ``body`` is given)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def in_processes(
    generator: Callable[[tuple], tuple[list[float], int, float]],
    clients: int,
    procs: int,
    job: Callable[[int, int], tuple],
) -> tuple[list[float], int, float]:
    """``clients`` spread over up to ``procs`` spawned load-generator processes (so the client
    never steals the server's event loop): ``generator(job(i, share))`` in process ``i``.
    Returns every latency in ms, the errors and the slowest process's elapsed seconds."""
    import multiprocessing as mp

    procs = min(procs, clients)
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(generator, [job(i, share) for i, share in enumerate(shares)])
    latencies = [1000 * x for p in parts for x in p[0]]
    return latencies, sum(p[1] for p in parts), max(p[2] for p in parts)


def closed_loop(
    url: str,
    clients: int,
    seconds: float,
    request: Callable[[int, int, str], bytes],
    ok: Callable[[int, bytes], bool] = lambda status, body: status == 200,
) -> tuple[list[float], int, float]:
    """``clients`` closed-loop keep-alive clients on raw asyncio streams for ``seconds``, in
    this process: latencies of the answers ``ok`` accepts, errors, elapsed seconds.

    ``request(i, n, host)`` is the bytes client ``i`` sends at its ``n``-th step. A broken
    connection counts as an error and is opened again. One generator for every HTTP benchmark,
    so that they load the server alike and cost the machine as little CPU as possible."""
    import asyncio

    host, port = url.split("//", 1)[1].rsplit(":", 1)

    async def main() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds

        async def one(i: int) -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection(host, int(port))
            n = 0
            try:
                while time.perf_counter() < stop:
                    data = request(i, n, host)
                    n += 1
                    t = time.perf_counter()
                    try:
                        writer.write(data)
                        status, _, body = await read_response(reader)
                        good = ok(status, body)
                    except (OSError, asyncio.IncompleteReadError, ValueError):
                        good = False
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, int(port))
                    if good:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors += 1
            finally:
                writer.close()

        t0 = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(clients)])
        return latencies, errors, time.perf_counter() - t0

    return asyncio.run(main())


# ---- bundled data for smoke runs ---------------------------------------------------------


def nq_questions(n: int | None = None, smoke: bool = False) -> list[str]:
    """NQ test questions: the full file under ../shared/data, the bundled copy for smoke runs
    (or when the shared one is absent)."""
    from retriever.queries import read_queries

    path = SHARED_DATA / "qa" / "nq-test.tsv"
    if smoke or not path.is_file():
        path = TEST_DATA / "nq-test.tsv"
    qs = read_queries(path)
    return qs if n is None else qs[:n]


def tiny_wikiextractor(out: Path, articles: int = 6, chars: int | None = None) -> Path:
    """The first ``articles`` articles of the bundled WikiExtractor slice (real pages, so the
    store has pages for ``/access``), each cut to its first ``chars`` characters if given, as a
    gzip file the corpus verb reads."""
    import gzip

    text = gzip.open(TEST_DATA / "wikiextractor-slice.txt.gz", "rt", encoding="utf-8").read()
    docs = [d[:chars].rstrip() + "\n" if chars else d for d in text.split("</doc>")[:articles]]
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        f.write("</doc>".join(docs) + "</doc>\n")
    return out


def build_index(root: Path, source: Path, *, dense: str | None = None) -> Path:
    """Corpus + BM25 (+ a dense part named ``dense`` with the packaged MiniLM and a Flat faiss
    index) at ``root`` from ``source``, in this process; reused when already there."""
    from index_build.__main__ import main as build

    steps = [["corpus", "--input", str(source), "--out", str(root)], ["bm25", "--index", str(root)]]
    if dense:
        from retriever.dense.encoders import packaged_model_path

        model = str(packaged_model_path())
        steps += [
            ["encode", "--index", str(root), "--model", model, "--name", dense],
            ["faiss", "--index", str(root), "--name", dense, "--factory", "Flat"],
        ]
    done = [root / "corpus", root / "bm25"] + ([root / f"dense-{dense}"] if dense else [])
    if all((d / "manifest.json").is_file() for d in done):
        return root
    for argv in steps:
        if build([*argv, "--no-progress"]) != 0:
            raise SystemExit(f"building {root} failed at: {' '.join(argv)}")
    return root


def smoke_dir(prefix: str) -> Path:
    """A new temporary folder for a smoke run's own files."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-smoke-"))


def smoke_index(work: Path | None = None, *, dense: str | None = None, articles: int = 3) -> Path:
    """A tiny real index (a few Wikipedia articles, a few hundred passages; a few dozen with a
    ``dense`` part, the articles cut short), read-only to the
    caller. Under ``$BENCH_SMOKE_CACHE`` when set (the smoke tests point it at one folder per
    session, so each kind is built once, not by every script), else under ``work``."""
    cache = os.environ.get(SMOKE_CACHE_ENV)
    if cache:
        work = Path(cache) / (f"wiki{articles}" + (f"-{dense}" if dense else ""))
    elif work is None:
        work = smoke_dir("index")
    source = work / "tiny-wiki.txt.gz"
    if not source.is_file():  # encoding costs about 0.3 CPU-s a passage: short pages for dense
        tiny_wikiextractor(source, articles, 3000 if dense else None)
    return build_index(work / "index", source, dense=dense)
