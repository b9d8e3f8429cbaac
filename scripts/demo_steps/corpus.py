"""Demo step 1: the bundled real Wikipedia XML sample to a passage store, stats and lookups."""

from __future__ import annotations

from pathlib import Path

from index_build.__main__ import main as build
from retriever.store.docstore import DocStore

SAMPLE = Path(__file__).resolve().parents[2] / "tests/data/enwiki-sample-pages-articles.xml.bz2"


def run(root: Path) -> None:
    assert build(["corpus", "--input", str(SAMPLE), "--out", str(root), "--no-progress"]) == 0
    store = DocStore.open(root)
    stats = store.stats()
    print(
        f"store: {stats['num_docs']} passages, {stats['num_pages']} pages, "
        f"{stats['num_redirects']} redirects, {stats['words_per_passage']} words/passage, {stats['checksum'][:19]}..."
    )
    for name in (
        "Albert Einstein",
        "/wiki/Anarchism",
        "https://en.wikipedia.org/w/index.php?title=Aikido",
        "ANOVA",
    ):
        page = store.page(name)
        shown = (
            "not found"
            if page is None
            else f"{page.title!r} ({len(page.text):,} chars): {page.text[:90]}..."
        )
        print(f"  lookup {name!r} -> {shown}")
    p = store.get(len(store) // 2)
    print(f"  row {p.row}: id={p.id} title={p.title!r} url={p.url}\n    {p.text[:150]}...")
