"""Noise and curricula in what the policy sees (ZeroSearch-style robustness training).

A ``NoiseConfig`` replaces a scheduled fraction of the passages a search returns:

- ``random``: by passages drawn uniformly from the corpus (a pool sampled once, see below);
- ``hard-negative``: by lower-ranked hits of the same query (the env searches ``topk + depth``
  deep and shows ranks beyond ``topk`` in place of top ones, hardest first);
- ``drop-gold``: gold hits (the task's ``supporting_titles`` / ``supporting_ids``) are dropped
  and their slots backfilled from deeper non-gold hits of the same query.

Each of the top ``topk`` slots is replaced with probability ``p(step)``, a curriculum over the
trainer's global step: ``p_start + f(min(step, steps) / steps) * (p_end - p_start)`` with ``f``
``constant`` (1), ``linear`` (t) or ``exponential`` (ZeroSearch's ``(base**t - 1) / (base - 1)``).
Draws are seeded by (config seed, episode seed, turn): the same seed shows the same passages.

Random passages come from a pool, not from a per-call backend request: ``pool`` names a JSONL
file of passages (``python -m retriever.inspect ROOT --sample 5000 --seed 0 > pool.jsonl``),
else an in-process client's store is sampled once (``DocStore.sample``). Why a pool: the search
protocol has no "random passage" call, ids are not rows in every corpus, and the other queries of
a batch step are neither uniform nor the same from one batch to the next (so observations would
depend on the batch, not on the seed). The pool is read once; draws from it cost nothing.

>>> NoiseConfig("hard-negative", p_start=0.0, p_end=0.8, steps=100).p(50)
0.4
>>> [round(NoiseConfig(p_start=0.0, p_end=1.0, steps=10, shape="exponential").p(s), 3) for s in (0, 5, 10)]
[0.0, 0.24, 1.0]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retriever.queries import title_key

from .errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("random", "hard-negative", "drop-gold")
SHAPES = ("constant", "linear", "exponential")


@dataclass(frozen=True)
class NoiseConfig:
    """What to replace in search results, how often at each training step, and the seed."""

    mode: str = "random"
    p_start: float = 0.0
    p_end: float = 0.5
    steps: int = 0
    shape: str = "linear"
    base: float = 10.0
    seed: int = 0
    depth: int = 10
    pool: str | None = None
    pool_size: int = 4096

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"noise mode {self.mode!r} is unknown; use one of {', '.join(MODES)}")
        if self.shape not in SHAPES:
            raise ConfigError(
                f"noise shape {self.shape!r} is unknown; use one of {', '.join(SHAPES)}"
            )
        for name in ("p_start", "p_end"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"noise {name} must be a probability in [0, 1], got {value!r}")
        if self.steps < 0:
            raise ConfigError(
                f"noise steps must be >= 0 (0: p_end from the start), got {self.steps}"
            )
        if self.shape == "exponential" and (self.base <= 0 or self.base == 1):
            raise ConfigError(
                f"noise base must be > 0 and != 1 for shape exponential, got {self.base}"
            )
        if self.depth < 1:
            raise ConfigError(f"noise depth (extra ranks searched) must be >= 1, got {self.depth}")
        if self.pool_size < 1:
            raise ConfigError(f"noise pool_size must be >= 1, got {self.pool_size}")

    def p(self, step: int | None) -> float:
        """The replacement probability at training step ``step`` (None: step 0)."""
        if self.shape == "constant" or self.steps == 0:
            t = 1.0
        else:
            t = min(max(int(step or 0), 0), self.steps) / self.steps
        if self.shape == "exponential":
            t = (self.base**t - 1.0) / (self.base - 1.0)
        return self.p_start + t * (self.p_end - self.p_start)

    @property
    def deep(self) -> bool:
        """Whether searches must go ``depth`` ranks deeper than ``topk`` (to backfill)."""
        return self.mode in ("hard-negative", "drop-gold")

    def search_k(self, topk: int) -> int:
        """How many hits to ask the backend for when ``topk`` are shown."""
        return topk + self.depth if self.deep else topk


def noise_config(value: Any) -> NoiseConfig | None:
    """One parser for every place noise is configured (``EnvConfig.noise``, the ``--noise`` flag,
    verl's tool config, SkyRL's env_config): a ``NoiseConfig``, a dict (snake or kebab keys),
    JSON text, or ``"MODE,key=value,..."``; None, ``""`` or ``"off"``: no noise.

    >>> noise_config("hard-negative,p-end=0.3,steps=200").p(100)
    0.15
    """
    if value is None or isinstance(value, NoiseConfig):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "off", "none"):
            return None
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"noise {text[:80]!r} is not valid JSON ({exc})") from None
        else:
            mode, *pairs = [p.strip() for p in text.split(",")]
            value = {"mode": mode}
            for pair in pairs:
                key, sep, item = pair.partition("=")
                if not sep:
                    raise ConfigError(
                        f"noise setting {pair!r} is not key=value; write e.g. "
                        "'hard-negative,p_end=0.5,steps=1000'"
                    )
                value[key.strip()] = item.strip()
    if not isinstance(value, dict):
        try:  # omegaconf DictConfig and other mappings
            value = dict(value)
        except Exception:
            raise ConfigError(
                f"noise must be a NoiseConfig, a dict or 'MODE,key=value,...', got {value!r:.80}"
            ) from None
    fields = {f.name: f for f in dataclasses.fields(NoiseConfig)}
    kwargs = {}
    for key, item in value.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigError(f"unknown noise setting {key!r}; known: {', '.join(fields)}")
        kwargs[name] = _typed(name, fields[name].default, item)
    return NoiseConfig(**kwargs)


def _typed(name: str, default: Any, item: Any) -> Any:
    if not isinstance(item, str) or isinstance(default, str) or default is None:
        return item
    try:
        return float(item) if isinstance(default, float) else int(item)
    except ValueError:
        raise ConfigError(f"noise {name} must be a number, got {item!r}") from None


@dataclass(frozen=True, slots=True)
class Replacement:
    """One slot of a search result that noise changed: what was there, what is shown instead
    (``by_*`` empty when a dropped gold hit had nothing to backfill it); ranks are 1-based ranks
    of the query's hits (None for a random passage)."""

    slot: int
    id: str
    title: str
    rank: int
    source: str
    by_id: str = ""
    by_title: str = ""
    by_rank: int | None = None


@dataclass(frozen=True, slots=True)
class NoiseRecord:
    """What noise did to one search: the probability used and the replaced slots."""

    step: int
    p: float
    replaced: tuple[Replacement, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "p": self.p,
            "replaced": [dataclasses.asdict(r) for r in self.replaced],
        }


def _is_gold(doc: dict, gold_titles: set[str], gold_ids: set[str]) -> bool:
    return str(doc.get("id", "")) in gold_ids or title_key(doc.get("title")) in gold_titles


def _rng(*parts: int):
    import numpy as np

    return np.random.default_rng([int(p) % (1 << 64) for p in parts])


def add_noise(
    hits: Sequence[dict],
    k: int,
    config: NoiseConfig,
    *,
    seed: int,
    step: int = 0,
    turn: int = 0,
    gold_titles: Sequence[str] = (),
    gold_ids: Sequence[str] = (),
    pool: Sequence[dict] = (),
) -> tuple[list[dict], NoiseRecord]:
    """The ``k`` passages shown for one search and the record of what was replaced.

    ``hits``: the query's hits, best first (``config.search_k(k)`` of them for the deep modes);
    ``seed``/``turn``: the episode's seed and turn, which with ``config.seed`` fix every draw.
    """
    p = config.p(step)
    rng = _rng(config.seed, seed, turn)
    top = [dict(h) for h in hits[:k]]
    draws = rng.random(len(top)) < p
    golds = {title_key(t) for t in gold_titles}, {str(i) for i in gold_ids}
    if config.mode == "drop-gold":
        draws &= [_is_gold(h, *golds) for h in top]
    shown_ids = {str(h.get("id", "")) for h in top}
    deeper = [
        (rank, h)
        for rank, h in enumerate(hits[k:], start=k + 1)
        if str(h.get("id", "")) not in shown_ids
        and not (config.mode == "drop-gold" and _is_gold(h, *golds))
    ]
    replaced: list[Replacement] = []
    out: list[dict | None] = list(top)
    for slot in [i for i, d in enumerate(draws) if d]:
        old = top[slot]
        by, by_rank = None, None
        if config.mode == "random":
            by = _draw(rng, pool, shown_ids, golds)
        elif deeper:
            by_rank, by = deeper.pop(0)
        if by is None and config.mode != "drop-gold":
            continue  # nothing to replace it with: the hit stays
        out[slot] = None if by is None else dict(by)
        if by is not None:
            shown_ids.add(str(by.get("id", "")))
        replaced.append(
            Replacement(
                slot=slot,
                id=str(old.get("id", "")),
                title=str(old.get("title", "")),
                rank=slot + 1,
                source=config.mode,
                by_id="" if by is None else str(by.get("id", "")),
                by_title="" if by is None else str(by.get("title", "")),
                by_rank=by_rank,
            )
        )
    shown = [d for d in out if d is not None]
    return shown, NoiseRecord(step=int(step or 0), p=p, replaced=tuple(replaced))


def _draw(rng, pool: Sequence[dict], shown_ids: set[str], golds) -> dict | None:
    """A pool passage that is neither shown already nor gold (a few tries)."""
    for _ in range(8 if pool else 0):
        doc = pool[int(rng.integers(len(pool)))]
        if str(doc.get("id", "")) not in shown_ids and not _is_gold(doc, *golds):
            return doc
    return None


# ---- the random-passage pool -----------------------------------------------------------------


def _store_of(client: Any):
    """The passage store of an in-process client (``InProcessClient``), or None."""
    index = getattr(getattr(client, "service", None), "index", None)
    return getattr(index, "store", None)


def check_pool_source(config: NoiseConfig | None, client: Any) -> None:
    """At env construction: random noise needs a pool file or an in-process client."""
    if config is None or config.mode != "random" or config.pool is not None or client is None:
        return
    if getattr(client, "service", None) is None:
        raise ConfigError(
            "random noise over a search server needs a pool of corpus passages: make one with "
            "'python -m retriever.inspect ROOT --sample 5000 > pool.jsonl' and set noise pool="
            "pool.jsonl (or use an in-process client, whose store is sampled)"
        )


class NegativePool:
    """Random corpus passages for ``random`` noise, loaded once on first use (thread-safe)."""

    def __init__(self, config: NoiseConfig, client: Any = None):
        self.config, self.client = config, client
        self._docs: list[dict] | None = None
        self._lock = threading.Lock()

    def get(self) -> list[dict]:
        with self._lock:
            if self._docs is None:
                self._docs = self._load()
                log.info("noise pool: %d random passages", len(self._docs))
            return self._docs

    def _load(self) -> list[dict]:
        if self.config.pool is not None:
            return read_pool(self.config.pool)[: self.config.pool_size]
        store = _store_of(self.client)
        if store is None:
            check_pool_source(self.config, self.client or object())
            return []
        return [p.to_dict() for p in store.sample(self.config.pool_size, seed=self.config.seed)]


def read_pool(path: str | Path) -> list[dict]:
    """Passages of a JSONL pool file: passage dicts, or ``{"sample": passage}`` rows as
    ``python -m retriever.inspect ROOT --sample N`` prints them."""
    docs = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"noise pool {path}: cannot read it ({exc.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"noise pool {path}, line {n}: not a JSON object") from None
        doc = row.get("sample", row) if isinstance(row, dict) else None
        if not isinstance(doc, dict) or not (doc.get("contents") or doc.get("text")):
            raise ConfigError(
                f"noise pool {path}, line {n}: expected a passage with text or contents"
            )
        doc = {k: doc[k] for k in ("id", "contents", "title", "text", "url") if k in doc}
        doc.setdefault("contents", f'"{doc.get("title", "")}"\n{doc.get("text", "")}')
        docs.append(doc)
    if not docs:
        raise ConfigError(f"noise pool {path} has no passages")
    return docs


# ---- one episode's noise ---------------------------------------------------------------------


class EpisodeNoise:
    """The noise of one episode: its seed, training step and gold evidence, and the log."""

    def __init__(
        self,
        config: NoiseConfig,
        topk: int,
        options: dict,
        seed: int | None,
        pool: NegativePool | None = None,
    ):
        if config.mode == "random" and pool is None:
            raise ConfigError(
                "random noise needs a NegativePool (env.noise.negative_pool(config, client)); "
                "SearchEnv and BatchedSearchEnv build one from their client"
            )
        self.config, self.topk, self.pool = config, topk, pool
        self.seed = int(seed) if seed is not None else secrets.randbits(63)
        step = options.get("train_step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ConfigError(f"options['train_step'] must be an integer >= 0, got {step!r}")
        self.step = step
        self.gold_titles, self.gold_ids = gold_of(options)
        self.records: list[dict] = []

    def apply(self, hits: Sequence[dict], turn: int) -> tuple[list[dict], dict]:
        """The passages shown for this turn's search, and its record (also kept in the log)."""
        docs, record = add_noise(
            hits,
            self.topk,
            self.config,
            seed=self.seed,
            step=self.step,
            turn=turn,
            gold_titles=self.gold_titles,
            gold_ids=self.gold_ids,
            pool=self.pool.get() if self.pool is not None and self.config.mode == "random" else (),
        )
        entry = {"turn": turn, **record.to_dict()}
        self.records.append(entry)
        return docs, entry

    def summary(self) -> dict:
        """The episode's noise settings and every search's record (for the trajectory)."""
        return {
            "mode": self.config.mode,
            "seed": self.seed,
            "config_seed": self.config.seed,
            "step": self.step,
            "p": self.config.p(self.step),
            "searches": list(self.records),
        }


def gold_of(options: Mapping) -> tuple[list[str], list[str]]:
    """The task's gold titles and passage ids from reset options (``supporting_titles`` /
    ``supporting_ids``: a string or a list of them; anything else counts as none).

    >>> gold_of({"supporting_titles": "Kansas Song", "supporting_ids": [3, "7"]})
    (['Kansas Song'], ['3', '7'])
    """
    return _strings(options.get("supporting_titles")), _strings(options.get("supporting_ids"))


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def negative_pool(config: NoiseConfig | None, client: Any) -> NegativePool | None:
    """The random-passage pool an env's episodes share (None unless the mode is ``random``);
    a ``ConfigError`` at construction when there is no way to get one."""
    if config is None or config.mode != "random":
        return None
    check_pool_source(config, client)
    return NegativePool(config, client)
