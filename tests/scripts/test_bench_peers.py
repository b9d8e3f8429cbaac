"""scripts/bench/peers.py's pieces that do not need the peers: the shim that runs a peer's server
file unmodified on CPU, and the goal and spread arithmetic. Its ``--smoke`` run is in
test_bench_smoke.py with every other bench script."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

BENCH = REPO / "scripts" / "bench"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_shim_moves_a_hard_coded_bind_to_our_local_port(bench, monkeypatch):
    """Search-R1 ends with ``uvicorn.run(app, host="0.0.0.0", port=8000)``."""
    import peer_shim
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    peer_shim.patch_port(45678)
    uvicorn.run("app", host="0.0.0.0", port=8000)
    assert calls == [("app", {"host": "127.0.0.1", "port": 45678, "log_level": "warning"})]


@pytest.mark.slow  # a fresh interpreter loads torch and sentence-transformers: 20 s under load
def test_shim_runs_a_peer_file_as_main_on_cpu_with_the_aliased_model(tmp_path):
    """A peer file written like Search-R1's and rLLM's (``.cuda()``, ``.half()``, a hub model
    name, globals under ``__main__``) runs unchanged: fp32 on the CPU, the packaged MiniLM."""
    from retriever.dense.encoders import packaged_model_path

    peer = tmp_path / "server.py"
    peer.write_text(
        "import sys, torch\n"
        "from sentence_transformers import SentenceTransformer\n"
        "if __name__ == '__main__':\n"
        "    m = torch.nn.Linear(2, 2).cuda().half()\n"
        "    x = torch.zeros(1, 2).cuda()\n"
        "    st = SentenceTransformer('intfloat/e5-base-v2', device='cpu')\n"
        "    print(sys.argv[1:], m.weight.dtype, x.device, st.encode(['query: a']).shape)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(BENCH),
        "PEER_CPU": "1",
        "PEER_MODEL_ALIAS": f"intfloat/e5-base-v2={packaged_model_path()}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    code = "import peer_shim, sys; peer_shim.run(sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(peer), "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['--port', '1'] torch.float32 cpu (1, 384)"


def test_goals_name_each_shape_and_peer_below_the_bar(bench):
    import peers

    out = {
        "bm25 1x1 ours": {"queries_s": 900.0, "x search-r1": 2.1},
        "bm25 4x64 ours": {"queries_s": 4000.0, "x search-r1": 3.2},
        "dense 16x1 ours": {"queries_s": 150.0, "x search-r1": 2.8, "x rllm": 1.4},
    }
    missed = peers.goals(out, ["bm25", "dense"], [(1, 1), (16, 1), (4, 64)])
    assert missed == [
        "bm25 1x1: 2.10x search-r1 (goal 3x)",
        "dense 16x1: 1.40x rllm (goal 2x)",
    ]
    assert round(peers.spread([{"queries_s": q} for q in (90, 100, 110)]), 1) == 20.0
    assert peers.parse_shape("4x64") == (4, 64) and peers.parse_shape("64") == (64, 1)
    assert peers.body_of("rllm", ["q"], "dense") == {"query": "q", "top_k": 3}
    assert peers.body_of("ours", ["q"], "dense")["retriever"] == "dense-minilm"


def test_a_batched_request_costing_more_per_query_than_coalesced_singles_is_a_miss(bench):
    """Issue 26: a 64-query request must cost the server no more CPU per query than 64 single
    queries coalesced (the most clients of the Cx1 shapes), for every server row of ours."""
    import peers

    shapes = [(16, 1), (64, 1), (4, 64)]
    out = {
        "dense 16x1 ours": {"cpu_ms_q": 5.0, "x rllm": 2.5},
        "dense 64x1 ours": {"cpu_ms_q": 3.0, "x rllm": 2.5},
        "dense 4x64 ours": {"cpu_ms_q": 3.4, "x search-r1": 2.2},  # > 3.0: a miss
        "dense 64x1 ours --workers 2": {"cpu_ms_q": 3.2},
        "dense 4x64 ours --workers 2": {"cpu_ms_q": 3.1},  # <= 3.2: fine
        "dense 4x64 search-r1": {"cpu_ms_q": 9.0},  # peers are not held to it
    }
    assert peers.goals(out, ["dense"], shapes) == [
        "dense 4x64 ours: 3.40 server CPU ms/query, more than 64 coalesced single queries (3.00)"
    ]


def test_workers_rows_with_a_thread_count_set_retriever_threads(bench, monkeypatch):
    """``--workers 1,2,2:1``: three rows of ours; ``:1`` starts its workers with
    ``RETRIEVER_THREADS=1`` (one kernel thread each) and says so in the row's label."""
    import common as c
    import peers

    assert peers.parse_workers("1,2,2:1") == [(1, None), (2, None), (2, 1)]
    with pytest.raises(SystemExit, match="N or N:THREADS"):
        peers.parse_workers("2:all")
    started = []

    class Server:
        def __init__(self, root, *flags, env=None):
            started.append((flags[flags.index("--workers") + 1] if "--workers" in flags else "1",
                            env))  # fmt: skip

        def wait(self):
            pass

    monkeypatch.setattr(c, "ServerProcess", Server)
    args = peers.argparse.Namespace(workers=peers.parse_workers("1,2,2:1"), server_arg=[],
                                    search_r1=None, rllm=None)  # fmt: skip
    systems = peers.start_systems(args, "bm25", {"root": "x"}, None)
    assert list(systems) == ["ours", "ours --workers 2", "ours --workers 2 (RETRIEVER_THREADS=1)"]
    assert started == [("1", None), ("2", None), ("2", {"RETRIEVER_THREADS": "1"})]
