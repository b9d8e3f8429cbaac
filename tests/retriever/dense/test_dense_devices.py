"""Dense search over several devices, device-agnostic, checked with CPU "devices": one device,
sharded (vectors split) and replicated (queries split) give the same hits; the mode is chosen by
a flag through ``ServiceConfig`` and the server CLI."""

from __future__ import annotations

import numpy as np
import pytest

from retriever.dense.encoders import parse_devices
from retriever.dense.torch_backend import TorchBackend
from retriever.server.app import build_parser, config_from_args
from retriever.server.service import RetrievalService, ServiceConfig


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3001, 48), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[100] = x[2900]  # an exact tie across the two halves: broken by the lower row everywhere
    # three memory parts of uneven size, as shard files are
    parts = [(0, x[:1000]), (1000, x[1000:1700]), (1700, x[1700:])]
    return x, parts


@pytest.mark.parametrize("n_queries", [1, 2, 5, 64])
@pytest.mark.parametrize("k", [1, 10, 3001])
def test_sharded_replicated_and_one_device_agree(vectors, n_queries, k):
    x, parts = vectors
    rng = np.random.default_rng(n_queries)
    queries = rng.standard_normal((n_queries, x.shape[1]), dtype=np.float32)
    queries[0] = x[2900]
    one = TorchBackend(parts, ["cpu"], "fp32", block_rows=512)
    sharded = TorchBackend(parts, ["cpu:0", "cpu:1", "cpu:2"], "fp32", block_rows=512)
    replicated = TorchBackend(parts, ["cpu:0", "cpu:1", "cpu:2"], "fp32", 512, shard=False)
    want_s, want_i = one.search(queries, k)
    x64 = x.astype(np.float64)
    exact = [(x64 * q.astype(np.float64)).sum(1).astype(np.float32) for q in queries]
    exact = np.stack([np.lexsort((np.arange(len(x)), -e))[:k] for e in exact])
    np.testing.assert_array_equal(want_i, exact)
    for backend in (sharded, replicated):  # re-scored per pair: every layout agrees bit for bit
        s, i = backend.search(queries, k)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_array_equal(s, want_s)
    assert replicated.mode == "replicated" and sharded.mode == "sharded"
    assert want_i[0][0] == 100  # the tie at 2900 went to the lower row


def test_replicated_holds_every_row_on_every_device(vectors):
    x, parts = vectors
    replicated = TorchBackend(parts, ["cpu:0", "cpu:1"], "fp32", block_rows=700, shard=False)
    sharded = TorchBackend(parts, ["cpu:0", "cpu:1"], "fp32", block_rows=700)
    for device_blocks in replicated.replicas:
        assert sum(b.shape[0] for _, b in device_blocks) == len(x)
    assert sum(b.shape[0] for _, b in sharded.blocks) == len(x)
    empty_s, empty_i = replicated.search(np.zeros((0, x.shape[1]), np.float32), 5)
    assert empty_s.shape == (0, 5) and empty_i.shape == (0, 5)


def test_cpu_devices_parse():
    assert parse_devices("cpu:0,cpu:1") == ["cpu:0", "cpu:1"]


def test_dense_mode_flag_reaches_the_service_config():
    args = build_parser().parse_args(
        ["--index", "x", "--device", "cpu:0,cpu:1", "--dense-mode", "replicated"]
    )
    config = config_from_args(args)
    assert config.device == "cpu:0,cpu:1" and config.dense_mode == "replicated"
    with pytest.raises(ValueError, match="dense_mode"):
        ServiceConfig(index="x", dense_mode="mirrored")


@pytest.fixture(scope="module")
def minilm_root(tmp_path_factory):
    """A 60-passage corpus encoded with the packaged MiniLM (a few seconds on CPU)."""
    from retriever_fakes import paragraphs_jsonl

    from index_build.__main__ import main
    from retriever.dense.encoders import packaged_model_path

    src = tmp_path_factory.mktemp("dense-devices")
    corpus = paragraphs_jsonl(src / "small.jsonl", 6)
    root = src / "index"
    model = str(packaged_model_path())
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    args = ["encode", "--index", str(root), "--model", model, "--name", "m", "--shard-size", "16"]
    assert main([*args, "--no-progress"]) == 0
    return root


@pytest.mark.slow
def test_service_modes_answer_alike(minilm_root):
    queries = ["Which magazine was started first?", "Who directed the film?", "a river in Europe"]
    answers = {}
    for label, device, mode in (
        ("one", "cpu", None),
        ("sharded", "cpu:0,cpu:1", "sharded"),
        ("replicated", "cpu:0,cpu:1", "replicated"),
    ):
        config = ServiceConfig(
            index=minilm_root, device=device, dense_mode=mode, dense_backend="torch", cache_size=0
        )
        with RetrievalService(config) as service:
            backend = service._retrievers["dense-m"].backend
            assert backend.mode == ("sharded" if mode is None else mode)
            assert len(backend.devices) == (1 if mode is None else 2)
            answers[label] = service.retrieve(queries, topk=5, retriever="dense-m")
    ids = {k: [[d["id"] for d in r] for r in v] for k, v in answers.items()}
    assert ids["sharded"] == ids["one"] and ids["replicated"] == ids["one"]
    for label in ("sharded", "replicated"):
        for a, b in zip(answers[label], answers["one"]):
            assert [d["score"] for d in a] == [d["score"] for d in b]
