"""``retriever.cores``: default kernel threads, and a ``--workers`` process's share of them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from retriever import cores

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(cores.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return monkeypatch


def test_default_threads_is_the_affinity_unless_the_user_chose(clean_env):
    assert cores.default_threads() == cores.available() == len(os.sched_getaffinity(0))
    clean_env.setenv(cores.ENV, "3")
    assert cores.default_threads() == 3
    for bad in ("0", "-2", "two", ""):  # not a whole number of at least 1: the cores
        clean_env.setenv(cores.ENV, bad)
        assert cores.default_threads() == cores.available()


@pytest.mark.parametrize("workers", [1, 2, 3, 64])
def test_share_splits_the_cores_among_the_workers(clean_env, workers):
    clean_env.setattr(cores, "available", lambda: 8)
    per = cores.share(workers)
    assert per == max(1, 8 // workers)
    assert os.environ[cores.ENV] == os.environ["OMP_NUM_THREADS"] == str(per)
    assert cores.default_threads() == per


def test_share_keeps_what_the_user_set(clean_env):
    clean_env.setattr(cores, "available", lambda: 8)
    clean_env.setenv(cores.ENV, "5")
    clean_env.setenv("OMP_NUM_THREADS", "7")
    assert cores.share(2) == 5
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_kernels_default_to_the_share(tmp_path):
    """In a fresh process: after ``share``, BM25's batch threads and the faiss backend's
    threads are the share, and torch (imported after) starts with that many threads."""
    code = (
        "import os; os.environ.pop('RETRIEVER_THREADS', None); os.environ.pop('OMP_NUM_THREADS', None)\n"
        "from retriever import cores\n"
        "cores.available = lambda: 6\n"
        "per = cores.share(3)\n"
        "import faiss, numpy as np, torch\n"
        "from retriever.dense.faiss_backend import FaissBackend\n"
        "index = faiss.IndexFlatIP(4); index.add(np.eye(4, dtype='float32'))\n"
        "print(per, FaissBackend(index, 'ip').threads, torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["2", "2", "2"]
