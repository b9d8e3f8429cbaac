"""Shared CLI plumbing: flags generated from config dataclasses, and the one-line error exit.

Defaults live in one place, the dataclass: ``add_config_arguments(parser, Config)`` adds a
``--kebab-case`` flag per field (help from ``field(metadata={"help": ...})``), and
``config_from_args(Config, args)`` builds the frozen config back from the parsed flags. Every
number given by flag must be finite and within the field's ``metadata`` ``min`` (default 0: counts,
sizes, seconds; ``None`` for no bound) and ``max``, else a ``BadRequestError`` naming the flag,
one line for ``fail`` (``nan`` passes every ``<`` check a dataclass makes, ``inf`` most).

>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Demo:
...     max_batch: int = field(default=64, metadata={"help": "queries per batch"})
...     warmup: bool = True
...     retrievers: tuple[str, ...] | None = None
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_config_arguments(p, Demo)
>>> config_from_args(Demo, p.parse_args(["--max-batch", "8", "--no-warmup", "--retrievers", "bm25,dense-e5"]))
Demo(max_batch=8, warmup=False, retrievers=('bm25', 'dense-e5'))
>>> config_from_args(Demo, p.parse_args([]))
Demo(max_batch=64, warmup=True, retrievers=None)
>>> config_from_args(Demo, p.parse_args(["--max-batch", "-1"]))
Traceback (most recent call last):
retriever.errors.BadRequestError: --max-batch -1 is out of range: give a number >= 0
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from .cores import follow_env
from .errors import BadRequestError

_SCALARS = {int: int, float: float, str: str}


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _comma_list(item: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(value: str) -> tuple:
        return tuple(item(v.strip()) for v in value.split(",") if v.strip())

    parse.__name__ = "comma-separated list"
    return parse


def _converter(hint: Any) -> Callable[[str], Any] | None:
    hint, _ = _unwrap(hint)
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return _comma_list(_SCALARS.get(args[0], str) if args else str)
    if typing.get_origin(hint) is typing.Literal:
        return str
    return str  # paths and anything else: the string, the dataclass converts


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: type,
    *,
    skip: Iterable[str] = (),
    required: Iterable[str] = (),
) -> None:
    """A ``--kebab-case`` flag for every field of the dataclass ``config`` (except ``skip``).

    Booleans that default to True get ``--no-NAME``, others ``--NAME``, ``bool | None = None``
    both (``--NAME/--no-NAME``, unset when neither is given); ``X | None`` fields
    default to None; tuples take comma-separated values; ``metadata={"help": ..., "choices":
    [...], "flag": "--other-name"}`` on a field sets the help, the choices and the flag's name
    (when it differs from the field's). Defaults are left to the dataclass
    (``argparse.SUPPRESS``), so a flag not given does not override them."""
    hints = typing.get_type_hints(config)
    skip, required = set(skip), set(required)
    for f in dataclasses.fields(config):
        if f.name in skip or not f.init:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        hint, nullable = _unwrap(hints[f.name])
        if hint is bool:
            if nullable and default is None:  # None: "not said", e.g. left to a preset
                parser.add_argument(
                    flag,
                    dest=f.name,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=help_text,
                )
            elif default is True:
                parser.add_argument(
                    f.metadata.get("flag") or "--no-" + f.name.replace("_", "-"),
                    dest=f.name,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=help_text or f"turn {f.name} off",
                )
            else:
                parser.add_argument(
                    flag,
                    dest=f.name,
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help=help_text,
                )
            continue
        if default is not None and default != "" and help_text:
            help_text = f"{help_text} (default {default})"
        elif default is not None and default != "":
            help_text = f"default {default}"
        parser.add_argument(
            flag,
            dest=f.name,
            type=_converter(hints[f.name]),
            choices=f.metadata.get("choices"),
            required=f.name in required,
            default=argparse.SUPPRESS,
            help=help_text,
        )


def check_number(flag: str, value: float, low: float | None = 0, high: float | None = None) -> None:
    """A ``BadRequestError`` naming ``flag`` unless ``value`` is finite and in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    span = " and ".join(
        f"{op} {bound:g}" for op, bound in ((">=", low), ("<=", high)) if bound is not None
    )
    want = f"give a finite number {span}" if span else "give a finite number"
    if not math.isfinite(value):
        raise BadRequestError(f"{flag} {value} is not a finite number: {want}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequestError(f"{flag} {value} is out of range: {want.replace(' finite', '')}")


def _check_numbers(config: type, given: dict) -> None:
    """Every numeric flag of ``config`` that was given: finite and within its field's bounds."""
    for f in dataclasses.fields(config):
        if f.name not in given:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        value = given[f.name]
        for item in value if isinstance(value, tuple | list) else (value,):
            check_number(flag, item, f.metadata.get("min", 0), f.metadata.get("max"))


def config_from_args(config: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``config`` from the flags that were given (the rest keep the dataclass defaults),
    then ``overrides``; a number out of its field's bounds is a ``BadRequestError``."""
    names = {f.name for f in dataclasses.fields(config) if f.init}
    given = {k: v for k, v in vars(args).items() if k in names}
    _check_numbers(config, given)
    given.update(overrides)
    return config(**given)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def start_logging(level: int | str) -> None:
    """Records at ``level`` (a number or a name such as ``"info"``) and above to stderr, in the
    one format of every CLI."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=LOG_FORMAT)


def configure_process() -> None:
    """Process-wide settings that entry points (never library imports) make:

    - numba's non-spinning ``workqueue`` threading layer unless the user chose one: the default
      OpenMP layer keeps its threads spinning after a parallel BM25 kernel and they fight torch's
      own OpenMP threads (MiniLM encoding beside a BM25 search fell from 52 to 3.3 passages/s
      here, 47.5 with workqueue);
    - OpenMP threads (torch's, faiss's) that sleep at a barrier instead of spinning, unless the
      user chose: with torch's default two threads on a busy 2-core machine, the thread that
      reaches a barrier first spins while its partner waits for a core, once per layer; a
      one-query MiniLM encoding cost 200-300 ms CPU here instead of 16-23 ms (peers.py, issue
      26), and Search-R1's server pays the same (rLLM's asks for 4 threads on 2 cores, which
      makes libgomp throttle its spinning). Must be set before torch or faiss is imported;
    - faiss's loader logs at INFO each optimised build it could not load: not news to users;
    - httpx logs every request at INFO: a server start-up poll is not news either;
    - transformers draws a progress bar for every weight load (off: they take under a second);
    - a ``RETRIEVER_THREADS`` the user set also bounds torch's and faiss's OpenMP threads
      (``cores.follow_env``).
    """
    follow_env()  # a RETRIEVER_THREADS the user set bounds the OpenMP runtimes too
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # weights load from a local path in well under a second: a progress bar per load is noise
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("faiss.loader", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> int:
    """Print ``error: message`` on stderr (one line, no traceback) and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code
