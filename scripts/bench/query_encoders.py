"""Query encoding on this CPU: torch fp32 against the server's ``--query-encoder onnx|onnx-int8``.

Same model (the packaged all-MiniLM-L6-v2), same NQ test questions, the same threads (torch's
count; ONNX Runtime gets as many intra-op threads, without spinning, as the server runs them).
Two shapes: one question per call (a lone request) and ``--batch`` questions per call (a
coalesced batch). CPU ms per question (process time, what a busy machine has to give) and wall
ms per question, medians of ``--repeat`` alternating rounds; cosine of each runtime's vectors to
torch fp32's (the server refuses an encoder whose minimum falls below 0.99 on its check set).

    python scripts/bench/query_encoders.py [--n 256] [--batch 64] [--repeat 5]
    python scripts/bench/query_encoders.py --smoke  # 8 questions, one round
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server's CLI sets it
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import common as c  # noqa: E402
import numpy as np  # noqa: E402


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv=None) -> int:
    import torch

    from retriever.dense.encoders import load_encoder, packaged_model_path, resolve_config
    from retriever.dense.onnx_encoder import OnnxEncoder

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=256, help="NQ test questions")
    ap.add_argument("--single", type=int, default=64, help="of them, encoded one per call")
    ap.add_argument("--batch", type=int, default=64, help="questions per batched call")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cache-dir", help="ONNX export folder (default: the server's)")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.single, args.batch, args.repeat = 8, 4, 4, 1
        args.cache_dir = args.cache_dir or os.environ.get(c.SMOKE_CACHE_ENV) or c.smoke_dir("qe")
    questions = c.nq_questions(args.n, smoke=args.smoke)
    config = resolve_config(str(packaged_model_path()))
    encoders = {"torch fp32": load_encoder(config, "cpu", "fp32", batch_size=args.batch)}
    for runtime in ("onnx", "onnx-int8"):
        encoders[runtime] = OnnxEncoder(config, runtime, cache_dir=args.cache_dir)
    ref = encoders["torch fp32"].encode_queries(questions)
    cos = {name: (e.encode_queries(questions) * ref).sum(1) for name, e in encoders.items()}
    singles = questions[: args.single]
    batches = [questions[i : i + args.batch] for i in range(0, len(questions), args.batch)]

    def single(e):
        return lambda: timed(lambda: [e.encode_queries([q]) for q in singles])

    def batched(e):
        return lambda: timed(lambda: [e.encode_queries(b) for b in batches])

    fns = {(name, "single"): single(e) for name, e in encoders.items()}
    fns |= {(name, "batch"): batched(e) for name, e in encoders.items()}
    times = c.alternate(fns, args.repeat)
    rows = []
    base = {}
    for shape, count in (("single", len(singles)), ("batch", len(questions))):
        for name in encoders:
            cpu_ms = c.median(t[0] for t in times[(name, shape)]) * 1000 / count
            wall_ms = c.median(t[1] for t in times[(name, shape)]) * 1000 / count
            base.setdefault(shape, cpu_ms)
            rows.append(
                {
                    "shape": "1 per call" if shape == "single" else f"{args.batch} per call",
                    "encoder": name,
                    "cpu_ms_per_query": round(cpu_ms, 2),
                    "wall_ms_per_query": round(wall_ms, 2),
                    "cpu_speedup": round(base[shape] / cpu_ms, 2),
                    "min_cosine": round(float(np.min(cos[name])), 4),
                    "mean_cosine": round(float(np.mean(cos[name])), 4),
                }
            )
    keys = list(rows[0])
    header = [
        "shape",
        "encoder",
        "CPU ms/query",
        "wall ms/query",
        "CPU speed-up",
        "min cos",
        "mean cos",
    ]
    c.print_table(header, c.table_of(rows, keys))
    threads = torch.get_num_threads()
    print(
        json.dumps(
            {"bench": "query_encoders", "n": len(questions), "threads": threads, "rows": rows}
        )
    )
    notes = (
        f"all-MiniLM-L6-v2 (packaged), {len(questions)} NQ test questions ({len(singles)} one per "
        f"call), torch {torch.__version__} and onnxruntime with {threads} threads, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; medians of {args.repeat} alternating "
        "rounds; cosine to torch fp32 over all the questions."
    )
    c.record(
        args,
        argv,
        "Query encoders on CPU (torch fp32, ONNX, ONNX int8)",
        c.table_of(rows, keys),
        header,
        notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
