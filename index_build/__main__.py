"""``python -m index_build VERB ...``: one sub-command per build stage.

Each verb lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its verb runs, so ``corpus`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from retriever.errors import RetrieverError

VERBS = {
    "corpus": (
        "index_build.corpus",
        "Corpus files (Wikipedia XML, WikiExtractor, JSONL, ...) to a passage store",
    ),
    "bm25": ("index_build.build_bm25", "Build the BM25 index of a corpus store"),
    "ranges": (
        "index_build.ranges",
        "Add row-range maxima (fast pruned search) to a BM25 part built without them",
    ),
    "encode": ("index_build.encode", "Encode passages with a dense model into embedding shards"),
    "encode-ray": (
        "index_build.encode_ray",
        "The encode stage on a Ray cluster: the same shards, one worker per GPU",
    ),
    "faiss": ("index_build.build_faiss", "Build a FAISS index from embedding shards"),
    "verify": (
        "index_build.verify",
        "Check an index root: counts, checksums, ANN recall against exact",
    ),
    "all": ("index_build.pipeline", "Run corpus, bm25, encode and faiss in one go"),
}


# Verbs that publish parts of a root hold its build lock (``retriever.files.root_lock``) while
# they run: a second one fails at once naming the first. ``corpus`` writes a new root, and
# ``encode`` shards are meant to run side by side, so they take none.
LOCKED = ("bm25", "ranges", "faiss", "all")


def _lock_root(args: argparse.Namespace) -> str | None:
    """The root a run must lock, or None (also for a root that does not exist: the verb says
    so in its own words; ``all`` creates its root)."""
    if args.verb not in LOCKED and not (args.verb == "verify" and getattr(args, "repair", False)):
        return None
    root = Path(getattr(args, "index", None) or args.out)
    if args.verb == "all":
        root.mkdir(parents=True, exist_ok=True)
    return str(root) if root.is_dir() else None


class _Parser(argparse.ArgumentParser):
    """Bad flags end in one line, ``error: ...``, like every other failure of the CLI."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The CLI's parser and the modules of its verbs; ``only``: import that verb's module alone
    (the others are listed without their flags), so ``encode`` runs on a GPU node that lacks
    the corpus verb's packages (mwparserfromhell)."""
    parser = _Parser(prog="python -m index_build", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    modules = {}
    for verb, (module_name, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        if only is not None and verb != only:
            continue
        try:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
        except ModuleNotFoundError:
            if only == verb:
                raise
            continue  # listed; run alone, the verb says which package it lacks
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument(
            "-v", "--verbose", action="count", default=0, help="-v: progress logs, -vv: debug"
        )
        modules[verb] = module
    return parser, modules


def _verb(argv: list[str]) -> str | None:
    """The verb named on the command line, when it is one of ours."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in VERBS else None


def main(argv: list[str] | None = None) -> int:
    from retriever.cli import configure_process, fail, start_logging

    configure_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = _verb(argv)
    try:
        parser, modules = build_parser(only=verb)
    except ModuleNotFoundError as exc:
        return fail(
            f"the {verb} verb needs the package {exc.name!r}, not installed here: "
            "pip install -e . (see the README)"
        )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag (already reported in one line)
        return exc.code if isinstance(exc.code, int) else 2
    start_logging((logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)])
    if not sys.stderr.isatty():
        args.no_progress = True
    try:
        root = _lock_root(args)
        if root is None:
            return modules[args.verb].run(args)
        from retriever.files import recover_publishes, root_lock

        with root_lock(root, args.verb):
            recover_publishes(root)  # publishes a kill cut short (each logs what it did)
            return modules[args.verb].run(args)
    except RetrieverError as exc:
        return fail(str(exc))
    except OSError as exc:  # a full disk, a folder we may not write: say so, no traceback
        return fail(f"{exc}; the stage's finished output is unchanged, rerun it when fixed", 1)
    except Exception as exc:  # unforeseen: still one line; -vv shows the traceback
        if args.verbose >= 2:
            raise
        return fail(f"{type(exc).__name__}: {exc} (rerun with -vv for the traceback)", 1)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to start this stage again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
