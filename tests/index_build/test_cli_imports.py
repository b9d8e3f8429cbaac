"""``python -m index_build VERB`` imports only that verb's module: ``encode`` runs on a GPU node
without the corpus verb's packages, and a verb whose package is missing says so in one line."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

ROOT = REPO

# hide mwparserfromhell (the corpus verb's wikitext parser) as a bare GPU image would
BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mwparserfromhell":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from index_build.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_encode_needs_no_corpus_packages():
    out = run("encode", "--help")
    assert out.returncode == 0, out.stderr
    assert "--model" in out.stdout


def test_a_verb_whose_package_is_missing_says_so_in_one_line():
    out = run("corpus", "--input", "x", "--out", "y")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: the corpus verb needs the package 'mwparserfromhell', not installed here: "
        "pip install -e . (see the README)"
    ]


def test_the_verb_list_survives_a_missing_package():
    out = run("--help")
    assert out.returncode == 0 and all(v in out.stdout for v in ("corpus", "encode", "verify"))
