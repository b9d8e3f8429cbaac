"""``env.judge.JudgeReward`` against a scripted judge server (tests/policy_server.py): verdicts,
flagged samples (out of format, timeouts), the cache, bounded concurrency, and the TRL / verl
wrappers."""

from __future__ import annotations

import asyncio
import json

import pytest
from policy_server import ServerThread, fake_judge

from env.integrations.judge import compute_score_judge, trl_judge_reward
from env.judge import JudgeItem, JudgeReward


def items(*predictions):
    return [JudgeItem(f"q{i}", ("gold",), p) for i, p in enumerate(predictions)]


@pytest.fixture(scope="module")
def server():
    stats: dict = {}
    with ServerThread(fake_judge(stats)) as url:
        yield url, stats


def test_verdicts_flags_cache_and_concurrency(server, tmp_path):
    url, stats = server
    cache = tmp_path / "judge.jsonl"
    judge = JudgeReward(url, "judge-m", concurrency=3, timeout=1.0, retries=0, cache_path=cache)
    preds = ["right", "wrong", "garbled", "slow", None] + [f"right {i}" for i in range(7)]
    stats.update(requests=0, max_in_flight=0)
    scores = judge.score(items(*preds))
    assert scores[:5] == [1.0, 0.0, None, None, 0.0]  # out of format, timeout: flagged
    assert scores[5:] == [1.0] * 7
    assert judge.stats.flagged == 2 and judge.stats.judged == 10
    assert stats["requests"] == 11  # the unanswered item asks nothing
    assert stats["max_in_flight"] == 3  # bounded by concurrency
    # cache hits: the second call makes no request for cached verdicts; flagged ones are asked again
    stats.update(requests=0)
    again = JudgeReward(url, "judge-m", concurrency=3, timeout=1.0, retries=0, cache_path=cache)
    assert again.score(items("right", "wrong", "garbled")) == [1.0, 0.0, None]
    assert stats["requests"] == 1 and again.stats.cache_hits == 2
    assert len(cache.read_text().splitlines()) == 9 and json.loads(cache.read_text().split("\n")[0])
    # another judge model or prompt is another key
    stats.update(requests=0)
    JudgeReward(url, "judge-2", cache_path=cache).score(items("right"))
    assert stats["requests"] == 1


def test_trl_reward_leaves_flagged_out(server):
    url, _ = server
    judge = JudgeReward(url, "judge-m", timeout=1.0, retries=0)
    fn = trl_judge_reward(judge)
    logged = {}
    completions = ["<answer>right</answer>", "<answer>garbled</answer>", "no answer"]
    out = asyncio.run(
        fn(
            prompts=["p"] * 3,
            completions=completions,
            question=["a", "b", "c"],
            answers=[["gold"]] * 3,
            log_metric=lambda k, v: logged.setdefault(k, v),
        )
    )
    assert out == [1.0, None, 0.0] and logged == {"judge_flagged": 1.0}


def test_verl_batch_marks_flagged(server):
    url, _ = server
    out = compute_score_judge(
        ["hotpotqa"] * 2,
        ["<answer>right</answer>", "<answer>garbled</answer>"],
        [["gold"], {"target": ["gold"]}],
        [{"question": "q1"}, {"question": "q2", "index": 3}],
        judge_url=url,
        judge_model="judge-m",
        timeout=1.0,
    )
    assert out[0] == {"score": 1.0, "judge_valid": 1.0, "judge_flagged": 0.0}
    assert out[1] == {"score": 0.0, "judge_valid": 0.0, "judge_flagged": 1.0}
