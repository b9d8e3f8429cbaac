"""The reward a trainer optimises: one named reward or a weighted sum of them, parsed in one place.

Every integration (the env's ``reward`` setting, TRL reward functions, verl ``compute_score``'s
``reward`` kwarg, SkyRL's ``env_config.reward``) takes the same spec: a name of
``env.rewards.REWARDS``, a string ``"name:weight,name:weight"`` or a dict ``{name: weight}``.

>>> spec = parse_reward_spec("f1:1, evidence_recall:0.5, search_cost:-0.05")
>>> spec.score({"f1": 0.5, "evidence_recall": 1.0, "search_cost": 4})
0.8
>>> parse_reward_spec({"em": 1}) == parse_reward_spec("em")
True
>>> str(parse_reward_spec({"f1": 1, "search_cost": -0.1}))
'f1:1,search_cost:-0.1'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError

EXAMPLE = '"f1" or "f1:1,evidence_recall:0.5,search_cost:-0.05" or {"f1": 1, "search_cost": -0.05}'


@dataclass(frozen=True, slots=True)
class RewardSpec:
    """Weights of named rewards, in the order given; the reward is their weighted sum."""

    weights: tuple[tuple[str, float], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)

    def score(self, scores: Mapping[str, float]) -> float:
        """The weighted sum of ``scores`` (every reward by name, as ``score_all`` gives them)."""
        return round(sum(w * float(scores[name]) for name, w in self.weights), 12)

    def __str__(self) -> str:
        return ",".join(f"{name}:{w:g}" for name, w in self.weights)


def _weight(name: str, value: object, spec: object) -> float:
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        weight = math.nan
    if isinstance(value, bool) or not math.isfinite(weight):
        raise ConfigError(
            f"reward spec {spec!r}: the weight of {name!r} must be a finite number, got "
            f"{value!r}; e.g. {EXAMPLE}"
        )
    return weight


def parse_reward_spec(spec: str | Mapping[str, float] | RewardSpec) -> RewardSpec:
    """A ``RewardSpec`` from a name, a ``"name:weight,..."`` string or a ``{name: weight}`` dict;
    ``ConfigError`` naming the unknown reward or the bad weight."""
    from .rewards import REWARDS

    if isinstance(spec, RewardSpec):
        return spec
    if isinstance(spec, str):
        pairs = []
        for part in spec.split(","):
            name, sep, weight = part.strip().partition(":")
            pairs.append((name.strip(), weight.strip() if sep else 1.0))
    elif isinstance(spec, Mapping):
        pairs = [(str(k).strip(), v) for k, v in spec.items()]
    else:
        raise ConfigError(f"reward spec must be a string or a dict, got {spec!r}; e.g. {EXAMPLE}")
    weights: dict[str, float] = {}
    for name, value in pairs:
        if name not in REWARDS:
            raise ConfigError(
                f"reward {name!r} in the reward spec {spec!r} is unknown; use one of "
                f"{', '.join(REWARDS)} (e.g. {EXAMPLE})"
            )
        if name in weights:
            raise ConfigError(f"reward spec {spec!r} names {name!r} twice; give it one weight")
        weights[name] = _weight(name, value, spec)
    if not weights:
        raise ConfigError(f"reward spec {spec!r} names no reward; e.g. {EXAMPLE}")
    return RewardSpec(tuple(weights.items()))
