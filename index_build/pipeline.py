"""``python -m index_build all``: corpus, BM25 and (with ``--model``) encode + FAISS in one go.

Each stage is the same code as its own verb, so a stage that fails can be rerun alone.
"""

from __future__ import annotations

import argparse
import logging

from .readers import FORMATS

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="PATH")
    p.add_argument("--out", required=True, metavar="ROOT")
    p.add_argument("--format", choices=FORMATS, default="auto")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.add_argument("--bm25-backend", choices=["bm25s", "pyserini"], default="bm25s")
    p.add_argument("--no-bm25", action="store_true", help="skip the BM25 stage")
    p.add_argument(
        "--model", default=None, help="dense encoder name or path (no dense stage without it)"
    )
    p.add_argument("--name", default=None, help="dense part name (ROOT/dense-NAME)")
    p.add_argument("--preset", default=None, help="encoder preset (e5, bge, minilm, contriever)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0,1,...")
    p.add_argument("--factory", default="Flat", help="FAISS factory string")


def run(args: argparse.Namespace) -> int:
    from .__main__ import main

    common = ["--no-progress"] if args.no_progress else []
    stages = [
        [
            "corpus",
            "--input",
            *args.input,
            "--out",
            args.out,
            "--format",
            args.format,
            "--on-error",
            args.on_error,
        ],
    ]
    if not args.no_bm25:
        stages.append(["bm25", "--index", args.out, "--backend", args.bm25_backend])
    if args.model:
        encode = ["encode", "--index", args.out, "--model", args.model]
        if args.name:
            encode += ["--name", args.name]
        if args.preset:
            encode += ["--preset", args.preset]
        if args.device:
            encode += ["--device", args.device]
        stages.append(encode)
        name = args.name or _default_name(args.model)
        stages.append(["faiss", "--index", args.out, "--name", name, "--factory", args.factory])
    for stage in stages:
        log.info("stage: %s", " ".join(stage))
        rc = main(stage + common)
        if rc != 0:
            log.error("stage %s failed (exit %d); fix it and rerun that stage alone", stage[0], rc)
            return rc
    return 0


def _default_name(model: str) -> str:
    from .encode import default_name

    return default_name(model)
