"""Rerank quality and cost on HotpotQA: gold-title recall@3/5/10 for bm25, dense and hybrid,
each alone and reranked at depth N = 20, 50, 100 by the packaged MiniLM as a bi-encoder
(``--rerank dense-minilm``), and the latency the rerank adds per query (baseline: the same
retriever without rerank, timed in the same alternation).

Builds (or reuses, ``--index``) an index of the bundled HotpotQA-500 paragraphs with BM25 and a
MiniLM dense part, then runs ``python -m retriever.evaluate``'s code over it.

Two rerankers, both the MiniLM bi-encoder with the same scores: ``stored`` reads the candidates'
passage vectors from the dense part (encoded by ``index_build encode``; a sample is checked equal
to re-encoding), ``encode`` re-encodes every candidate as ``--rerank dense-minilm`` does. Recall
and the ``stored`` latency come from ``stored`` (re-encoding 500 x 170 candidates takes hours on
a shared 2-core CPU); the ``encode`` latency is timed on ``--encode-questions`` questions.

With ``--corpus-index ROOT`` (a larger corpus with BM25 and no dense part, e.g. the 666k
WikiExtractor build) it also measures bm25 and bm25+rerank by answer recall@3/5/10 (DPR's
has_answer, as ``retriever.evaluate --qa`` computes it) on ``--nq-questions`` NQ test questions,
the MiniLM model folder as the bi-encoder; each distinct candidate is encoded once for all depths
(``CachedBiEncoder``: the scores re-encoding gives, the cost paid once).

    .venv/bin/python scripts/bench/rerank.py --index /tmp/hotpot   # full: 500 questions
    .venv/bin/python scripts/bench/rerank.py --smoke               # 2 questions, N = 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import common as c
import numpy as np

HOTPOT = c.REPO / "tests" / "data" / "hotpotqa-distractor-500.jsonl"
PART = "dense-minilm"
BASES = ("bm25", PART, "hybrid")
HEADER = ["retriever", "N", "R@3", "R@5", "R@10", "ms/query", "added ms/query"]


def build(root: Path, questions: int) -> None:
    """corpus + bm25 + dense-minilm over the first ``questions`` HotpotQA rows' paragraphs."""
    from index_build.__main__ import main
    from retriever.dense.encoders import packaged_model_path

    if (root / PART / "manifest.json").is_file():
        return
    root.mkdir(parents=True, exist_ok=True)
    src = root.parent / "hotpot-subset.jsonl"
    src.write_text("".join(HOTPOT.read_text().splitlines(keepends=True)[:questions]))
    steps = [
        ["corpus", "--input", str(src), "--out", str(root)],
        ["bm25", "--index", str(root)],
        ["encode", "--index", str(root), "--model", str(packaged_model_path()), "--name", "minilm"],
    ]
    for argv in steps:
        if main([*argv, "--no-progress"]) != 0:
            raise SystemExit(f"building {root} failed at: {' '.join(argv)}")


class StoredVectorReranker:
    """The dense part's bi-encoder scoring candidates with the part's stored passage vectors:
    the scores re-encoding gives (``check`` compares a sample), without the encoding."""

    def __init__(self, index, part: str = PART):
        from retriever.dense.retriever import vector_parts
        from retriever.manifest import read_manifest

        folder = index.root / part
        manifest = read_manifest(folder, kind="dense")
        if manifest.get("row_map", "identity") != "identity":
            raise SystemExit(f"{folder}: row_map {manifest['row_map']!r}; need identity")
        self.encoder = index.reranker(part).encoder
        self.vectors = np.concatenate([np.asarray(v) for _, v in vector_parts(folder, manifest)])
        store = index.store
        self.row_of = {store.get(r).contents: r for r in range(len(self.vectors))}
        self.name = f"bi-encoder:{part} (stored vectors)"

    def check(self, texts: Sequence[str]) -> float:
        """Largest |stored - re-encoded| over ``texts``."""
        rows = [self.row_of[t] for t in texts]
        return float(np.abs(self.vectors[rows] - self.encoder.encode_passages(texts)).max())

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_batch([query], [passages])[0]

    def score_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        q = self.encoder.encode_queries(list(queries))
        return [
            (self.vectors[[self.row_of[t] for t in texts]] @ q[i]).astype(np.float32)
            for i, texts in enumerate(passages)
        ]


class CachedBiEncoder:
    """A bi-encoder reranker that encodes each distinct passage text once across calls, so
    depths 20, 50 and 100 over the same base pay for the deepest candidates only."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.cache: dict[str, np.ndarray] = {}
        self.encode_seconds = 0.0
        self.name = f"bi-encoder:{encoder.config.model} (cached)"

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_batch([query], [passages])[0]

    def score_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        new = list(dict.fromkeys(t for texts in passages for t in texts if t not in self.cache))
        if new:
            self.encode_seconds -= c.time.perf_counter()
            self.cache.update(zip(new, self.encoder.encode_passages(new)))
            self.encode_seconds += c.time.perf_counter()
        q = self.encoder.encode_queries(list(queries))
        return [
            (np.stack([self.cache[t] for t in texts]) @ q[i]).astype(np.float32)
            if texts
            else np.zeros(0, np.float32)
            for i, texts in enumerate(passages)
        ]


NQ_HEADER = ["retriever", "N", "AR@3", "AR@5", "AR@10", "bm25 AR@N (ceiling)"]


def nq_recall(root: Path, questions: int, depths: list[int], path: Path) -> tuple[list, dict]:
    """bm25 and bm25+rerank (MiniLM bi-encoder, re-encoding cached) answer recall on NQ."""
    from retriever.dense.encoders import packaged_model_path
    from retriever.evaluate import evaluate_run
    from retriever.evaluation import check_answers, read_topics
    from retriever.index import Index

    index = Index.open(root)
    topics = read_topics(str(path))
    topics.items = topics.items[:questions]
    check_answers(topics)
    cutoffs = sorted({3, 5, 10, *depths})
    reranker = CachedBiEncoder(index.reranker(str(packaged_model_path())).encoder)
    found = searcher(index, "bm25", 0, None)(topics, 64, max(cutoffs))
    base = evaluate_run(index, topics, found, cutoffs, answers=True)
    table = [["bm25", "-", *(f"{base[f'answer_recall@{k}']:.3f}" for k in (3, 5, 10)), "-"]]
    for depth in depths:
        found = searcher(index, "bm25+rerank", depth, reranker)(topics)
        m = evaluate_run(index, topics, found, (3, 5, 10), answers=True)
        table.append(
            ["bm25+rerank", depth, *(f"{m[f'answer_recall@{k}']:.3f}" for k in (3, 5, 10))]
            + [f"{base[f'answer_recall@{depth}']:.3f}"]
        )
        print(" | ".join(map(str, table[-1])), flush=True)
    cost = {
        "passages": len(index.store),
        "questions": len(topics.items),
        "encoded": len(reranker.cache),
        "encode_s": reranker.encode_seconds,
    }
    return table, cost


def topics_of(index, questions: int):
    """The first ``questions`` HotpotQA questions, judged on their gold titles in the corpus."""
    from retriever.evaluation import read_topics

    topics = read_topics(str(HOTPOT), store=index.store, missing_gold="drop")
    topics.items = topics.items[:questions]
    kept = {t.qid for t in topics.items}
    topics.qrels = {q: g for q, g in topics.qrels.items() if q in kept}
    return topics


def searcher(index, name: str, depth: int | None, reranker):
    """A function running every question of ``topics`` through a fresh ``name`` retriever."""
    from retriever.evaluate import _search

    options = {"reranker": reranker, "rerank_depth": depth} if depth else {}
    if depth:
        index._retrievers.pop(name, None)  # a fresh RerankRetriever per depth
    retriever = index.retriever(name, **options)

    def run(topics, batch: int = 64, k: int = 10):
        index._retrievers[name] = retriever
        return _search(index, name, topics, k, batch, False)

    return run


@contextlib.contextmanager
def queries_encoded_once(*encoders):
    """Each encoder's ``encode_queries`` memoised per query text while inside: the 12 recall
    passes encode every question once, not 11 times (the vectors are the same; timing passes
    run outside, with the real encoders)."""
    for encoder in encoders:
        memo: dict[str, np.ndarray] = {}

        def encode(texts, memo=memo, real=encoder.encode_queries):
            new = [t for t in dict.fromkeys(texts) if t not in memo]
            if new:
                memo.update(zip(new, real(new)))
            return np.stack([memo[t] for t in texts])

        encoder.encode_queries = encode
    try:
        yield
    finally:
        for encoder in encoders:
            del encoder.encode_queries  # the class's method again


def recall(index, topics, depths: list[int], reranker) -> dict[tuple[str, int], dict]:
    """R@3/5/10 of every base and base+rerank at each depth (deterministic: one pass)."""
    from retriever.evaluate import evaluate_run

    out = {}
    index.retriever(PART)  # loaded once: the memo below is on its encoder
    with queries_encoded_once(index.retriever(PART).encoder, reranker.encoder):
        for base in BASES:
            for depth in [0, *depths]:
                name = f"{base}+rerank" if depth else base
                found = searcher(index, name, depth, reranker)(topics)
                out[name, depth] = evaluate_run(index, topics, found, (3, 5, 10), answers=False)
                print(name, depth or "-", {k: round(v, 4) for k, v in out[name, depth].items()})
    return out


def latency(index, topics, depths: list[int], reranker, repeats: int, batch: int) -> dict:
    """ms/query, median of ``repeats`` alternating passes over ``topics`` in batches of
    ``batch``: per base, the base and its reranked depths take turns."""
    out = {}
    for base in BASES:
        fns = {}
        for depth in [0, *depths]:
            name = f"{base}+rerank" if depth else base
            run = searcher(index, name, depth, reranker)
            run(type(topics)(items=topics.items[:2], path=topics.path))  # load and warm up
            fns[name, depth] = lambda run=run: c.seconds_of(lambda: run(topics, batch))
        for key, seconds in c.alternate(fns, repeats).items():
            out[key] = 1000 * c.median(seconds) / len(topics.items)
    return out


def rows_of(metrics: dict, ms: dict) -> list[list]:
    table = []
    for (name, depth), m in metrics.items():
        base = ms.get((name.removesuffix("+rerank"), 0))
        t = ms.get((name, depth))
        added = "-" if t is None or base is None or not depth else f"{t - base:.1f}"
        table.append(
            [name, depth or "-", *(f"{m[f'R@{k}']:.4f}" for k in (3, 5, 10))]
            + ["-" if t is None else f"{t:.1f}", added]
        )
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, help="index root to build or reuse")
    p.add_argument("--questions", type=int, default=500, help="questions judged for recall")
    p.add_argument("--time-questions", type=int, default=32, help="questions timed per pass")
    p.add_argument("--encode-questions", type=int, default=1, help="questions timed re-encoding")
    p.add_argument("--repeats", type=int, default=3, help="alternating timed passes (median)")
    p.add_argument("--corpus-index", type=Path, help="also: NQ answer recall on this BM25 index")
    p.add_argument("--nq-questions", type=int, default=200, help="NQ questions (--corpus-index)")
    p.add_argument(
        "--nq-depths", default="20,50,100", help="rerank depths on --corpus-index (ascending)"
    )
    p.add_argument("--only-corpus", action="store_true", help="skip the HotpotQA part")
    c.add_common_args(p)
    args = p.parse_args(argv)
    if args.corpus_index:
        corpus_part(args, argv, args.corpus_index)
    if args.only_corpus:
        return 0
    from retriever.index import Index

    smoke = args.smoke
    questions = 2 if smoke else args.questions
    depths = [5] if smoke else [20, 50, 100]
    repeats = 1 if smoke else args.repeats
    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        root = args.index or Path(tmp) / "index"
        build(root, questions if smoke else 500)
        if smoke:  # the NQ code path too, on this tiny index
            corpus_part(args, argv, root)
        index = Index.open(root)
        stored = StoredVectorReranker(index)
        topics = topics_of(index, questions)
        sample = [index.store.get(r).contents for r in range(0, len(stored.vectors), 997)][:5]
        err = stored.check(sample)
        print(f"stored vs re-encoded passage vectors: max |diff| {err:.1e}", flush=True)
        if err > 1e-4:
            raise SystemExit(f"stored vectors differ from re-encoding by {err}: rebuild {PART}")
        metrics = recall(index, topics, depths, stored)
        timed = topics_of(index, min(args.time_questions, questions))
        ms = latency(index, timed, depths, stored, repeats, 64)
        enc_topics = topics_of(index, min(args.encode_questions, questions))
        enc = latency_encode(index, enc_topics, depths, repeats)
    table = rows_of(metrics, ms)
    c.print_table(HEADER, table)
    enc_header = ["retriever", "N", "ms/query", "added ms/query"]
    enc_table = [
        [n, d or "-", f"{t:.0f}", "-" if not d else f"{t - enc['bm25', 0]:.0f}"]
        for (n, d), t in enc.items()
    ]
    c.print_table(enc_header, enc_table)
    print(
        json.dumps(
            {
                "bench": "rerank",
                "questions": len(topics.items),
                "judged": len(topics.qrels),
                "stored_vs_encoded_max_diff": err,
                "rows": [dict(zip(HEADER, r)) for r in table],
                "encode_rows": [dict(zip(enc_header, r)) for r in enc_table],
            }
        )
    )
    if not args.no_record:
        command = c.command_line("rerank.py", argv)
        c.append_section(
            f"Rerank on HotpotQA-{len(topics.items)} (MiniLM bi-encoder, stored vectors)",
            command,
            table,
            HEADER,
            f"Gold-title recall (ir_measures; {len(topics.qrels)} questions judged: gold titles "
            "missing from the corpus dropped, questions with none left not judged). Rerank = "
            "the dense-minilm bi-encoder scoring the base's top N with the part's stored passage "
            f"vectors (equal to re-encoding: max |diff| {err:.1e}). ms/query: median of "
            f"{repeats} alternating passes over {len(timed.items)} questions in batches of 64, "
            "CPU, shared noisy machine.",
            smoke=smoke,
        )
        c.append_section(
            f"Rerank latency re-encoding the candidates (MiniLM bi-encoder, HotpotQA-"
            f"{len(enc_topics.items)})",
            command,
            enc_table,
            enc_header,
            "`--rerank dense-minilm` as the server and evaluate run it: every candidate encoded. "
            f"ms/query: median of {repeats} alternating passes over {len(enc_topics.items)} "
            "questions in one batch, CPU, shared noisy machine.",
            smoke=smoke,
        )
    return 0


def corpus_part(args, argv, root: Path) -> None:
    """NQ answer recall of bm25 and bm25+rerank on a larger BM25-only index ``root``."""
    nq_depths = sorted(int(d) for d in args.nq_depths.split(","))
    questions, depths = (3, [5]) if args.smoke else (args.nq_questions, nq_depths)
    nq = c.TEST_DATA / "nq-test.tsv"
    table, cost = nq_recall(root, questions, depths, nq)
    c.print_table(NQ_HEADER, table)
    print(
        json.dumps({"bench": "rerank-nq", **cost, "rows": [dict(zip(NQ_HEADER, r)) for r in table]})
    )
    if not args.no_record:
        c.append_section(
            f"Rerank on {cost['passages']:,} passages, NQ-{cost['questions']} (MiniLM bi-encoder)",
            c.command_line("rerank.py", argv),
            table,
            NQ_HEADER,
            "Answer recall@k (DPR has_answer over the passage text, as `retriever.evaluate --qa`). "
            "Rerank = the packaged MiniLM folder as a bi-encoder re-encoding the bm25 top N; each "
            f"distinct candidate encoded once over all depths: {cost['encoded']} passages in "
            f"{cost['encode_s']:.0f} s (CPU, shared noisy machine). Ceiling: bm25's own AR@N, "
            "what any reranker of its top N can reach at most.",
            smoke=args.smoke,
        )


def latency_encode(index, topics, depths: list[int], repeats: int) -> dict:
    """ms/query of bm25 and bm25+rerank re-encoding the candidates (the real reranker)."""
    fns = {}
    for depth in [0, *depths]:
        name = "bm25+rerank" if depth else "bm25"
        run = searcher(index, name, depth, PART)
        fns[name, depth] = lambda run=run: c.seconds_of(lambda: run(topics, len(topics.items)))
    return {  # the model is loaded and warm: the stored-vector reranker encoded its queries
        key: 1000 * c.median(seconds) / len(topics.items)
        for key, seconds in c.alternate(fns, repeats).items()
    }


if __name__ == "__main__":
    raise SystemExit(main())
