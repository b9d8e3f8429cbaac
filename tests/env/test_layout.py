"""tests/env/ is named after the package it tests but never shadows it: ``import env`` here is
the real package (importlib mode, no ``__init__.py`` under tests/). tests/retriever/ holds a
file of this same basename, which collects beside this one."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO


def test_env_is_the_real_package_not_this_folder():
    import env
    import env.search_env

    assert Path(env.__file__).resolve() == REPO / "env" / "__init__.py"
    assert hasattr(env.search_env, "SearchEnv")


def test_this_module_is_not_its_basename_alone():
    assert Path(__file__).resolve().parent == REPO / "tests" / "env"
    assert not list((REPO / "tests").rglob("__init__.py"))  # what would make a folder shadow
