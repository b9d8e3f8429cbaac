"""Query encoding on this CPU: torch fp32 against the server's ``--query-encoder onnx|onnx-int8``.

Same model (the packaged all-MiniLM-L6-v2), same NQ test questions, the same threads (torch's
count). The ONNX encoders run a call's batches side by side, one intra-op thread each, on as
many threads as the server gives them; ``onnx-int8 (intra-op)`` is the baseline that runs them
one after the other on that many intra-op threads (without spinning), as before. Shapes: one
question per call (a lone request) and each of ``--batch`` questions per call (coalesced
batches). CPU ms per question (process time, what a busy machine has to give) and wall
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
    from retriever.dense.onnx_encoder import OnnxEncoder, session

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=256, help="NQ test questions")
    ap.add_argument("--single", type=int, default=64, help="of them, encoded one per call")
    ap.add_argument("--batch", default="4,16,64", help="questions per batched call (a list)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cache-dir", help="ONNX export folder (default: the server's)")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.single, args.batch, args.repeat = 8, 4, "4", 1
        args.cache_dir = args.cache_dir or os.environ.get(c.SMOKE_CACHE_ENV) or c.smoke_dir("qe")
    questions = c.nq_questions(args.n, smoke=args.smoke)
    config = resolve_config(str(packaged_model_path()))
    sizes = [int(x) for x in str(args.batch).split(",")]
    encoders = {"torch fp32": load_encoder(config, "cpu", "fp32", batch_size=max(sizes))}
    for runtime in ("onnx", "onnx-int8"):
        encoders[runtime] = OnnxEncoder(config, runtime, cache_dir=args.cache_dir)
    # the baseline: one batch after the other, each on torch's thread count of intra-op threads
    intra = OnnxEncoder(config, "onnx-int8", threads=1, cache_dir=args.cache_dir)
    intra.session = session(intra.path, torch.get_num_threads())
    encoders["onnx-int8 (intra-op)"] = intra
    ref = encoders["torch fp32"].encode_queries(questions)
    cos = {name: (e.encode_queries(questions) * ref).sum(1) for name, e in encoders.items()}
    shapes = {1: [[q] for q in questions[: args.single]]}
    for size in sizes:
        shapes[size] = [questions[i : i + size] for i in range(0, len(questions), size)]

    def run(e, calls):
        return lambda: timed(lambda: [e.encode_queries(call) for call in calls])

    fns = {
        (name, size): run(e, calls)
        for size, calls in shapes.items()
        for name, e in encoders.items()
    }
    times = c.alternate(fns, args.repeat)
    rows = []
    base = {}
    for size, calls in shapes.items():
        count = sum(map(len, calls))
        for name in encoders:
            cpu_ms = c.median(t[0] for t in times[(name, size)]) * 1000 / count
            wall_ms = c.median(t[1] for t in times[(name, size)]) * 1000 / count
            base.setdefault(size, cpu_ms)
            rows.append(
                {
                    "shape": f"{size} per call",
                    "encoder": name,
                    "cpu_ms_per_query": round(cpu_ms, 2),
                    "wall_ms_per_query": round(wall_ms, 2),
                    "cpu_speedup": round(base[size] / cpu_ms, 2),
                    "min_cosine": round(float(np.min(cos[name])), 4),
                    "mean_cosine": round(float(np.mean(cos[name])), 4),
                }
            )
    intra_wall = {r["shape"]: r["wall_ms_per_query"] for r in rows if "intra" in r["encoder"]}
    for r in rows:  # the threading's gain: same int8 graph, batches side by side vs intra-op
        r["wall_speedup_vs_intra"] = round(intra_wall[r["shape"]] / r["wall_ms_per_query"], 2)
    keys = list(rows[0])
    header = [
        "shape",
        "encoder",
        "CPU ms/query",
        "wall ms/query",
        "CPU speed-up (vs torch)",
        "min cos",
        "mean cos",
        "wall speed-up vs intra-op",
    ]
    c.print_table(header, c.table_of(rows, keys))
    threads = torch.get_num_threads()
    print(
        json.dumps(
            {"bench": "query_encoders", "n": len(questions), "threads": threads, "rows": rows}
        )
    )
    notes = (
        f"all-MiniLM-L6-v2 (packaged), {len(questions)} NQ test questions ({len(shapes[1])} one "
        f"per call), torch {torch.__version__} and onnxruntime with {threads} threads, "
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
