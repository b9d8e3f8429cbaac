"""scripts/train/learn_to_search.py: the whole cold-start + GRPO + control pipeline, --quick,
on the real SmolLM2 and the HotpotQA index."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "train" / "learn_to_search.py"


def load():
    spec = importlib.util.spec_from_file_location("train_learn_to_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bootstrap_interval_brackets_the_mean():
    l2s = load()
    ci = l2s.bootstrap([0.0, 1.0] * 50, 500, 0)
    assert ci["mean"] == 0.5
    assert 0.35 < ci["ci95"][0] < 0.5 < ci["ci95"][1] < 0.65
    assert l2s.bootstrap([0.2] * 10, 100, 0) == {"mean": 0.2, "ci95": [0.2, 0.2]}


def test_grpo_reward_is_the_env_spec_of_the_episode_scores():
    l2s = load()
    scores = {"f1": 0.5, "answer_in_evidence": 1.0, "em": 0.0}
    assert l2s._reward(scores) == 1.0  # f1:1,answer_in_evidence:0.5
    assert l2s._reward({**scores, "answer_in_evidence": 0.0}) == 0.5


def test_scripted_policy_copies_the_span_it_read(hotpot_root, gguf_tokenizer):
    from env_support import ensure_bm25
    from transformers import AutoTokenizer  # noqa: F401  (the real tokenizer comes with the model)

    from env.tasks import load_tasks
    from retriever.client import InProcessClient

    l2s = load()
    cfg = l2s.parse_args(["--quick"])
    assert l2s._span_in("The song is KANSAS song.", ["Kansas Song"]) == "KANSAS song"
    client = InProcessClient(ensure_bm25(hotpot_root))
    tasks = load_tasks(str(l2s.QA))[:40]
    tok = copy.deepcopy(gguf_tokenizer)
    hits, examples = l2s.scripted(client, tok, tasks, True, cfg)
    assert 0 < len(hits) < len(tasks) and len(examples) == len(hits)
    prompt, completion, mask = examples[0]
    text = tok.decode(completion)
    assert text.startswith("<search> " + hits[0].question) and "<information>" in text
    # the observation is the env's, and is not trained on; the answer is
    assert 0 in mask and mask[-1] == 1 and len(mask) == len(completion)
    trained = tok.decode([t for t, m in zip(completion, mask) if m])
    assert "<information>" not in trained and "<answer>" in trained
    _, plain = l2s.scripted(client, tok, hits, False, cfg)
    assert all(all(m) for _, _, m in plain)
    assert l2s.NoSearch().retrieve(["q1", "q2"]) == [[], []]


def test_a_turn_cut_by_a_stop_string_does_not_end_the_message(gguf_tokenizer):
    """The first full run stopped every searching episode unanswered: its padding was EOS."""
    l2s = load()
    tok = copy.deepcopy(gguf_tokenizer)
    tok.pad_token = tok.eos_token  # as grpo_trl.load_model leaves it
    eos, pad = tok.eos_token_id, l2s.pad_id(tok)
    assert pad != eos
    search = tok.encode("<search> q </search>", add_special_tokens=False)
    assert l2s.trim(search + [pad, pad], eos, pad) == search
    assert l2s.trim(search + [eos, pad], eos, pad) == search + [eos]
    assert l2s.trim([pad, pad], eos, pad) == [eos]


@pytest.fixture(scope="module")
def gguf_tokenizer():
    """SmolLM2's tokenizer read from its GGUF once for the module (4 s a read); tests that
    change it take a copy."""
    load()  # puts scripts/train on the path
    from grpo_trl import GGUF_FILE, model_dir
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), gguf_file=GGUF_FILE)


@pytest.mark.slow
@pytest.mark.model
def test_quick_pipeline_writes_the_summary(tmp_path, hotpot_root, smollm2, monkeypatch):
    from env_support import ensure_bm25

    l2s = load()
    import grpo_trl  # scripts/train is on the path now; main imports load_model from it

    monkeypatch.setattr(grpo_trl, "load_model", smollm2)  # its GGUF load, shared by the session
    out = tmp_path / "out"
    assert l2s.main(["--quick", "--out", str(out), "--index", str(ensure_bm25(hotpot_root))]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("base_f1", "control_f1", "trained_f1"):
        lo, hi = summary[key]["ci95"]
        assert 0.0 <= lo <= summary[key]["mean"] <= hi <= 1.0
    assert summary["heldout_questions"] == 4
    assert summary["command"].startswith("python scripts/train/learn_to_search.py --quick")
    assert summary["searches_per_episode_last10pct"] >= 0
    assert (
        summary["trained_minus_control_f1"]["ci95"][0]
        <= summary["trained_minus_control_f1"]["ci95"][1]
    )
    assert set(summary["free_text_f1"]) == {"base", "control", "trained"}
    assert 0 <= summary["heldout_answer_in_top_hits"] <= 1
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert {(r["arm"], r["phase"]) for r in steps} == {
        ("search", "sft"),
        ("search", "grpo"),
        ("control", "sft"),
        ("control", "grpo"),
    }
    assert (out / "learn-to-search.png").stat().st_size > 1000
    # the control never saw a search result
    control = [json.loads(x) for x in (out / "heldout-control.jsonl").read_text().splitlines()]
    assert len(control) == 4
