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
