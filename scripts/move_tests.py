"""One-shot: move every ``tests/test_*.py`` into a subfolder that mirrors the package it tests.

Run from the repository root on a clean tree of tests (``python scripts/move_tests.py``; add
``--dry-run`` to see the plan). A test file missing from ``ROOMS`` stops the run before anything
moves: give it a room here and rerun. Untracked test files stop it too (``git mv`` needs them
committed), and so do test files that import another test file. Support modules (``conftest.py``, ``*_support.py``, ``retriever_fakes.py``, ...) and
``tests/data`` stay at the top; tests import them by module name (``pythonpath = ["tests"]``).

Besides ``git mv`` it rewrites what a moved file computed from its own place
(``Path(__file__).parent / "data"`` becomes ``DATA``, ``Path(__file__).resolve().parents[1]``
becomes ``REPO``, both from conftest) and every ``tests/test_X.py`` named in the docs, the
Makefile, scripts and tests.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# the room of each test file: the package (or part of it) the file mainly tests
ROOMS: dict[str, str] = {
    # retriever core: types, errors, protocol, manifest, index, queries, CLIs, rerank, evaluate
    "test_parts.py": "retriever",
    "test_search_cli.py": "retriever",
    "test_ir_evaluate.py": "retriever",
    "test_rerank.py": "retriever",
    "test_layers.py": "retriever",
    "test_import_light.py": "retriever",
    # the passage store
    "test_store_builds.py": "retriever/store",
    "test_store_spans.py": "retriever/store",
    "test_browse.py": "retriever/store",
    # BM25
    "test_bm25.py": "retriever/bm25",
    "test_bm25_compact.py": "retriever/bm25",
    "test_bm25_integrity.py": "retriever/bm25",
    "test_bm25_postings.py": "retriever/bm25",
    "test_bm25_pruning.py": "retriever/bm25",
    "test_analyzer_options.py": "retriever/bm25",
    "test_lucene.py": "retriever/bm25",
    # dense
    "test_dense.py": "retriever/dense",
    "test_dense_devices.py": "retriever/dense",
    "test_encoders.py": "retriever/dense",
    # the server (with /ui, web APIs, workers and Ray Serve)
    "test_batching.py": "retriever/server",
    "test_service.py": "retriever/server",
    "test_server.py": "retriever/server",
    "test_fastpath.py": "retriever/server",
    "test_hardening.py": "retriever/server",
    "test_http_writes.py": "retriever/server",
    "test_load_faults.py": "retriever/server",
    "test_compat.py": "retriever/server",
    "test_conformance.py": "retriever/server",
    "test_web_api.py": "retriever/server",
    "test_workers.py": "retriever/server",
    "test_ray.py": "retriever/server",
    "test_ui.py": "retriever/server",
    "test_ui_browser.py": "retriever/server",
    # the clients
    "test_client.py": "retriever/client",
    "test_failover.py": "retriever/client",
    # the env
    "test_env_api.py": "env",
    "test_env_browser.py": "env",
    "test_env_fuzz.py": "env",
    "test_env_oracle.py": "env",
    "test_env_visit.py": "env",
    "test_parsing.py": "env",
    "test_rewards.py": "env",
    "test_rewards_evidence.py": "env",
    "test_tasks.py": "env",
    "test_context.py": "env",
    "test_noise.py": "env",
    "test_evaluate.py": "env",
    "test_evaluate_llm.py": "env",
    "test_visit.py": "env",
    "test_visit_llm.py": "env",
    "test_mcp_server.py": "env",
    "test_browser_llm.py": "env",
    "test_judge_reward.py": "env",
    "test_answer_cache.py": "env",
    # the trainers' glue
    "test_integrations.py": "env/integrations",
    "test_areal.py": "env/integrations",
    "test_areal_llm.py": "env/integrations",
    # index builds
    "test_corpus.py": "index_build",
    "test_languages.py": "index_build",
    "test_namespace_fallbacks.py": "index_build",
    "test_xml_damage.py": "index_build",
    "test_encode_build.py": "index_build",
    "test_cli_imports.py": "index_build",
    # scripts/ and docs
    "test_bench_smoke.py": "scripts",
    "test_bench_rerank.py": "scripts",
    "test_gpu_check.py": "scripts",
    "test_train.py": "scripts",
    "test_learn_to_search.py": "scripts",
    "test_reproduce.py": "scripts",
    "test_docs.py": "scripts",
}

# what a moved file computed from its own folder, and the conftest constant that replaces it
PATHS = [
    (re.compile(r"Path\(__file__\)(\.resolve\(\))?\.parent / \"data\""), "DATA"),
    (re.compile(r"Path\(__file__\)(\.resolve\(\))?\.(parents\[1\]|parent\.parent)"), "REPO"),
]
# text files whose ``tests/test_X.py`` mentions follow the move
MENTIONS = ("*.md", "Makefile", ".ci/*", "pyproject.toml", "*.py", "*.yaml", "*.yml", "*.toml")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def plan() -> dict[Path, Path]:
    """Where each top-level test file goes; stops on files the map does not know or git lacks."""
    found = sorted(p.name for p in TESTS.glob("test_*.py"))
    unknown = [name for name in found if name not in ROOMS]
    if unknown:
        sys.exit(
            "no room for " + ", ".join(unknown) + ": add each to ROOMS in scripts/move_tests.py"
        )
    tracked = set(git("ls-files", "tests").split())
    untracked = [name for name in found if f"tests/{name}" not in tracked]
    if untracked:
        sys.exit("not tracked by git (commit them first): " + ", ".join(untracked))
    crossing = [
        name
        for name in found
        if re.search(r"^\s*(from|import) test_\w+", (TESTS / name).read_text(), re.M)
    ]
    if crossing:
        sys.exit(
            "these import another test file, which moves out of the import path: "
            + ", ".join(crossing)
            + "; move what they share into a support module (e.g. tests/env_support.py)"
        )
    return {TESTS / name: TESTS / ROOMS[name] / name for name in found}


def rewrite_paths(path: Path) -> None:
    """``Path(__file__)``-relative data and repo paths become conftest's DATA and REPO."""
    text = original = path.read_text()
    used = []
    for pattern, name in PATHS:
        text, n = pattern.subn(name, text)
        if n:
            used.append(name)
    if text == original:
        return
    text = re.sub(r"^(DATA|REPO) = \1\n", "", text, flags=re.M)  # was its own definition
    have = re.search(r"^from conftest import (.+)$", text, re.M)
    if have:
        names = sorted({*(s.strip() for s in have.group(1).split(",")), *used})
        text = text.replace(have.group(0), "from conftest import " + ", ".join(names), 1)
    else:
        first = re.search(r"^(import |from (?!__future__)\S+ import )", text, re.M)
        assert first, path
        line = "from conftest import " + ", ".join(sorted(used)) + "\n"
        text = text[: first.start()] + line + text[first.start() :]
    path.write_text(text)


def rewrite_mentions(moves: dict[Path, Path]) -> list[str]:
    """``tests/test_X.py`` in tracked text files becomes ``tests/ROOM/test_X.py``."""
    names = {f"tests/{old.name}": new.relative_to(REPO).as_posix() for old, new in moves.items()}
    pattern = re.compile(r"tests/(test_\w+\.py)\b")
    changed = []
    for rel in git("ls-files", *MENTIONS).split():
        path = REPO / rel
        if not path.is_file() or rel.startswith("tests/data/"):
            continue
        text = path.read_text()
        new = pattern.sub(lambda m: names.get(m.group(0), m.group(0)), text)
        if new != text:
            path.write_text(new)
            changed.append(rel)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    args = parser.parse_args(argv)
    moves = plan()
    for old, new in moves.items():
        print(f"{old.relative_to(REPO)} -> {new.relative_to(REPO)}")
    if args.dry_run:
        return 0
    for old, new in moves.items():
        new.parent.mkdir(parents=True, exist_ok=True)
        git("mv", str(old.relative_to(REPO)), str(new.relative_to(REPO)))
        rewrite_paths(new)
    changed = rewrite_mentions(moves)
    ruff = REPO / ".venv" / "bin" / "ruff"
    moved = [str(p) for p in moves.values()]
    subprocess.run([str(ruff), "check", "-q", "--fix", "--select", "I,F401", *moved], cwd=REPO)
    print(f"moved {len(moves)} test files; mentions updated in {len(changed)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
