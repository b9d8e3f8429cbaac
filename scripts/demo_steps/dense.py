"""Demo step: encode the sample corpus with the packaged MiniLM, build a Flat index, and show
dense results beside BM25's for a few questions."""

from __future__ import annotations

from pathlib import Path

from index_build.__main__ import main as build
from retriever.dense.encoders import packaged_model_path
from retriever.index import Index

QUESTIONS = ["who developed the theory of relativity", "what is the philosophy of anarchism about"]


def run(root: Path) -> None:
    model = str(packaged_model_path())  # checks the weights' sha256
    # bf16 autocast: about 2x faster on CPUs with AVX512-BF16, cosine > 0.9999 to fp32
    assert (
        build(
            [
                "encode",
                "--index",
                str(root),
                "--model",
                model,
                "--name",
                "minilm",
                "--dtype",
                "bf16",
            ]
        )
        == 0
    )
    assert (
        build(
            [
                "faiss",
                "--index",
                str(root),
                "--name",
                "minilm",
                "--factory",
                "Flat",
                "--no-progress",
            ]
        )
        == 0
    )
    idx = Index.open(root)
    names = idx.names()
    shown = [n for n in ("bm25", "dense-minilm") if n in names]
    if "bm25" not in names:
        print("  (no bm25 part yet: dense results only)")
    for q in QUESTIONS:
        print(f"  Q: {q}")
        results = {name: idx.search([q], k=3, retriever=name)[0] for name in shown}
        for name in shown:
            for rank, (passage, score) in enumerate(results[name], 1):
                print(
                    f"    {name:>12} #{rank} {score:7.3f}  {passage.title}: {passage.text[:70]!r}"
                )
