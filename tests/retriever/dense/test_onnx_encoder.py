"""The ONNX Runtime query encoders (``--query-encoder onnx|onnx-int8``) against torch fp32.

Real components throughout: the packaged MiniLM, torch.onnx.export, onnxruntime's
InferenceSession (MatMulInteger), HotpotQA questions and their context paragraphs.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from retriever_fakes import HOTPOT, hotpot_questions, paragraphs_jsonl

from retriever.dense import onnx_encoder
from retriever.dense.encoders import load_encoder, packaged_model_path, resolve_config
from retriever.dense.onnx_encoder import MIN_COSINE, QUERY_ENCODERS, OnnxEncoder, check_queries
from retriever.dense.retriever import _query_encoder
from retriever.errors import BadRequestError, IndexFormatError
from retriever.index import Index
from retriever.server.app import build_parser, config_from_args, create_app
from retriever.server.service import RetrievalService, ServiceConfig

RUNTIMES = ["torch", "onnx", "onnx-int8"]  # every value --query-encoder offers, each served below
QUESTIONS = 40  # their ~400 context paragraphs are the corpus of the recall test


@pytest.fixture(scope="module")
def config():
    return resolve_config(str(packaged_model_path()))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def fp32(config):
    return load_encoder(config, "cpu", "fp32")


@pytest.fixture(scope="module")
def int8(config, cache):
    return OnnxEncoder(config, "onnx-int8", cache_dir=cache)


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_is_within_the_cosine_bound_of_fp32(int8, fp32):
    queries = check_queries()
    assert len(queries) == 128 and queries[0].startswith("What is the name of the fight song")
    assert int8.min_cosine_seen >= MIN_COSINE
    # also on questions the load-time check never saw, and one by one (no padding)
    others = hotpot_questions(300)[128:]
    cos = cosines(int8.encode_queries(others), fp32.encode_queries(others))
    assert cos.min() >= MIN_COSINE, cos.min()
    assert int8.encode_queries([]).shape == (0, 384)
    assert int8.model is None  # the torch weights are dropped once checked
    assert int8.path.name == "model-int8-token.onnx"


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_a_text_in_a_padded_batch_gets_its_vector_alone(runtime, int8, config, cache, fp32):
    """Batches are length-sorted and padded; a row's vector must not depend on its batch-mates
    (per-tensor int8 scales failed this: min cosine 0.991 in this batch)."""
    enc = int8 if runtime == "onnx-int8" else OnnxEncoder(config, "onnx", cache_dir=cache)
    queries = check_queries()
    ids = enc.tokenize(queries, enc.config.query_prefix)
    assert max(map(len, ids)) >= 3 * min(map(len, ids))  # the batch has real padding
    batched = enc._forward(ids)  # all 128 in one padded batch, unsorted
    alone = np.concatenate([enc._forward([row]) for row in ids])
    cos = cosines(batched, alone)
    assert cos.min() >= 0.99999, cos.min()
    # the same top-5 among 172 other questions' fp32 vectors, through the encoder's own batching
    corpus = fp32.encode_queries(hotpot_questions(300)[128:])
    top = lambda v: np.argsort(-(v @ corpus.T), axis=1, kind="stable")[:, :5]  # noqa: E731
    np.testing.assert_array_equal(top(enc.encode_queries(queries)), top(alone))
    assert enc.batch_size > 1  # and the encoder does batch


def test_a_request_of_64_queries_runs_in_few_batches(int8, monkeypatch):
    runs = []
    real = int8.session.run
    monkeypatch.setattr(
        int8.session, "run", lambda *a: runs.append(a[1]) or real(*a), raising=False
    )
    int8.encode_queries(check_queries()[:64])
    # batches of at most 16, and one per thread: 4 of 16 on up to 4 cores
    assert len(runs) == max(-(-64 // int8.batch_size), min(int8.threads, 64))
    assert sum(len(feed["input_ids"]) for feed in runs) == 64


@pytest.fixture(scope="module")
def one_thread(config, cache):
    return OnnxEncoder(config, "onnx-int8", threads=1, cache_dir=cache)


@pytest.fixture(scope="module")
def three_threads(config, cache):
    return OnnxEncoder(config, "onnx-int8", threads=3, cache_dir=cache)


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 64, 200])
def test_a_call_split_over_threads_gives_the_one_thread_vectors(n, one_thread, three_threads):
    """The batches of a call run side by side on the encoder's threads; every text gets the
    vector the one-thread encoder gives it (bit for bit where both cut the same batches)."""
    texts = hotpot_questions(n)
    assert [len(b) for b in three_threads._batches(np.arange(n))] == {
        1: [1],
        2: [1, 1],
        5: [2, 2, 1],
        16: [6, 6, 4],
        17: [6, 6, 5],
        64: [16] * 4,
        200: [16] * 12 + [8],
    }[n]
    got, want = three_threads.encode_queries(texts), one_thread.encode_queries(texts)
    assert got.shape == want.shape == (n, 384)
    if n in (1, 64):  # the same batches: 1 of 1, 4 of 16
        np.testing.assert_array_equal(got, want)
    assert cosines(got, want).min() >= 0.99999


def test_the_batches_of_a_call_run_at_once_and_a_failed_one_fails_the_call(three_threads,
                                                                           monkeypatch):  # fmt: skip
    import threading
    import time

    real = three_threads.session.run
    spans, lock = [], threading.Lock()

    def slow_run(names, feed):
        start = time.monotonic()
        out = real(names, feed)
        time.sleep(0.05)
        if len(feed["input_ids"]) == 2:  # the last batch of 10 texts (4, 4, 2)
            raise RuntimeError("onnxruntime failed on this batch")
        with lock:
            spans.append((start, time.monotonic(), threading.get_ident()))
        return out

    monkeypatch.setattr(three_threads.session, "run", slow_run, raising=False)
    three_threads.encode_queries(hotpot_questions(9))  # 3 batches of 3
    assert len(spans) == 3 and len({ident for *_, ident in spans}) == 3
    assert max(a for a, _, _ in spans) < min(b for _, b, _ in spans)  # all three overlapped
    with pytest.raises(RuntimeError, match="failed on this batch"):
        three_threads.encode_queries(hotpot_questions(10))
    monkeypatch.setattr(three_threads.session, "run", real, raising=False)
    assert three_threads.encode_queries(hotpot_questions(10)).shape == (10, 384)  # still serves


def test_onnx_fp32_matches_torch(config, cache, fp32):
    enc = OnnxEncoder(config, "onnx", cache_dir=cache)
    assert enc.path.name == "model.onnx" and enc.min_cosine_seen > 0.99999
    texts = ["\"Arthur's Magazine\"\nArthur's Magazine (1844-1846) was a periodical.", "short"]
    np.testing.assert_allclose(enc.encode_passages(texts), fp32.encode_passages(texts), atol=1e-5)


def test_cache_is_reused_on_a_second_start(int8, config, cache, monkeypatch):
    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_encoder, "_export", no_export)
    monkeypatch.setattr(onnx_encoder, "_quantize", no_export)
    again = OnnxEncoder(config, "onnx-int8", cache_dir=cache)
    assert again.path == int8.path
    assert again.min_cosine_seen == pytest.approx(int8.min_cosine_seen, abs=1e-6)


def test_a_damaged_cache_file_is_rebuilt(int8, config, cache, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "onnx" / int8.path.parent.name
    shutil.copytree(int8.path.parent, folder)  # a copy of the export the fixture made
    damaged = bytearray(int8.path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte in the weights
    (folder / int8.path.name).write_bytes(bytes(damaged))
    calls = []
    real = onnx_encoder._quantize
    monkeypatch.setattr(onnx_encoder, "_quantize", lambda *a: calls.append(a) or real(*a))
    rebuilt = OnnxEncoder(config, "onnx-int8", cache_dir=tmp_path)
    assert len(calls) == 1 and rebuilt.path == folder / "model-int8-token.onnx"
    recorded = onnx_encoder._recorded(folder)
    assert onnx_encoder.sha256_file(rebuilt.path) == recorded["model-int8-token.onnx"]
    assert rebuilt.min_cosine_seen == pytest.approx(int8.min_cosine_seen, abs=1e-6)
    # a truncated meta.json counts as no record: every file is exported again, no error
    (folder / "meta.json").write_bytes(b"{")
    assert onnx_encoder._recorded(folder) == {}


def test_refused_below_the_cosine_bound(config, cache, int8):
    with pytest.raises(IndexFormatError) as err:
        OnnxEncoder(config, "onnx-int8", cache_dir=cache, min_cosine=0.99999)
    msg = str(err.value)
    assert f"min cosine to fp32 {int8.min_cosine_seen:.4f}" in msg
    assert "drop --query-encoder onnx-int8" in msg


def test_onnx_is_cpu_only_and_names_are_checked(config):
    with pytest.raises(BadRequestError, match="runs on CPU but the device is cuda:0"):
        _query_encoder(config, "onnx-int8", "cuda:0", 64)
    with pytest.raises(BadRequestError, match="unknown query encoder 'int4'"):
        _query_encoder(config, "int4", "cpu", 64)
    with pytest.raises(ValueError, match="query_encoder must be torch, onnx or onnx-int8"):
        ServiceConfig(index="x", query_encoder="int4")


def build(parent, questions: int):
    from index_build.__main__ import main

    corpus = paragraphs_jsonl(parent / "hotpot.jsonl", questions, distinct=True)
    root = parent / "index"
    model = str(packaged_model_path())
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    args = ["encode", "--index", str(root), "--model", model, "--name", "m", "--no-progress"]
    assert main(args) == 0
    return root


@pytest.fixture(scope="module")
def hotpot_root(tmp_path_factory):
    """The context paragraphs of 40 questions (386 passages; 10-25 s to encode on 2 cores)."""
    return build(tmp_path_factory.mktemp("onnx-hotpot"), QUESTIONS)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return build(tmp_path_factory.mktemp("onnx-small"), 3)


def gold(n: int) -> list[tuple[str, set[str]]]:
    rows = [orjson.loads(line) for line in HOTPOT.read_text().splitlines()[:n]]
    return [(r["question"], {t for t, _ in r["supporting_facts"]}) for r in rows]


@pytest.mark.slow
def test_recall_at_5_is_unchanged(hotpot_root, cache, monkeypatch):
    monkeypatch.setenv(onnx_encoder.CACHE_ENV, str(cache))
    questions = gold(QUESTIONS)
    index = Index.open(hotpot_root)
    found = {}
    for runtime in ("torch", "onnx-int8"):
        from retriever.dense.retriever import load

        dense = load(hotpot_root / "dense-m", index.store, backend="torch", query_encoder=runtime)
        hits = dense.search([q for q, _ in questions], 5)
        found[runtime] = [[index.store.get(h.row).title for h in row] for row in hits]
    recall = {
        r: np.mean([len(g & set(t)) / len(g) for (_, g), t in zip(questions, titles)])
        for r, titles in found.items()
    }
    pairs = list(zip(found["torch"], found["onnx-int8"]))
    same = sum(a == b for a, b in pairs)
    same_set = sum(set(a) == set(b) for a, b in pairs)
    same_top1 = sum(a[0] == b[0] for a, b in pairs)
    print(
        f"gold-title recall@5 {recall}; of {len(pairs)} questions top-5 identical in order "
        f"{same}, as a set {same_set}, top-1 {same_top1}"
    )
    assert recall["torch"] > 0.5
    assert abs(recall["onnx-int8"] - recall["torch"]) <= 0.01
    assert same_set >= 0.6 * len(pairs) and same_top1 >= 0.8 * len(pairs)


def test_the_flag_offers_exactly_the_tested_values():
    flag = next(a for a in build_parser()._actions if "--query-encoder" in a.option_strings)
    assert list(flag.choices) == list(QUERY_ENCODERS) == RUNTIMES


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_each_flag_value_serves_retrieve(small_root, cache, monkeypatch, runtime):
    monkeypatch.setenv(onnx_encoder.CACHE_ENV, str(cache))
    flags = ["--index", str(small_root), "--query-encoder", runtime, "--dense-backend", "torch"]
    cfg = config_from_args(build_parser().parse_args([*flags, "--cache-size", "0"]))
    assert cfg.query_encoder == runtime
    with RetrievalService(cfg) as service, TestClient(create_app(service)) as client:
        body = {"queries": ["Which magazine was started first?"], "topk": 3, "retriever": "dense-m"}
        r = client.post("/retrieve", json=body)
        assert r.status_code == 200, r.text
        docs = r.json()["result"][0]
        assert len(docs) == 3 and all(d["title"] for d in docs)
        encoder = type(service._retrievers["dense-m"].encoder).__name__
        assert encoder == ("TransformerEncoder" if runtime == "torch" else "OnnxEncoder")
