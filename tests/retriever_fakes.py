"""The test doubles shared by several test files: a fake ``Retriever``, a hash encoder.

A deterministic fake ``Retriever`` for the coalescing, service and server tests.

Scores are a seeded function of (query, row), so results depend only on the query, never on
which batch it was searched in. It records every batch it sees and can be told to fail.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest

from retriever.dense.encoders import EncoderConfig
from retriever.protocol import check_search_args
from retriever.types import Hit


class FakeRetriever:
    """``search(queries, k)`` with pseudo-random but reproducible scores per (query, row)."""

    def __init__(self, num_docs: int, name: str = "fake", delay: float = 0.0, kind: str = "bm25"):
        self.name = name
        self.kind = kind  # what a part's manifest would say (the service routes by it)
        self.num_docs = num_docs
        self.delay = delay
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.fail_on: str | None = None  # a batch containing this query raises
        self.wrong_length = False  # return one list too few
        self.gate: threading.Event | None = None  # when set, each batch waits for it
        self.entered = threading.Event()  # set when a batch has entered ``search``
        self._lock = threading.Lock()

    def scores(self, query: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(query.encode()))
        return rng.random(self.num_docs)

    def search_one(self, query: str, k: int) -> list[Hit]:
        scores = self.scores(query)
        order = np.lexsort((np.arange(self.num_docs), -scores))[:k]
        return [Hit(int(r), float(scores[r])) for r in order]

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        queries, k = check_search_args(queries, k, self.num_docs)
        with self._lock:
            self.batches.append(list(queries))
            self.threads.add(threading.get_ident())
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in queries:
            raise RuntimeError(f"injected failure on {self.fail_on!r}")
        out = [self.search_one(q, k) for q in queries]
        return out[:-1] if self.wrong_length else out


HOTPOT = Path(__file__).parent / "data" / "hotpotqa-distractor-500.jsonl"


def paragraphs_jsonl(path: Path, questions: int, *, distinct: bool = False) -> Path:
    """``path``: a Search-R1 style JSONL corpus (``"title"\\ntext`` contents, ids 0..) of the
    first ``questions`` HotpotQA questions' context paragraphs; ``distinct``: one per title."""
    seen, rows = set(), []
    for line in HOTPOT.read_text().splitlines()[:questions]:
        for title, sents in orjson.loads(line)["context"]:
            if distinct and title in seen:
                continue
            seen.add(title)
            rows.append({"id": str(len(rows)), "contents": f'"{title}"\n' + "".join(sents)})
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


_TEMPLATES: dict[bool, Path] = {}


def _template(bm25: bool) -> Path:
    """The HotpotQA index root (with or without BM25), built once per test process."""
    if bm25 not in _TEMPLATES:
        import atexit
        import tempfile

        from index_build.__main__ import main

        parent = Path(tempfile.mkdtemp(prefix="hotpot-template-"))
        atexit.register(shutil.rmtree, parent, ignore_errors=True)
        root = parent / "index"
        if bm25:
            shutil.copytree(_template(False), root)
            assert main(["bm25", "--index", str(root), "--no-progress"]) == 0
        else:
            assert (
                main(["corpus", "--input", str(HOTPOT), "--out", str(root), "--no-progress"]) == 0
            )
        _TEMPLATES[bm25] = root
    return _TEMPLATES[bm25]


def build_root(parent: Path, bm25: bool) -> Path:
    """A private index root over the HotpotQA paragraphs (plus its BM25 part when asked): a copy
    of a root built once per test process, so tests may change their copy freely."""
    root = parent / "index"
    shutil.copytree(_template(bm25), root)
    return root


def hotpot_questions(n: int = 60) -> list[str]:
    with open(HOTPOT, "rb") as f:
        return [orjson.loads(line)["question"] for line, _ in zip(f, range(n))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``create_app(service)`` in a thread on a free port, for real HTTP tests."""

    def __init__(self, service, **uvicorn_options):
        import uvicorn

        from retriever.server.app import create_app

        self.service = service
        self.app = create_app(service)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 5}
        options.update(uvicorn_options)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, **options)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 180  # a cold numba cache compiles at the first load
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        self.service.start_background().join(60)
        return self

    def stop(self, timeout: float = 15) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __exit__(self, *exc) -> None:
        self.stop()


# The module fixtures ``root``, ``server`` and ``library`` of the live-server modules (imported
# by these names, a fixture's ``name`` is what tests ask for): a module gets its own copies.
@pytest.fixture(scope="module", name="root")
def live_bm25_root(tmp_path_factory):
    """The module's own copy of the HotpotQA root with its BM25 part."""
    return build_root(tmp_path_factory.mktemp("live-bm25"), bm25=True)


@pytest.fixture(scope="module", name="server")
def live_bm25_server(root):
    """A live server over ``root`` (1 ms batch wait, topk 3 by default)."""
    from retriever.server.service import RetrievalService, ServiceConfig

    config = ServiceConfig(index=root, max_wait_ms=1, default_topk=3)
    with LiveServer(RetrievalService(config)) as live:
        yield live


@pytest.fixture(scope="module", name="library")
def live_bm25_library(root):
    """The same root opened in process: the reference a live answer must equal."""
    from retriever.index import Index

    return Index.open(root)


class HashEncoder:
    """Deterministic bag-of-hashed-words vectors: a stand-in model for logic tests."""

    def __init__(self, dim: int = 32, model: str = "fake-hash"):
        self.config = EncoderConfig(model=model, pooling="mean", normalize=True, max_length=64)
        self.dim = dim
        self.calls: list[int] = []

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode_passages(self, texts):
        self.calls.append(len(texts))
        return (
            np.stack([self._vec(t) for t in texts])
            if texts
            else np.zeros((0, self.dim), np.float32)
        )

    encode_queries = encode_passages


def fake_generator(args: tuple) -> tuple[list[float], int, float]:
    """A load generator for scripts/bench/common.in_processes: one latency of 1 ms per client,
    ``i`` errors. It lives here, in a module the spawned children import by name: a function of
    a test module (imported by path in importlib mode) cannot be unpickled there, and the pool
    then waits for ever."""
    i, share = args
    return [0.001] * share, i, 0.5 + i
