"""The docs hold together: every relative link and every ``docs/*.md`` path named in README.md,
BENCHMARKS.md and docs/*.md exists, anchors name a real heading, every ``python -m X`` they show
is an importable module, and no file cites the design notes that lived outside the repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from conftest import REPO

ROOT = REPO
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]+\.md")
PYTHON_M = re.compile(r"python3? -m ([A-Za-z_][\w.]*)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where markdown links are live."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(CODE_SPAN.sub("", line))
    return "\n".join(out)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (lowercase, punctuation dropped, - for space)."""
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def _relative_links(doc: Path) -> list[str]:
    links = LINK.findall(_prose(doc.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for link in _relative_links(doc):
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{link} (no file {path.relative_to(ROOT)})")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link} (no heading #{anchor} in {path.name})")
    assert not broken, f"{doc.name}: broken links: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_docs_pages_exist(doc: Path):
    cited = set(DOCS_PATH.findall(doc.read_text(encoding="utf-8")))
    missing = sorted(path for path in cited if not (ROOT / path).is_file())
    assert not missing, f"{doc.name} cites pages that do not exist: {missing}"


def test_python_m_modules_are_importable():
    named = {
        (doc.name, module.rstrip("."))
        for doc in DOCS
        if doc.name != "benchmarks-history.md"  # a dated log: it records commands as they were run
        for module in PYTHON_M.findall(doc.read_text(encoding="utf-8"))
    }
    assert ("README.md", "index_build") in named
    missing = sorted((doc, m) for doc, m in named if importlib.util.find_spec(m) is None)
    assert not missing, f"`python -m` names modules that do not exist: {missing}"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 260, "README.md grew back into a manual: move text to docs/"
    for page in ("docs/design.md", "docs/contributing.md"):
        assert page in readme, f"README.md does not link {page}"


def test_no_citation_of_design_notes_outside_the_repository():
    stale = "DESIGN" + ".md"  # the notes now live in docs/design.md
    files = [p for p in ROOT.glob("*.md")] + [ROOT / "pyproject.toml"]
    for folder in ("retriever", "env", "index_build", "scripts", "tests", "docs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".toml"}]
    citing = sorted(
        str(p.relative_to(ROOT))
        for p in files
        if stale in p.read_text(encoding="utf-8", errors="replace")
    )
    assert not citing, f"{citing} cite {stale}; cite docs/design.md instead"
