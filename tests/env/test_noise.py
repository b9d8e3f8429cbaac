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


# ---- real episodes over the HotpotQA mini index ----------------------------------------------


@pytest.fixture(scope="module")
def client(hotpot_root):
    from env_support import hotpot_client

    c = hotpot_client(hotpot_root)
    yield c
    c.close()


def gold_task():
    from env_support import gold_titles, hotpot_tasks

    task = hotpot_tasks(1)[0]
    return task, gold_titles(task)


def search(query: str) -> str:
    return f"<search> {query} </search>"


def test_env_hard_negatives_are_shown_and_logged(client):
    from env_support import titles_in

    from env.search_env import SearchEnv

    task, gold = gold_task()
    k = 3
    env = SearchEnv(client, topk=k, noise="hard-negative,p_start=1,p_end=1,depth=5")
    env.reset(seed=1, options=task.options())
    obs, _, _, _, info = env.step(search(gold[0]))
    deep = client.retrieve([gold[0]], topk=k + 5)[0]
    assert titles_in(obs, "asearcher") == [d["title"] for d in deep[k : 2 * k]]
    log = info["noise"]
    assert log["p"] == 1.0 and [r["slot"] for r in log["replaced"]] == [0, 1, 2]
    assert [r["by_rank"] for r in log["replaced"]] == [4, 5, 6]
    assert [r["id"] for r in log["replaced"]] == [d["id"] for d in deep[:k]]
    traj = env.trajectory()
    assert traj["turns"][0]["noise"] == log
    assert traj["noise"]["mode"] == "hard-negative" and traj["noise"]["seed"] == 1
    assert traj["noise"]["searches"] == [log]
    if "shown" in traj["turns"][0]:  # the per-turn record of what was shown is after noise
        assert traj["turns"][0]["shown"]["ids"] == [r["by_id"] for r in log["replaced"]]


def test_env_drop_gold_over_the_real_index(client):
    from env_support import titles_in

    from env.search_env import SearchEnv

    task, gold = gold_task()
    options = {**task.options(), "supporting_titles": gold}
    queries = [*gold, task.question]
    plain = SearchEnv(client, topk=5)
    plain.reset(seed=0, options=options)
    plain_titles = [titles_in(plain.step(search(q))[0], "asearcher") for q in queries]
    assert any(set(t) & set(gold) for t in plain_titles)  # gold passages do come up
    env = SearchEnv(client, topk=5, noise={"mode": "drop-gold", "p_start": 1.0, "p_end": 1.0})
    env.reset(seed=0, options=options)
    for query, before in zip(queries, plain_titles):
        obs, _, _, _, info = env.step(search(query))
        shown = titles_in(obs, "asearcher")
        assert len(shown) == 5 and not set(shown) & set(gold)
        dropped = [r["title"] for r in info["noise"]["replaced"]]
        assert dropped == [t for t in before if t in gold]
        assert all(r["by_title"] not in gold for r in info["noise"]["replaced"])


def random_episode(client, seed, step=0, noise=None):
    from env.search_env import SearchEnv

    task, gold = gold_task()
    noise = noise or NoiseConfig("random", p_start=0.0, p_end=0.6, steps=10, seed=5)
    env = SearchEnv(client, topk=5, noise=noise)
    env.reset(seed=seed, options={**task.options(), "train_step": step})
    return [env.step(search(q))[0] for q in gold], env.trajectory()["noise"]


def test_env_random_noise_is_seeded_and_follows_the_step(client):
    obs_a, log_a = random_episode(client, seed=3, step=10)
    obs_b, log_b = random_episode(client, seed=3, step=10)
    assert obs_a == obs_b and log_a == log_b  # same seed, same observations
    assert sum(len(s["replaced"]) for s in log_a["searches"]) > 0
    others = [random_episode(client, seed=s, step=10)[0] for s in (4, 5, 6)]
    assert any(o != obs_a for o in others)
    # step 0 of the curriculum: p_start = 0, the plain results
    obs_0, log_0 = random_episode(client, seed=3, step=0)
    assert log_0["p"] == 0.0 and all(s["replaced"] == [] for s in log_0["searches"])
    plain = [client.retrieve([q], topk=5)[0] for q in gold_task()[1]]
    from env_support import titles_in

    assert [titles_in(o, "asearcher") for o in obs_0] == [[d["title"] for d in p] for p in plain]


def test_batched_noise_matches_one_by_one(client):
    from env_support import hotpot_tasks

    from env.batched import BatchedSearchEnv
    from env.search_env import SearchEnv

    tasks = hotpot_tasks(4)
    noise = "hard-negative,p_start=0.5,p_end=0.5,depth=4"
    benv = BatchedSearchEnv(client, num_envs=4, topk=3, noise=noise)
    benv.reset(seed=10, options=[t.options() for t in tasks])
    batched, _, _, _, infos = benv.step([search(t.question) for t in tasks])
    for j, task in enumerate(tasks):
        env = SearchEnv(client, topk=3, noise=noise)
        env.reset(seed=10 + j, options=task.options())
        obs, _, _, _, info = env.step(search(task.question))
        assert obs == batched[j] and info["noise"] == infos[j]["noise"]


def test_random_noise_over_a_server_needs_a_pool(tmp_path, client):
    from env.search_env import SearchEnv

    class HTTPLike:  # a client with no in-process store
        def retrieve(self, queries, topk=3, retriever=None):
            return client.retrieve(queries, topk, retriever)

    with pytest.raises(ConfigError, match="retriever.inspect ROOT --sample"):
        SearchEnv(HTTPLike(), noise="random,p_end=1")
    pool = tmp_path / "pool.jsonl"
    docs = [
        {"id": f"n{i}", "title": f"Noise {i}", "text": "noise text", "url": ""} for i in range(9)
    ]
    pool.write_text("".join(json.dumps(d) + "\n" for d in docs))
    env = SearchEnv(HTTPLike(), topk=3, noise={"mode": "random", "p_end": 1, "pool": str(pool)})
    env.reset(seed=0, options={"question": "q?", "answers": ["a"]})
    _, _, _, _, info = env.step(search("Kansas"))
    assert {r["by_id"] for r in info["noise"]["replaced"]} <= {d["id"] for d in docs}
    assert len(info["noise"]["replaced"]) == 3


def test_gold_titles_compare_with_the_one_normaliser():
    """drop-gold and the evidence rewards decide "gold" with the same title key (the one in
    retriever.queries beside the gold-evidence reader), so what noise drops is what recall counts."""
    import env.evidence
    import env.noise
    import retriever.queries

    assert env.noise.title_key is env.evidence.title_key is retriever.queries.title_key
    deep = hits(6)
    deep[0]["title"] = "University_of  Kansas"
    config = NoiseConfig("drop-gold", p_start=1.0, p_end=1.0, depth=3)
    shown, record = add_noise(deep, 3, config, seed=0, gold_titles=["university of kansas"])
    assert [r.title for r in record.replaced] == ["University_of  Kansas"]
