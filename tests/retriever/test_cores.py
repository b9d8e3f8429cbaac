"""``retriever.cores``: default kernel threads, and ``RETRIEVER_THREADS``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from retriever import cores


@pytest.fixture
def clean_env(monkeypatch):
    """Neither variable set; both put back as they were after the test (set first, so that
    monkeypatch records them even when absent: ``follow_env`` sets one)."""
    for name in (cores.ENV, "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    return monkeypatch


def test_default_threads_is_the_affinity_unless_the_user_chose(clean_env):
    assert cores.default_threads() == cores.available() == len(os.sched_getaffinity(0))
    clean_env.setenv(cores.ENV, "3")
    assert cores.default_threads() == 3
    for bad in ("0", "-2", "two", ""):  # not a whole number of at least 1: the cores
        clean_env.setenv(cores.ENV, bad)
        assert cores.default_threads() == cores.available()


def test_follow_env_bounds_openmp_unless_it_is_set(clean_env):
    cores.follow_env()
    assert "OMP_NUM_THREADS" not in os.environ  # nothing chosen: the runtimes' own defaults
    clean_env.setenv(cores.ENV, "1")
    cores.follow_env()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    clean_env.setenv(cores.ENV, "2")
    cores.follow_env()
    assert os.environ["OMP_NUM_THREADS"] == "1"  # the user's (here: the first call's) wins


@pytest.mark.parametrize("chosen", [None, "1"])
def test_kernels_and_encoders_take_the_default(chosen):
    """In a fresh process through the entry points' set-up: the BM25 retriever's batch threads,
    the faiss backend's threads and torch's (imported after) are the cores, or
    ``RETRIEVER_THREADS`` when set."""
    code = (
        "from retriever.cli import configure_process; configure_process()\n"
        "import faiss, numpy as np, torch\n"
        "from retriever.dense.faiss_backend import FaissBackend\n"
        "index = faiss.IndexFlatIP(4); index.add(np.eye(4, dtype='float32'))\n"
        "print(FaissBackend(index, 'ip').threads, torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (cores.ENV, "OMP_NUM_THREADS")}
    env.update({cores.ENV: chosen} if chosen else {})
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    want = chosen or str(len(os.sched_getaffinity(0)))
    assert out == [want, want]
