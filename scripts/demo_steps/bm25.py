"""Demo step: build the BM25 index of the demo root and show the top passages for a few questions."""

from __future__ import annotations

from pathlib import Path

QUESTIONS = [
    "Who founded the anarchist movement?",
    "What is the capital of Afghanistan?",
    "What did Albert Einstein receive the Nobel Prize for?",
]


def run(root: Path) -> None:
    from index_build.__main__ import main as build
    from retriever.index import Index

    if build(["bm25", "--index", str(root), "--no-progress"]) != 0:
        raise SystemExit("bm25 build failed")
    index = Index.open(root)
    for question, hits in zip(QUESTIONS, index.search(QUESTIONS, k=3, retriever="bm25")):
        print(f"\nQ: {question}")
        for passage, score in hits:
            text = passage.text[:110].replace("\n", " ")
            print(f"   {score:6.2f}  {passage.title}: {text}...")
