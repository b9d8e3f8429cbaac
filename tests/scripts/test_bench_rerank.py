"""scripts/bench/rerank.py's own logic, which its ``--smoke`` run cannot check: the judged set
follows the questions kept, and its caching bi-encoder scores what the library's does (the real
packaged MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from retriever.index import Index

BENCH = REPO / "scripts" / "bench"


@pytest.fixture
def bench(monkeypatch):
    """scripts/bench/rerank.py imported the way ``python scripts/bench/rerank.py`` runs it."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_rerank", BENCH / "rerank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_topics_judge_only_the_questions_kept(bench, hotpot_root):
    """Recall is a mean over judged questions: a 5-question run judged on all 422 of the file
    divided its hits by 422."""
    topics = bench.topics_of(Index.open(hotpot_root), 5)
    kept = [t.qid for t in topics.items]
    assert len(kept) == 5
    assert topics.qrels and set(topics.qrels) <= set(kept)


def test_cached_bi_encoder_scores_what_the_library_scores(bench, hotpot_root):
    from retriever.dense.encoders import packaged_model_path

    index = Index.open(hotpot_root)
    library = index.reranker(str(packaged_model_path()))
    cached = bench.CachedBiEncoder(library.encoder)
    texts = [index.store.get(r).contents for r in range(4)]
    queries = ["Which magazine was started first?", "Were Scott Derrickson and Ed Wood American?"]
    passages = [texts[:3], texts[1:] + [texts[1]]]
    want = library.score_batch(queries, passages)
    got = cached.score_batch(queries, passages)
    assert len(cached.cache) == 4  # each distinct text encoded once
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    again = cached.score_batch(queries[:1], [texts[:2]])[0]  # from the cache, same scores
    np.testing.assert_allclose(again, want[0][:2], rtol=1e-5, atol=1e-6)
    assert len(cached.cache) == 4 and cached.score_batch(["q"], [[]])[0].shape == (0,)


def test_answer_ranks_give_the_library_answer_recall(bench, hotpot_root):
    """The NQ table's AR@k and its bootstrap come from per-question first-answer ranks: they
    must count what ``retriever.evaluation.answer_recall`` counts."""
    from retriever.evaluation import answer_recall, has_answer, read_topics

    index = Index.open(hotpot_root)
    store = index.store
    topics = read_topics(str(bench.HOTPOT))
    topics.items = topics.items[:8]
    run, texts = {}, {}
    for i, t in enumerate(topics.items):
        found = [r for r in range(len(store)) if has_answer(store.get(r).text, t.answers)][:1]
        rows = [(i * 97 + j * 13) % len(store) for j in range(12)]
        if found and i % 4:  # questions 0 and 4 only by chance; the others at rank i
            rows.insert(i, found[0])
        run[t.qid] = [(store.get(r).id, 1.0) for r in rows]
        texts[t.qid] = [store.get(r).text for r in rows]
    ranks = bench.answer_ranks(index, topics, run)
    want = answer_recall(topics.items, texts, (1, 3, 5, 10))
    assert {f"answer_recall@{k}": float(np.mean(ranks < k)) for k in (1, 3, 5, 10)} == want
    assert 0 < want["answer_recall@10"] < 1


def test_bootstrap_interval_matches_the_binomial_width(bench):
    """200 questions at recall 0.3: the normal-approximation 95% half-width is 0.064."""
    x = (np.arange(200) % 10 < 3).astype(float)
    lo, hi = bench.bootstrap_ci(x)
    assert lo < 0.3 < hi
    assert abs((hi - lo) / 2 - 1.96 * np.sqrt(0.3 * 0.7 / 200)) < 0.006
    assert bench.bootstrap_ci(x) == (lo, hi)  # seeded


def test_cached_bi_encoder_resumes_from_its_file(bench, hotpot_root, tmp_path):
    """An interrupted hour-long run goes on: vectors written by one instance are read back by
    the next, which encodes only what is new and scores the same."""
    from retriever.dense.encoders import packaged_model_path

    encoder = Index.open(hotpot_root).reranker(str(packaged_model_path())).encoder
    texts = [Index.open(hotpot_root).store.get(r).contents for r in range(5)]
    path = tmp_path / "vectors.npz"
    first = bench.CachedBiEncoder(encoder, path)
    want = first.score_batch(["Which magazine was started first?"], [texts[:3]])[0]
    assert path.is_file() and first.encoded == texts[:3]
    second = bench.CachedBiEncoder(encoder, path)
    got = second.score_batch(["Which magazine was started first?"], [texts[:4]])[0]
    assert second.encoded == texts[3:4]  # the first three came from the file
    np.testing.assert_allclose(got[:3], want, rtol=1e-6, atol=1e-7)
    assert len(bench.CachedBiEncoder(encoder, path).cache) == 4

    class Other:
        config = type("Config", (), {"model": "another-model"})()

    with pytest.raises(SystemExit, match="another-model"):
        bench.CachedBiEncoder(Other(), path)
