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
import hashlib
import json
import os
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
    depths 20, 50 and 100 over the same base pay for the deepest candidates only.

    With ``path`` the vectors are also kept on disk (written after every call that encoded,
    ``tmp`` then rename) and read back at start: an hour-long run on a loaded 2-core box that
    is stopped goes on where it stopped."""

    def __init__(self, encoder, path: Path | None = None):
        self.encoder = encoder
        self.path = path
        self.cache: dict[str, np.ndarray] = {}
        self.encode_seconds = 0.0
        self.encoded: list[str] = []  # texts encoded by this process (the cache may hold more)
        self.name = f"bi-encoder:{encoder.config.model} (cached)"
        if path is not None and path.is_file():
            with np.load(path) as saved:
                if str(saved["model"]) != str(encoder.config.model):
                    raise SystemExit(
                        f"{path} holds vectors of {saved['model']}, not {encoder.config.model}: "
                        "give another --encode-cache or delete it"
                    )
                self.cache.update(zip(saved["keys"].tolist(), saved["vectors"]))
            print(f"{path}: {len(self.cache)} passage vectors read back", flush=True)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        keys = list(self.cache)
        np.savez(
            tmp,
            keys=np.array(keys),
            vectors=np.stack([self.cache[k] for k in keys]),
            model=np.array(str(self.encoder.config.model)),
        )
        os.replace(tmp, self.path)

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_batch([query], [passages])[0]

    def score_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        keys = [[self.key(t) for t in texts] for texts in passages]
        new = {k: t for ks, texts in zip(keys, passages) for k, t in zip(ks, texts)}
        new = {k: t for k, t in new.items() if k not in self.cache}
        if new:
            self.encode_seconds -= c.time.perf_counter()
            self.cache.update(zip(new, self.encoder.encode_passages(list(new.values()))))
            self.encode_seconds += c.time.perf_counter()
            self.encoded.extend(new.values())
            if self.path is not None:
                self.save()
        q = self.encoder.encode_queries(list(queries))
        return [
            (np.stack([self.cache[k] for k in ks]) @ q[i]).astype(np.float32)
            if ks
            else np.zeros(0, np.float32)
            for i, ks in enumerate(keys)
        ]


NQ_HEADER = [
    "retriever",
    "N",
    "AR@3",
    "AR@5",
    "AR@10",
    "bm25 AR@N (ceiling)",
    "AR@5 95% CI",
    "AR@5 - bm25 (paired 95% CI)",
]


def answer_ranks(index, topics, run) -> np.ndarray:
    """Per question, the rank of the first passage holding an answer (DPR has_answer, as
    ``answer_recall`` counts it); ``inf`` when none does. AR@k is ``mean(ranks < k)``."""
    from retriever.evaluation import has_answer

    out = np.full(len(topics.items), np.inf)
    for i, t in enumerate(topics.items):
        rows = (index.store.find_id(d) for d, _ in run.get(t.qid, ()))
        out[i] = next(
            (r for r, row in enumerate(rows) if has_answer(index.store.get(row).text, t.answers)),
            np.inf,
        )
    return out


def bootstrap_ci(x: np.ndarray, reps: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``mean(x)`` over questions resampled with
    replacement (seeded: the same interval every run).

    >>> bootstrap_ci(np.zeros(50))
    (0.0, 0.0)
    """
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def nq_recall(
    root: Path, questions: int, depths: list[int], path: Path, cache: Path | None = None
) -> tuple[list, dict]:
    """bm25 and bm25+rerank (MiniLM bi-encoder, re-encoding cached) answer recall on NQ, each
    row with a bootstrap interval and its paired difference to bm25 (same questions)."""
    from retriever.dense.encoders import packaged_model_path
    from retriever.evaluation import check_answers, read_topics
    from retriever.index import Index

    index = Index.open(root)
    topics = read_topics(str(path))
    topics.items = topics.items[:questions]
    check_answers(topics)
    reranker = CachedBiEncoder(index.reranker(str(packaged_model_path())).encoder, cache)
    base = answer_ranks(
        index, topics, searcher(index, "bm25", 0, None)(topics, 64, max(10, *depths))
    )

    def ci(x: np.ndarray) -> str:
        lo, hi = bootstrap_ci(x)
        return f"[{lo:.3f}, {hi:.3f}]"

    def row(name, depth, ranks, diff: str) -> list:
        ar = [f"{np.mean(ranks < k):.3f}" for k in (3, 5, 10)]
        ceiling = "-" if not depth else f"{np.mean(base < depth):.3f}"
        return [name, depth or "-", *ar, ceiling, ci((ranks < 5).astype(float)), diff]

    table = [row("bm25", 0, base, "-")]
    stages = []
    for depth in depths:
        ranks = answer_ranks(
            index, topics, searcher(index, "bm25+rerank", depth, reranker)(topics, 8)
        )
        d = (ranks < 5).astype(float) - (base < 5)
        table.append(row("bm25+rerank", depth, ranks, f"{d.mean():+.3f} {ci(d)}"))
        stages.append(
            {"depth": depth, "encoded": len(reranker.encoded), "s": reranker.encode_seconds}
        )
        print(" | ".join(map(str, table[-1])), f"({stages[-1]})", flush=True)
    cost = {
        "passages": len(index.store),
        "questions": len(topics.items),
        "encoded": len(reranker.encoded),
        "cached": len(reranker.cache),
        "encode_s": reranker.encode_seconds,
        "encode_stages": stages,
        "candidate_tokens": mean_tokens(reranker.encoder, reranker.encoded or ["-"]),
    }
    return table, cost


def mean_tokens(encoder, texts: Sequence[str]) -> float:
    """Mean model tokens per passage (specials included, truncated as encoding truncates)."""
    return float(np.mean([len(x) for x in encoder.tokenize(texts, encoder.config.passage_prefix)]))


def nq_latency(root: Path, questions: int, depths: list[int], path: Path) -> dict:
    """Median over ``questions`` NQ questions, one query a call, of the ms bm25+rerank (the
    real reranker, re-encoding every candidate) adds to bm25 alone at each depth; the variants
    of one question run back to back, in alternating order."""
    from retriever.dense.encoders import packaged_model_path
    from retriever.evaluation import read_topics
    from retriever.index import Index

    index = Index.open(root)
    items = read_topics(str(path)).items[:questions]
    bm25 = index.retriever("bm25")
    index._retrievers.pop("bm25+rerank", None)
    reranked = index.retriever("bm25+rerank", reranker=str(packaged_model_path()))
    reranked.search(["warm up"], 10, depth=4)
    fns = {0: lambda q: bm25.search([q], 10)}
    fns.update({d: lambda q, d=d: reranked.search([q], 10, depth=d) for d in depths})
    added: dict[int, list[float]] = {d: [] for d in depths}
    for i, t in enumerate(items):
        order = list(fns) if i % 2 == 0 else list(fns)[::-1]
        ms = {d: 1000 * c.seconds_of(lambda d=d, q=t.query: fns[d](q)) for d in order}
        for d in depths:
            added[d].append(ms[d] - ms[0])
    return {d: c.median(v) for d, v in added.items()}


def encode_rate(root: Path, sample: int) -> dict:
    """passages/s of the packaged MiniLM encoding ``sample`` passages spread evenly over the
    corpus (one process, the encoder's default batch), and the hours a full dense part of this
    corpus would take at that rate."""
    from retriever.dense.encoders import packaged_model_path
    from retriever.index import Index

    index = Index.open(root)
    encoder = index.reranker(str(packaged_model_path())).encoder
    n = len(index.store)
    texts = [index.store.get(r).contents for r in range(0, n, max(1, n // sample))][:sample]
    encoder.encode_passages(texts[:8])  # warm up
    seconds = c.seconds_of(lambda: encoder.encode_passages(texts))
    rate = len(texts) / seconds
    return {
        "sample": len(texts),
        "seconds": seconds,
        "passages_per_s": rate,
        "tokens_per_passage": mean_tokens(encoder, texts),
        "full_corpus_hours": n / rate / 3600,
    }


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
    p.add_argument("--nq-time-questions", type=int, default=5, help="NQ questions timed one by one")
    p.add_argument(
        "--encode-sample", type=int, default=2000, help="passages timed encoding (0: skip)"
    )
    p.add_argument(
        "--encode-cache", type=Path, help="keep --corpus-index candidate vectors here (resume)"
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
    """NQ answer recall of bm25 and bm25+rerank on a larger BM25-only index ``root``, the
    latency the rerank adds per query, and the MiniLM encoding rate on its passages."""
    nq_depths = sorted(int(d) for d in args.nq_depths.split(","))
    if args.smoke:
        questions, depths, timed, sample = 3, [5], 1, 16
    else:
        questions, depths = args.nq_questions, nq_depths
        timed, sample = args.nq_time_questions, args.encode_sample
    nq = c.TEST_DATA / "nq-test.tsv"
    added = nq_latency(root, timed, depths, nq)  # first: minutes, where recall takes an hour
    print(f"added ms/query (median of {timed}): {added}", flush=True)
    table, cost = nq_recall(root, questions, depths, nq, args.encode_cache)
    header = [*NQ_HEADER, "added ms/query"]
    for r in table:
        r.append("-" if r[1] == "-" else f"{added[r[1]]:.0f}")
    rate = encode_rate(root, sample) if sample else {}
    c.print_table(header, table)
    print(
        json.dumps(
            {
                "bench": "rerank-nq",
                **cost,
                "timed_questions": timed,
                "encode_rate": rate,
                "rows": [dict(zip(header, r)) for r in table],
            }
        )
    )
    if args.no_record:
        return
    stages = "; ".join(
        f"N={s['depth']}: {s['encoded']} in {s['s']:.0f} s" for s in cost["encode_stages"]
    )
    rate_note = (
        f" Encoding rate, {rate['sample']} passages spread over the corpus "
        f"({rate['tokens_per_passage']:.0f} tokens each), one process: "
        f"{rate['passages_per_s']:.1f} passages/s, so a dense part of all {cost['passages']:,} "
        f"would take {rate['full_corpus_hours']:.0f} h here."
        if rate
        else ""
    )
    c.append_section(
        f"Rerank on {cost['passages']:,} passages, NQ-{cost['questions']} (MiniLM bi-encoder)",
        c.command_line("rerank.py", argv),
        table,
        header,
        "Answer recall@k (DPR has_answer over the passage text, as `retriever.evaluate --qa`) "
        f"on the first {cost['questions']} NQ test questions, the same for every row. Rerank = "
        "the packaged MiniLM folder as a bi-encoder re-encoding the bm25 top N; each distinct "
        f"candidate encoded once over all depths (cumulative: {stages}; "
        f"{cost['candidate_tokens']:.0f} tokens a candidate). Ceiling: bm25's own AR@N, what "
        "any reranker of its top N can reach at most. CI: 95% percentile bootstrap over "
        "questions (10,000 resamples); the difference is paired (same questions). Added "
        f"ms/query: median over {timed} questions, one query a call, of bm25+rerank re-encoding "
        f"its N candidates minus bm25 alone (CPU, shared noisy machine).{rate_note}",
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
