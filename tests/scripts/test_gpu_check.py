"""``scripts/bench/gpu.py --smoke`` (``--device cpu --quick``): the one-call GPU check at toy
sizes on CPU.

Every section runs (or says why it cannot) and its own checks hold, so the script cannot rot
before a GPU window comes: exact search equals a float64 reference and agrees across layouts,
our encoder matches sentence-transformers, the encode verb resumes to byte-identical shards,
the service answers every concurrent caller.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import REPO

GPU_SCRIPT = REPO / "scripts" / "bench" / "gpu.py"


@pytest.mark.slow
def test_gpu_check_runs_at_toy_sizes_on_cpu(tmp_path, monkeypatch, capsys):
    """Also the script's smoke run (``--smoke`` = ``--device cpu --quick``), which
    tests/scripts/test_bench_smoke.py leaves to this test."""
    pytest.importorskip("sentence_transformers")
    monkeypatch.syspath_prepend(str(GPU_SCRIPT.parent))  # its helpers: common, gpu_common, ...
    spec = importlib.util.spec_from_file_location("bench_gpu_check", GPU_SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gpu  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(gpu)
    finally:
        del sys.modules[spec.name]
    rc = gpu.main(["--smoke", "--out", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["bench"] == "gpu" and json.loads(last)["device"] == "cpu"
    sections = json.loads((tmp_path / "gpu.json").read_text())["sections"]
    assert rc == 0, {k: v.get("traceback") for k, v in sections.items() if v["status"] == "error"}
    assert list(sections) == [name for name, _, _ in gpu.SECTIONS]
    for name, r in sections.items():
        assert r["status"] == "ok" or (r["status"] == "skipped" and r["why"]), name
    for name in ("env", "ceilings", "exact_search", "encode_throughput", "encode_verb"):
        assert sections[name]["status"] == "ok", name

    exact = sections["exact_search"]
    assert [b["batch"] for b in exact["batches"]] == list(gpu.QUICK.batches)
    assert all(b["qps"] > 0 and b["x_matmul_floor"] > 0 for b in exact["batches"])
    assert exact["subset_same_ids"] == 1.0 and exact["subset_max_score_diff"] < 1e-6
    assert exact["layouts"] and all(row["same_ids_and_scores"] for row in exact["layouts"])

    enc = sections["encode_throughput"]
    assert enc["passages"] == gpu.QUICK.passages and 100 < enc["mean_tokens"] < 200
    assert enc["ours_fp32"]["min_cosine_to_st"] > 0.999  # same model, same vectors
    assert enc["ours_fp32"]["passages_per_s"] > 0

    verb = sections["encode_verb"]
    assert verb["shards"] == gpu.QUICK.store // gpu.QUICK.shard
    assert verb["killed_after_shards"] and verb["killed_after_shards"] < verb["shards"]
    assert verb["resumed_identical"] is True

    service = sections["service_load"]
    assert service["status"] == "ok"
    assert len(service["rows"]) == 2 * len(gpu.QUICK.concurrency)
    assert all(row["errors"] == 0 and row["qps"] > 0 for row in service["rows"])
    if importlib.util.find_spec("fastapi") and importlib.util.find_spec("uvicorn"):
        assert sections["http"]["status"] == "ok", sections["http"]
        assert sections["http"]["single_query_requests_per_s"] > 0
    assert (tmp_path / "gpu.md").read_text().startswith("# GPU check (cpu, quick)")
