"""The rerank stage: a real sentence-transformers CrossEncoder (a tiny BERT with random weights,
saved and loaded by path), the packaged MiniLM as a bi-encoder, over a real HotpotQA index.

Checks per-query pairing (a batch of queries gives what each gives alone), that reranking only
reorders the base retriever's candidates, and the library against a reference computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from retriever.errors import BadRequestError, IndexFormatError
from retriever.index import Index
from retriever.rerank import RerankRetriever, rerank_hits
from retriever.types import Hit

QUERIES = [
    "Which magazine was started first Arthur's Magazine or First for Women?",
    "Were Scott Derrickson and Ed Wood of the same nationality?",
    "What government position was held by the woman who portrayed Corliss Archer?",
]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A real CrossEncoder folder: a 1-layer BERT classification head (seeded random weights)
    with the packaged MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from retriever.dense.encoders import packaged_model_path

    folder = tmp_path_factory.mktemp("tiny-ce")
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """BM25 and a MiniLM dense part over the paragraphs of 5 HotpotQA questions (50 passages:
    encoding costs about 0.1 CPU-s a passage here, and every rerank encodes its candidates)."""
    from retriever_fakes import paragraphs_jsonl

    from index_build.__main__ import main
    from retriever.dense.encoders import packaged_model_path

    src = tmp_path_factory.mktemp("rerank")
    corpus = paragraphs_jsonl(src / "corpus.jsonl", 5)
    root = src / "index"
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    assert main(["bm25", "--index", str(root), "--no-progress"]) == 0
    model = str(packaged_model_path())
    argv = ["encode", "--index", str(root), "--model", model, "--name", "minilm", "--no-progress"]
    assert main(argv) == 0
    return root


def test_cross_encoder_pairs_per_query(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    from retriever.dense.rerankers import CrossEncoderReranker, detect_kind

    assert detect_kind(str(tiny_cross_encoder)) == "cross-encoder"
    reranker = CrossEncoderReranker(str(tiny_cross_encoder))
    passages = [["a magazine", "women", "Arthur"], ["Ed Wood was American", "Scott"]]
    batched = reranker.score_batch(QUERIES[:2], passages)
    alone = [reranker.score(q, p) for q, p in zip(QUERIES[:2], passages)]
    assert [len(s) for s in batched] == [3, 2]
    for b, a in zip(batched, alone):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # the raw logits of the model itself, pair by pair
    import torch

    model = CrossEncoder(str(tiny_cross_encoder), activation_fn=torch.nn.Identity())
    want = model.predict([(QUERIES[1], p) for p in passages[1]], show_progress_bar=False)
    np.testing.assert_allclose(batched[1], want, rtol=1e-5, atol=1e-6)
    assert len(set(batched[0].tolist())) == 3  # random weights still tell passages apart


def test_cross_encoder_rerank_over_bm25(small_root, tiny_cross_encoder):
    idx = Index.open(small_root)
    spec = f"cross-encoder:{tiny_cross_encoder}"
    rr = idx.retriever("bm25+rerank", reranker=spec, rerank_depth=10)
    got = rr.search(QUERIES, 4)
    base = idx.retriever("bm25").search(QUERIES, 10)
    scorer = idx.reranker(spec)
    for q, hits, cands in zip(QUERIES, got, base):
        assert len(hits) == 4 and {h.row for h in hits} <= {h.row for h in cands}
        scores = scorer.score(q, [idx.store.get(h.row).contents for h in cands])
        assert [h.row for h in hits] == [h.row for h in rerank_hits(cands, scores, 4)]
    assert rr.search(QUERIES[1:2], 4) == got[1:2]


@pytest.mark.slow  # encodes hundreds of candidates: minutes on the shared 2 cores
def test_bi_encoder_part_rerank_matches_reference(small_root):
    from retriever.dense.encoders import load_encoder, packaged_model_path, resolve_config

    idx = Index.open(small_root)
    rr = idx.retriever("bm25+rerank", reranker="dense-minilm", rerank_depth=20)
    assert isinstance(rr, RerankRetriever) and rr.name == "bm25+rerank"
    got = rr.search(QUERIES, 5)
    enc = load_encoder(resolve_config(str(packaged_model_path())))
    for q, hits, cands in zip(QUERIES, got, idx.retriever("bm25").search(QUERIES, 20)):
        texts = [idx.store.get(h.row).contents for h in cands]
        scores = enc.encode_passages(texts) @ enc.encode_queries([q])[0]
        want = sorted(range(len(cands)), key=lambda i: (-scores[i], i))[:5]
        assert [h.row for h in hits] == [cands[i].row for i in want]
        np.testing.assert_allclose([h.score for h in hits], scores[want], rtol=1e-4, atol=1e-5)
    # per query, never across the batch: each alone gives the same
    for q, hits in zip(QUERIES, got):
        alone = rr.search([q], 5)[0]
        assert [h.row for h in alone] == [h.row for h in hits]
    # the same encoder reranking by a model folder (kind read from its files)
    by_path = idx.retriever("dense-minilm+rerank", reranker=str(packaged_model_path()))
    assert by_path.reranker.name.startswith("bi-encoder:")


def test_default_reranker_is_the_dense_part(small_root):
    idx = Index.open(small_root)
    assert idx.reranker().name == "bi-encoder:dense-minilm"
    assert idx.retriever("hybrid+rerank", rerank_depth=5).search(QUERIES[:1], 3)[0]


def test_bad_reranker_specs(small_root, tmp_path):
    idx = Index.open(small_root)
    with pytest.raises(BadRequestError, match="dense-nope"):
        idx.reranker("dense-nope")
    with pytest.raises(BadRequestError, match="rerank_depth must be between 1 and 1000, got 0"):
        idx.retriever("bm25+rerank", reranker="dense-minilm", rerank_depth=0)
    with pytest.raises(BadRequestError, match="unknown retriever 'nope'"):
        idx.retriever("nope+rerank", reranker="dense-minilm")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    with pytest.raises(IndexFormatError, match="cannot load cross-encoder"):
        idx.reranker(str(broken))
    with pytest.raises(IndexFormatError, match="no config.json"):
        idx.reranker(str(tmp_path))


def test_rerank_hits_keeps_base_order_on_ties():
    hits = [Hit(9, 3.0), Hit(2, 2.0), Hit(4, 1.0)]
    assert [h.row for h in rerank_hits(hits, [1.0, 1.0, 1.0], 3)] == [9, 2, 4]
    assert [h.row for h in rerank_hits(hits, [0.0, 1.0, 1.0], 2)] == [2, 4]


# ---- the service and the HTTP server ---------------------------------------------------------


@pytest.fixture(scope="module")
def served(small_root):
    """A service with --rerank dense-minilm (the dense part's own worker scores) and its app."""
    from fastapi.testclient import TestClient

    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService, ServiceConfig

    config = ServiceConfig(index=small_root, rerank="dense-minilm", rerank_depth=10, cache_size=0)
    service = RetrievalService(config).start()
    with TestClient(create_app(service)) as client:
        yield service, client
    service.stop()


@pytest.mark.slow  # encodes hundreds of candidates: minutes on the shared 2 cores
def test_service_rerank_equals_library(small_root, served):
    service, _ = served
    assert service.rerank.op == "rerank"  # on the dense part's worker, not a thread of its own
    assert service.rerank.batcher is service._batchers["dense-minilm"]
    lib = Index.open(small_root).retriever("bm25+rerank", reranker="dense-minilm", rerank_depth=10)
    for name in ("bm25+rerank", "hybrid+rerank", "dense-minilm+rerank"):
        got = service.search(QUERIES, 4, name)
        if name == "bm25+rerank":
            want = lib.search(QUERIES, 4)
            assert [[h.row for h in q] for q in got] == [[h.row for h in q] for q in want]
            for g, w in zip(got, want):
                np.testing.assert_allclose([h.score for h in g], [h.score for h in w], atol=1e-5)
        # a batch of queries gives what each gives alone (scores up to float rounding)
        alone = [service.search([q], 4, name)[0] for q in QUERIES]
        assert [[h.row for h in q] for q in alone] == [[h.row for h in q] for q in got]
        for a, g in zip(alone, got):
            np.testing.assert_allclose([h.score for h in a], [h.score for h in g], atol=1e-5)
    shallow = service.search(QUERIES, 2, "bm25+rerank", rerank_depth=3)
    base = service.search(QUERIES, 3, "bm25")
    for s, b in zip(shallow, base):
        assert {h.row for h in s} <= {h.row for h in b}


@pytest.mark.slow  # encodes hundreds of candidates: minutes on the shared 2 cores
def test_http_retrieve_and_rerank(small_root, served):
    service, client = served
    body = {"queries": QUERIES, "retriever": "bm25+rerank", "topk_retrieval": 10, "topk": 3}
    r = client.post("/retrieve", json={**body, "return_scores": True})
    assert r.status_code == 200, r.text
    want = service.search(QUERIES, 3, "bm25+rerank")
    got = r.json()["result"]
    ids = [[service.index.store.get(h.row).id for h in q] for q in want]
    assert [[item["document"]["id"] for item in q] for q in got] == ids
    # /rerank (Search-R1's rerank_server.py body): BM25's docs of each query, reranked
    bm25 = client.post("/retrieve", json={"queries": QUERIES, "topk": 10, "return_scores": True})
    docs = bm25.json()["result"]
    r = client.post("/rerank", json={"queries": QUERIES, "documents": docs, "rerank_topk": 3})
    assert r.status_code == 200, r.text
    assert [[d["id"] for d in q] for q in r.json()["result"]] == ids
    # plain strings come back as sent, with scores
    texts = [[d["document"]["contents"] for d in q] for q in docs]
    r = client.post(
        "/rerank", json={"queries": QUERIES[:1], "documents": texts[:1], "return_scores": True}
    )
    items = r.json()["result"][0]
    assert len(items) == service.config.default_topk
    contents = {d["document"]["id"]: d["document"]["contents"] for d in docs[0]}
    assert [i["document"] for i in items] == [contents[i] for i in ids[0]]  # in rerank order
    assert items[0]["score"] >= items[1]["score"]


def test_http_rerank_bad_input(served):
    _, client = served
    cases = [
        ({"queries": QUERIES[:1], "retriever": "bm25+rerank", "rerank_depth": 0}, "rerank_depth"),
        ({"queries": QUERIES[:1], "retriever": "bm25+rerank", "rerank_depth": 5000}, "5000"),
        ({"queries": QUERIES[:1], "retriever": "nope+rerank"}, "nope+rerank"),
    ]
    for body, needle in cases:
        r = client.post("/retrieve", json=body)
        assert r.status_code == 422 and needle in r.json()["detail"], r.text
    r = client.post("/rerank", json={"queries": QUERIES[:2], "documents": [["a"]]})
    assert r.status_code == 422 and "2 queries but 1 document lists" in r.json()["detail"]
    r = client.post("/rerank", json={"queries": ["q"], "documents": [[{"id": "1"}]]})
    assert r.status_code == 422 and "has no text" in r.json()["detail"]
    r = client.post("/rerank", json={"queries": [], "documents": []})
    assert r.status_code == 200 and r.json() == {"result": []}


def test_server_without_rerank_names_the_flag(small_root):
    from retriever.server.service import RetrievalService, ServiceConfig

    with RetrievalService(ServiceConfig(index=small_root, retrievers=("bm25",))) as service:
        with pytest.raises(BadRequestError, match="--rerank"):
            service.search(QUERIES[:1], 3, "bm25+rerank")


def test_reranker_that_fails_to_load_stops_the_server(small_root, tmp_path, capsys):
    from retriever.server.app import main

    argv = ["--index", str(small_root), "--port", "0", "--retrievers", "bm25", "--no-ui"]
    assert main([*argv, "--rerank", str(tmp_path / "no-such-model")]) == 1
    err = capsys.readouterr().err
    assert "error: the index failed to load: reranker model" in err and "no-such-model" in err


@pytest.mark.slow  # encodes hundreds of candidates: minutes on the shared 2 cores
def test_evaluate_cli_reranks(small_root, tmp_path, capsys):
    import orjson
    from retriever_fakes import HOTPOT

    from retriever.evaluate import main

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(HOTPOT.read_text().splitlines(keepends=True)[:5]))
    argv = ["--index", str(small_root), "--qa", str(qa), "--missing-gold", "drop", "--json"]
    argv += ["--retriever", "bm25,bm25+rerank", "--rerank", "dense-minilm", "--rerank-depth", "10"]
    assert main([*argv, "-k", "10", "--cutoffs", "3,5,10", "--no-progress"]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["retriever"] for r in rows] == ["bm25", "bm25+rerank"]
    # reranking the top 10 only reorders them: recall at 10 is the same
    assert rows[0]["metrics"]["R@10"] == rows[1]["metrics"]["R@10"]
