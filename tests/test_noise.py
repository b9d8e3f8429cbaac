"""Noise and curricula in what the policy sees (env.noise): the replacement draw, its schedule,
determinism per seed, and real episodes over the HotpotQA mini index with noise on."""

from __future__ import annotations

import json
import math

import pytest

from env.errors import ConfigError
from env.noise import NoiseConfig, add_noise, noise_config, read_pool


def hits(n: int, prefix: str = "h") -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "title": f"T{prefix}{i}", "text": f"text {i}", "score": -i}
        for i in range(n)
    ]


POOL = hits(500, "pool")


def replaced_fraction(config: NoiseConfig, step: int, seeds: int, k: int = 5) -> float:
    n = 0
    for seed in range(seeds):
        shown, record = add_noise(
            hits(k + config.depth), k, config, seed=seed, step=step, pool=POOL
        )
        assert len(shown) == k
        n += len(record.replaced)
    return n / (seeds * k)


@pytest.mark.parametrize("mode", ["random", "hard-negative"])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fraction_replaced_matches_p(mode, p):
    config = NoiseConfig(mode, p_start=p, p_end=p, steps=0)
    seeds, k = 400, 5
    frac = replaced_fraction(config, 0, seeds, k)
    bound = 4 * math.sqrt(p * (1 - p) / (seeds * k))  # 4 sigma of the binomial proportion
    assert abs(frac - p) < bound, (frac, p, bound)


def test_schedule_start_mid_end():
    lin = NoiseConfig(p_start=0.1, p_end=0.7, steps=200, shape="linear")
    assert [lin.p(s) for s in (0, 100, 200, 10_000)] == pytest.approx([0.1, 0.4, 0.7, 0.7])
    exp = NoiseConfig(p_start=0.0, p_end=1.0, steps=200, shape="exponential", base=10)
    mid = (10**0.5 - 1) / 9
    assert [exp.p(s) for s in (0, 100, 200)] == pytest.approx([0.0, mid, 1.0])
    assert NoiseConfig(p_start=0.1, p_end=0.6, steps=50, shape="constant").p(0) == 0.6
    # the schedule is what the draw uses: nothing replaced at step 0, about p_end at the end
    cfg = NoiseConfig("hard-negative", p_start=0.0, p_end=0.8, steps=100)
    assert replaced_fraction(cfg, 0, 50) == 0.0
    assert abs(replaced_fraction(cfg, 50, 200) - 0.4) < 0.1
    assert abs(replaced_fraction(cfg, 100, 200) - 0.8) < 0.1


def test_hard_negatives_come_from_deeper_ranks_of_the_same_query():
    k = 3
    config = NoiseConfig("hard-negative", p_start=1.0, p_end=1.0, depth=4)
    deep = hits(k + 4)
    shown, record = add_noise(deep, k, config, seed=7)
    assert [d["id"] for d in shown] == ["h3", "h4", "h5"]  # hardest first
    for r in record.replaced:
        assert r.by_rank > k and deep[r.by_rank - 1]["id"] == r.by_id
        assert shown[r.slot]["id"] == r.by_id and r.id == deep[r.slot]["id"]


def test_drop_gold_removes_every_gold_hit_and_backfills():
    k = 4
    deep = hits(k + 6)
    deep[1]["title"], deep[3]["id"], deep[5]["title"] = "Gold_Page", "g9", "gold page"
    config = NoiseConfig("drop-gold", p_start=1.0, p_end=1.0, depth=6)
    for seed in range(20):
        shown, record = add_noise(
            deep, k, config, seed=seed, gold_titles=["Gold Page"], gold_ids=["g9"]
        )
        assert "Gold_Page" not in [d["title"] for d in shown]
        assert "g9" not in [d["id"] for d in shown]
        assert "gold page" not in [d["title"] for d in shown]  # no gold backfill either
        assert [d["id"] for d in shown] == ["h0", "h4", "h2", "h6"]
        assert sorted(r.slot for r in record.replaced) == [1, 3]
    # without gold in the results nothing changes
    shown, record = add_noise(hits(k + 6), k, config, seed=0, gold_titles=["Elsewhere"])
    assert [d["id"] for d in shown] == ["h0", "h1", "h2", "h3"] and record.replaced == ()


def test_random_negatives_come_from_the_pool():
    config = NoiseConfig("random", p_start=1.0, p_end=1.0)
    shown, record = add_noise(hits(5), 5, config, seed=3, pool=POOL)
    pool_ids = {d["id"] for d in POOL}
    assert all(d["id"] in pool_ids for d in shown) and len({d["id"] for d in shown}) == 5
    assert [r.by_id for r in record.replaced] == [d["id"] for d in shown]
    assert all(r.by_rank is None for r in record.replaced)


@pytest.mark.parametrize("mode", ["random", "hard-negative", "drop-gold"])
def test_same_seed_same_draw(mode):
    config = NoiseConfig(mode, p_start=0.5, p_end=0.5, seed=11)
    deep = hits(15)
    gold = {"gold_titles": ["Th1", "Th4"]}
    runs = [
        add_noise(deep, 5, config, seed=s, turn=t, pool=POOL, **gold)
        for s, t in [(1, 1), (1, 1), (1, 2), (2, 1)]
    ]
    assert runs[0] == runs[1]
    others = [r[1].replaced for r in runs[2:]]
    assert any(o != runs[0][1].replaced for o in others)  # turn and seed change the draw
    other_config = NoiseConfig(mode, p_start=0.5, p_end=0.5, seed=12)
    draws = [add_noise(deep, 5, other_config, seed=s, pool=POOL, **gold)[1] for s in range(8)]
    mine = [add_noise(deep, 5, config, seed=s, pool=POOL, **gold)[1] for s in range(8)]
    assert draws != mine  # the config seed is part of the draw


def test_noise_config_parsing_and_errors(tmp_path):
    assert noise_config(None) is None and noise_config("off") is None
    cfg = noise_config('{"mode": "drop-gold", "p-end": 1, "steps": 10}')
    assert cfg == NoiseConfig("drop-gold", p_end=1, steps=10)
    assert noise_config({"mode": "hard-negative", "depth": 3}).search_k(5) == 8
    assert noise_config("random,p_end=0.25,seed=4") == NoiseConfig("random", p_end=0.25, seed=4)
    with pytest.raises(ConfigError, match="'sometimes'.*random, hard-negative, drop-gold"):
        NoiseConfig("sometimes")
    with pytest.raises(ConfigError, match="p_end must be a probability.*1.5"):
        noise_config("random,p_end=1.5")
    with pytest.raises(ConfigError, match="unknown noise setting 'prob'"):
        noise_config({"prob": 0.3})
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        json.dumps({"sample": {"row": 1, "id": "7", "title": "A", "text": "x", "url": "u"}}) + "\n"
    )
    assert read_pool(pool) == [
        {"id": "7", "title": "A", "text": "x", "url": "u", "contents": '"A"\nx'}
    ]
    pool.write_text("[1]\n")
    with pytest.raises(ConfigError, match="line 1: expected a passage"):
        read_pool(pool)
