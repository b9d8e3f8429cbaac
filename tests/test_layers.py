"""The import graph keeps its layers (DESIGN.md's dependency rule): the contracts of
``[tool.importlinter]`` in pyproject.toml hold, and they do catch an import up the layers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("retriever", "env", "index_build")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the packages under ``root`` (it puts its working directory first on
    ``sys.path``, so a copy there shadows the installed packages)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold():
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout


def copy_tree(dst: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, dst / package, ignore=shutil.ignore_patterns("__pycache__", "data")
        )
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def add_import(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")


def test_an_upward_import_breaks_the_contracts(tmp_path):
    copy_tree(tmp_path)
    assert lint_imports(tmp_path).returncode == 0  # the copy is the real tree
    # parsing (below the styles) calling back into them: the cycle this layering removed
    add_import(tmp_path / "env" / "parsing.py", "from . import styles")
    # the passage store reaching up to the index that loads it
    add_import(tmp_path / "retriever" / "store" / "rows.py", "from .. import index")
    # the HTTP client pulling in the server
    add_import(tmp_path / "retriever" / "client" / "http.py", "from ..server import app")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    report = out.stdout
    assert "env.parsing is not allowed to import env.styles" in report
    assert "retriever.store is not allowed to import retriever.index" in report
    assert "retriever.client.http -> retriever.server.app" in report
    assert "No cycles are allowed in env" in report
