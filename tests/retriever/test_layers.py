"""The import graph keeps its layers (docs/design.md's dependency rule): the contracts of
``[tool.importlinter]`` in pyproject.toml hold, and they do catch an import up the layers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

ROOT = REPO
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


def test_env_contracts_ignore_no_import():
    """EnvConfig no longer reaches up to the reward registry (the spec is checked where the config
    is used: ``env.config.make_config`` and ``Episode``), so no env contract needs an ignore."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for contract in contracts["contracts"]:
        ignored = [i for i in contract.get("ignore_imports", []) if i.startswith("env")]
        assert ignored == [], (contract["id"], ignored)


def test_types_importing_the_reward_spec_breaks_the_contracts(tmp_path):
    copy_tree(tmp_path)
    add_import(tmp_path / "env" / "types.py", "from . import reward_spec")
    out = lint_imports(tmp_path)
    assert (
        out.returncode == 1 and "env.types is not allowed to import env.reward_spec" in out.stdout
    )


def test_reward_spec_checked_where_the_config_is_used():
    import pytest

    from env.config import make_config
    from env.errors import ConfigError
    from env.types import EnvConfig

    assert make_config(reward={"f1": 1, "search_cost": -0.05}).reward == "f1:1,search_cost:-0.05"
    assert make_config(EnvConfig(reward={"em": 2})).reward == "em:2"  # no overrides: checked too
    with pytest.raises(ConfigError, match="reward 'nope' in the reward spec"):
        make_config(EnvConfig(reward="nope"))
