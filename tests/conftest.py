"""Shared fixtures: small real stores built once per session from the committed sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from llm_support import llm_url, model_dir, smollm2  # noqa: F401  (the model tests' session fixtures)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OPENAI_API_KEY", "unused")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # as the entry points set it

REPO = Path(__file__).resolve().parent.parent  # the checkout, whatever folder a test is in
DATA = REPO / "tests" / "data"
XML_SAMPLE = DATA / "enwiki-sample-pages-articles.xml.bz2"
HOTPOT = DATA / "hotpotqa-distractor-500.jsonl"


@pytest.fixture(scope="session")
def hotpot_root(tmp_path_factory) -> Path:
    """An index root whose corpus is the 4,920 HotpotQA paragraphs (one passage each)."""
    from retriever_fakes import build_root

    return build_root(tmp_path_factory.mktemp("hotpot"), bm25=False)


@pytest.fixture(scope="session")
def xml_root(tmp_path_factory) -> Path:
    """An index root built from the real Wikipedia XML sample."""
    from index_build.__main__ import main

    root = tmp_path_factory.mktemp("xml") / "index"
    assert main(["corpus", "--input", str(XML_SAMPLE), "--out", str(root), "--no-progress"]) == 0
    return root


@pytest.fixture(autouse=True)
def _logging_manager_restored():
    """Put back the logging tree a third-party library replaced in-process: AReaL's
    ``areal.utils.logging.getLogger`` makes a new ``Logger.root`` and ``Logger.manager`` on every
    call, after which ``logging.getLogger("env.visit")`` (what caplog sets) is no longer the
    logger ``env.visit`` writes to, and a later test's log assertion saw nothing in the full run."""
    import logging

    root, manager = logging.Logger.root, logging.Logger.manager
    yield
    logging.Logger.root, logging.Logger.manager = root, manager
