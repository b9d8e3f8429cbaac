"""tests/retriever/ is named after the package it tests but never shadows it: ``import
retriever`` here is the real package (importlib mode, no ``__init__.py`` under tests/).
tests/env/ holds a file of this same basename, which collects beside this one."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO


def test_retriever_and_index_build_are_the_real_packages():
    import index_build
    import retriever
    import retriever.store.docstore

    assert Path(retriever.__file__).resolve() == REPO / "retriever" / "__init__.py"
    assert Path(index_build.__file__).resolve() == REPO / "index_build" / "__init__.py"
    assert hasattr(retriever.store.docstore, "DocStore")


def test_a_shared_basename_collects_as_two_modules():
    import sys

    mine = [m for m in sys.modules.values() if getattr(m, "__file__", None) == __file__]
    assert len(mine) == 1 and mine[0].__name__ != "test_layout"  # named by its path
