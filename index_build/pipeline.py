"""``python -m index_build all``: corpus, BM25 and (with ``--model``) encode + FAISS in one go.

Each stage is called as the library function its own verb calls, so a stage that fails can be
rerun alone with that verb and gives the same result.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time

from retriever.cli import add_config_arguments, config_from_args
from retriever.errors import BuildError, RetrieverError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .corpus import CorpusConfig

    p.add_argument("--input", nargs="+", required=True, metavar="PATH")
    p.add_argument("--out", required=True, metavar="ROOT")
    add_config_arguments(p, CorpusConfig)  # the same flags as `corpus`
    p.add_argument("--bm25-backend", choices=["bm25s", "pyserini"], default="bm25s")
    p.add_argument("--no-bm25", action="store_true", help="skip the BM25 stage")
    p.add_argument(
        "--model", default=None, help="dense encoder name or path (no dense stage without it)"
    )
    p.add_argument("--name", default=None, help="dense part name (ROOT/dense-NAME)")
    p.add_argument("--preset", default=None, help="encoder preset (e5, bge, minilm, contriever)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0,1,...")
    p.add_argument("--factory", default="Flat", help="FAISS factory string")


@contextlib.contextmanager
def _stage(name: str):
    """Name the stage in its error, and say that it can be rerun alone."""
    log.info("stage: %s", name)
    try:
        yield
    except RetrieverError as exc:
        raise BuildError(
            f"stage {name}: {exc} (fix it, then rerun `python -m index_build {name}` alone)"
        ) from exc


def run(args: argparse.Namespace) -> int:
    from . import corpus

    show = not args.no_progress
    config = config_from_args(corpus.CorpusConfig, args)
    with _stage("corpus"):
        print(corpus.summary_line(corpus.build_corpus(args.input, args.out, config, show)))
    if not args.no_bm25:
        from .build_bm25 import BM25Config, build_bm25

        with _stage("bm25"):
            m = build_bm25(args.out, BM25Config(backend=args.bm25_backend), show_progress=show)
        print(
            f"bm25 ({m['backend']}): {m['num_docs']} passages in {m['summary']['seconds']:.1f} s "
            f"-> {m['summary']['folder']}"
        )
    if args.model:
        from retriever.dense.encoders import parse_devices

        from . import encode
        from .build_faiss import build_index

        name = args.name or encode.default_name(args.model)
        with _stage("encode"):
            config = encode.EncoderChoice(model=args.model, preset=args.preset).resolve()
            options = encode.EncodeOptions(
                devices=tuple(parse_devices(args.device or "cpu")), show_progress=show
            )
            start = time.perf_counter()
            result = encode.encode_corpus(args.out, name, config, options=options)
        print(encode.summary_line(result, time.perf_counter() - start))
        with _stage("faiss"):
            entry = build_index(args.out, name, args.factory)
        print(f"faiss: {entry['factory']} over {entry['ntotal']} vectors -> {entry['file']}")
    return 0
