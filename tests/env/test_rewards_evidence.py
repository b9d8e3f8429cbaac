"""Retrieval-aware rewards on real episodes over the bundled HotpotQA index, reward specs, and
the spec passing through every trainer integration (TRL, verl, SkyRL entry points)."""

from __future__ import annotations

import pytest
from env_support import Oracle, gold_titles, hotpot_client, hotpot_tasks, titles_in

from env import ConfigError, SearchEnv
from env.evaluate import summarize
from env.evidence import information_gains
from env.reward_spec import parse_reward_spec
from env.tasks import row_to_task

SPEC = "f1:1,evidence_recall:0.5,search_cost:-0.05"


@pytest.fixture(scope="module")
def client(hotpot_root):
    return hotpot_client(hotpot_root)


def play(env: SearchEnv, task, actions=None) -> tuple[float, dict, Oracle]:
    """One episode: the oracle's turns (search each gold title, read a page, answer) or the
    scripted ``actions``; (summed reward, last info, the oracle)."""
    obs, _ = env.reset(options=task.options())
    oracle, total = Oracle(task, env.config.style), 0.0
    for i in range(10):
        action = oracle.act(obs) if actions is None else actions[i]
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated or truncated:
            return total, info, oracle
    raise AssertionError("the episode did not end")


def test_loader_keeps_gold_titles():
    task = hotpot_tasks(1)[0]
    assert task.meta["supporting_titles"] == ["Kansas Song", "University of Kansas"]
    assert task.options()["supporting_titles"] == ["Kansas Song", "University of Kansas"]
    verl_row = {"prompt": "Question: q?", "answer": "a", "extra_info": {"supporting_ids": [3, 4]}}
    assert row_to_task(verl_row).options()["supporting_ids"] == ["3", "4"]
    musique = {
        "question": "q",
        "answer": "a",
        "paragraphs": [
            {"title": "A", "is_supporting": True},
            {"title": "B", "is_supporting": False},
        ],
    }
    assert row_to_task(musique).meta["supporting_titles"] == ["A"]


def test_gold_searching_policy_gets_full_recall_and_the_composite(client):
    env = SearchEnv(client, topk=5, page_chars=500, reward=SPEC)
    full = 0
    for task in hotpot_tasks(6):
        total, info, oracle = play(env, task)
        r = info["rewards"]
        # the gold titles the oracle read in the observations are exactly the ones recalled
        gold = gold_titles(task)
        assert r["evidence_recall"] == len(set(oracle.found)) / len(gold), task.question
        full += r["evidence_recall"] == 1.0
        assert r["redundancy"] == 0.0
        cost = info["counts"]["search"] + info["counts"].get("access", 0)
        assert r["search_cost"] == cost >= 2
        assert total == pytest.approx(r["f1"] + 0.5 * r["evidence_recall"] - 0.05 * cost)
        if oracle.found:  # a gold passage holds the answer in HotpotQA's bridge questions
            assert r["info_gain"] > 0
        # every tool turn records what it showed
        turns = env.trajectory()["turns"]
        for t in (t for t in turns if t["kind"] == "search"):
            assert t["shown"]["titles"] == titles_in(t["observation"], "asearcher")
            assert len(t["shown"]["ids"]) == len(t["shown"]["titles"]) and t["arg"] in gold
        access = [t for t in turns if t["kind"] == "access"]
        assert all(t["shown"]["urls"][0] and "offset" in t["shown"] for t in access)
    assert full >= 2  # BM25 finds both gold pages of some of these questions by title


def test_policy_that_never_searches_gets_nothing(client):
    task = hotpot_tasks(1)[0]
    env = SearchEnv(client, reward=SPEC)
    total, info, _ = play(env, task, [f"<answer>{task.answers[0]}</answer>"])
    assert info["rewards"]["evidence_recall"] == 0.0
    assert info["rewards"]["search_cost"] == 0.0 and info["rewards"]["info_gain"] == 0.0
    assert total == pytest.approx(1.0)  # f1 only


def test_redundant_queries_counted(client):
    task = hotpot_tasks(1)[0]
    env = SearchEnv(client, reward="redundancy")
    actions = [
        "<search>University of Kansas</search>",
        "<search>kansas, university of?</search>",  # the same bag of words: redundant
        "<search>Lawrence Kansas</search>",
        "<answer>x</answer>",
    ]
    total, info, _ = play(env, task, actions)
    assert info["rewards"]["redundancy"] == total == 1.0
    assert information_gains(env.episode.evidence())[:2] == [1, 0]  # the repeat: nothing new
    assert info["rewards"]["evidence_recall"] == 0.5


def test_spec_errors_name_the_bad_part():
    with pytest.raises(ConfigError, match="'recal'.*evidence_recall"):
        parse_reward_spec("f1:1,recal:0.5")
    with pytest.raises(ConfigError, match="weight of 'f1'.*'x'"):
        parse_reward_spec("f1:x")
    with pytest.raises(ConfigError, match="twice"):
        parse_reward_spec({"f1": 1, " f1": 2})
    with pytest.raises(ConfigError, match="unknown"):
        SearchEnv(None, reward="f1:1,nope:2")
    assert SearchEnv(None, reward={"f1": 1, "search_cost": -0.1}).config.reward == (
        "f1:1,search_cost:-0.1"
    )


def test_evaluate_summary_has_the_evidence_metrics(client):
    env = SearchEnv(client, topk=5)
    records = []
    for task in hotpot_tasks(2):
        play(env, task)
        records.append(env.trajectory() | {"dataset": "hotpot", "task_id": task.id})
    play(env, hotpot_tasks(1)[0], ["<answer>no idea</answer>"])
    records.append(env.trajectory() | {"dataset": "hotpot", "task_id": "never"})
    ev = summarize(records, 1)["hotpot"]["evidence"]
    recalls = [r["rewards"]["evidence_recall"] for r in records]
    assert recalls[-1] == 0.0 and max(recalls) > 0
    assert ev["with_gold"] == 3 and ev["recall"] == pytest.approx(sum(recalls) / 3)
    assert ev["search_cost"] > 1 and ev["redundant"] == 0.0


# ---- the spec through the trainer integrations ------------------------------------------------


def test_trl_reward_function_takes_a_spec(client):
    from env.integrations.trl import SearchToolEnvironment, reward_function, task_rows

    task = hotpot_tasks(1)[0]
    env = SearchEnv(client, topk=5)
    _, info, _ = play(env, task)
    texts = [t["action"] + t["observation"] for t in env.trajectory()["turns"]]
    r = info["rewards"]
    fn = reward_function(SPEC)
    assert fn.__name__ == SPEC
    row = task_rows([task])[0]
    # text-only path: the evidence is read back from the <information> blocks of the text
    text_score = fn(
        completions=["".join(texts)],
        answers=[row["answers"]],
        supporting_titles=[row["supporting_titles"]],
    )
    expected = r["f1"] + 0.5 * r["evidence_recall"] - 0.05 * r["search_cost"]
    assert text_score == [pytest.approx(expected)]
    # TRL's environment_factory path
    tool_env = SearchToolEnvironment(client, reward=SPEC)
    tool_env.reset(**task_rows([task], style="tool-call")[0])
    tool_env.search(query="University of Kansas")  # one of the two gold pages
    tool_env.answer(answer=task.answers[0])
    assert tool_env.get_reward() == pytest.approx(1.0 + 0.5 * 0.5 - 0.05)
    assert fn(completions=[""], environments=[tool_env]) == [pytest.approx(1.2)]


def test_verl_compute_score_takes_a_spec():
    pytest.importorskip("tensordict", reason="verl is installed --no-deps by make setup")
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    section = {
        "path": "pkg://env.integrations.verl",
        "name": "compute_score",
        "reward_kwargs": {"reward": {"f1": 1, "evidence_recall": 0.5, "search_cost": -0.05}},
    }
    fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": section}}))
    text = (
        '<search>kansas</search><information>[Doc 1](/wiki/Kansas_Song):\n"Kansas Song"\n'
        "...</information><answer>Kansas Song</answer>"
    )
    extra = {"supporting_facts": [["Kansas Song", 0], ["University of Kansas", 1]]}
    score = fn(
        data_source="hotpotqa", solution_str=text, ground_truth=["Kansas Song"], extra_info=extra
    )
    assert score == pytest.approx(1.0 + 0.25 - 0.05)
    from env.integrations.verl import compute_score

    with pytest.raises(ConfigError, match="'nope'"):
        compute_score("h", text, ["x"], {}, reward="f1:1,nope:1")


def test_skyrl_env_config_takes_a_spec(hotpot_root, client):
    skyrl_gym = pytest.importorskip("skyrl_gym")
    import env.integrations.skyrl  # noqa: F401  (registers "wikisearch")

    task = hotpot_tasks(1)[0]
    e = skyrl_gym.make(
        "wikisearch",
        env_config={"index": "unused", "reward": SPEC},
        extras={
            "reward_spec": {"ground_truth": {"target": list(task.answers)}},
            "extra_info": {"supporting_titles": gold_titles(task)},
        },
        client=client,
    )
    e.init([{"role": "user", "content": task.question}])
    e.step("<search>University of Kansas</search>")
    out = e.step(f"<answer>{task.answers[0]}</answer>")
    assert out["reward"] == pytest.approx(1.0 + 0.25 - 0.05)
    assert e.get_metrics()["reward_evidence_recall"] == 0.5
