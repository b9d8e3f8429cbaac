"""The 8-GPU plan for flat dense search, worked out on paper (arithmetic, NOT a measurement).

docs/design.md's performance model: 21M passages x 768 dims in fp16 is 32 GB to read per batch and
32 GFLOP per query; one H200 reads about 4.3 TB/s and does about 790 TFLOP/s (bf16/fp16 dense).
A batch of B queries on one GPU then takes at least max(bytes / bandwidth, B x flops / rate):
bandwidth-bound at small B, compute-bound at large B. Over G GPUs:

- sharded (split the vectors): every GPU reads 1/G of the matrix for every query of the batch,
  then the G top-k lists are merged (B x k x G candidates: kilobytes);
- replicated (split the queries): every GPU holds the whole matrix and takes B/G of the batch.

Ideal numbers (no kernel launch, no host round trip, 100% of peak): real runs land below them.

    python scripts/bench/plan_gpu.py [--record]
    python scripts/bench/plan_gpu.py --smoke  # the same arithmetic, recorded only to $BENCH_RECORD
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from common import append_section

N_DOCS = 21_000_000
DIM = 768
BYTES = 2  # fp16
BANDWIDTH = 4.3e12  # bytes/s, one H200
RATE = 790e12  # flop/s, one H200, dense fp16/bf16 matmul
GPUS = 8
BATCHES = (1, 64, 1024, 4096)


def batch_ms(batch: int, gpus: int, mode: str) -> float:
    """Lower bound of one batch's search time in ms on ``gpus`` GPUs."""
    matrix = N_DOCS * DIM * BYTES
    flop = 2 * N_DOCS * DIM  # multiply-add per dimension per passage
    if mode == "sharded":
        read, work = matrix / gpus, batch * flop / gpus
    else:  # replicated: the busiest GPU gets ceil(B / G) queries and reads the whole matrix
        read, work = matrix, math.ceil(batch / gpus) * flop
    return 1000 * max(read / BANDWIDTH, work / RATE)


def plan() -> dict:
    matrix = N_DOCS * DIM * BYTES
    flop = 2 * N_DOCS * DIM
    rows = []
    for b in BATCHES:
        one = batch_ms(b, 1, "sharded")
        sh = batch_ms(b, GPUS, "sharded")
        rep = batch_ms(b, GPUS, "replicated")
        rows.append(
            {
                "batch": b,
                "1 GPU ms": one,
                "1 GPU q/s": 1000 * b / one,
                "8 sharded ms": sh,
                "8 sharded q/s": 1000 * b / sh,
                "8 replicated ms": rep,
                "8 replicated q/s": 1000 * b / rep,
            }
        )
    knee_one = (matrix / BANDWIDTH) / (flop / RATE)  # batch where one GPU turns compute-bound
    summary = {
        "matrix_GB": round(matrix / 1e9, 1),
        "gflop_per_query": round(flop / 1e9, 1),
        "one_gpu_floor_ms": round(1000 * matrix / BANDWIDTH, 2),
        "one_gpu_peak_qps": round(RATE / flop),
        "one_gpu_knee_batch": round(knee_one),
        "sharded_floor_ms": round(1000 * matrix / GPUS / BANDWIDTH, 2),
        "replicated_knee_batch": round(knee_one * GPUS),
        "per_gpu_GB_sharded": round(matrix / GPUS / 1e9, 1),
        "per_gpu_GB_replicated": round(matrix / 1e9, 1),
        "rows": [{k: round(v, 2) for k, v in r.items()} for r in rows],
    }
    return {"rows": rows, "summary": summary}


def render(p: dict) -> str:
    s = p["summary"]
    lines = [
        "8 x H200 flat search, ARITHMETIC (not measured): "
        f"{N_DOCS / 1e6:.0f}M x {DIM} fp16 = {s['matrix_GB']} GB, {s['gflop_per_query']} GFLOP/query, "
        f"{BANDWIDTH / 1e12} TB/s, {RATE / 1e12:.0f} TFLOP/s per GPU",
        f"{'batch':>6} | {'1 GPU ms':>9} {'q/s':>8} | {'8 sharded ms':>12} {'q/s':>9} | "
        f"{'8 replicated ms':>15} {'q/s':>9}",
    ]
    for r in p["rows"]:
        lines.append(
            f"{r['batch']:>6} | {r['1 GPU ms']:>9.2f} {r['1 GPU q/s']:>8.0f} | "
            f"{r['8 sharded ms']:>12.2f} {r['8 sharded q/s']:>9.0f} | "
            f"{r['8 replicated ms']:>15.2f} {r['8 replicated q/s']:>9.0f}"
        )
    lines.append(
        f"one GPU is bandwidth-bound below batch {s['one_gpu_knee_batch']}; replicated x8 below "
        f"{s['replicated_knee_batch']}; sharded x8 cuts the floor to {s['sharded_floor_ms']} ms and "
        f"needs {s['per_gpu_GB_sharded']} GB per GPU (replicated: {s['per_gpu_GB_replicated']} GB)."
    )
    return "\n".join(lines)


NOTES = """ARITHMETIC, NOT A MEASUREMENT (no multi-GPU machine was used): lower bounds from docs/design.md's
model, 21M x 768 fp16 (32.3 GB, 32.3 GFLOP per query), one H200 = 4.3 TB/s, 790 TFLOP/s;
time per batch = max(bytes read / bandwidth, flops / rate) on the busiest GPU. Sharded: each
GPU reads 1/8 of the matrix (4.0 GB) for the whole batch, then top-k lists are merged (B x k x 8
candidates, negligible). Replicated: each GPU holds all 32.3 GB and takes B/8 of the queries.
Which wins when: sharded has 8x lower latency at every batch below about 1,470 queries (where
replicated GPUs are still bandwidth-bound reading the full matrix for a few queries each) and
needs 1/8 of the GPU memory (the only choice on GPUs under 40 GB); above about 1,470 both are
compute-bound at the same ~196k queries/s. Replicated wins on things the model leaves out: no
cross-GPU step per batch (a slow or lost GPU costs 1/8 of the throughput instead of stalling
every batch), independent batches in flight, and ANN indexes (IVF/HNSW) whose per-shard cost
does not shrink with the shard. Query encoding is extra: e5-base at ~32 tokens is about 7
GFLOP per query (about a fifth of the search's 32). Default here: `--dense-mode sharded` on one
node; replicas of whole nodes (Ray Serve) for more throughput. Real runs land below these bounds
(kernel launches, host round trips, fp16 matmul efficiency); the one-GPU figures at batch 1, 64,
1024 are to be measured on a GPU node with scripts/bench/scale.py --dense-devices cuda:0 ..."""


def append(p: dict, smoke: bool = False) -> None:
    header = ["batch", "1 GPU ms", "1 GPU q/s", "8 sharded ms", "8 sharded q/s"]
    header += ["8 replicated ms", "8 replicated q/s"]
    table = [
        [
            r["batch"],
            f"{r['1 GPU ms']:.2f}",
            f"{r['1 GPU q/s']:,.0f}",
            f"{r['8 sharded ms']:.2f}",
            f"{r['8 sharded q/s']:,.0f}",
            f"{r['8 replicated ms']:.2f}",
            f"{r['8 replicated q/s']:,.0f}",
        ]
        for r in p["rows"]
    ]
    append_section(
        "Scale-out: 8 x H200 sharded vs replicated, ARITHMETIC (not measured)",
        "python scripts/bench/plan_gpu.py (printed by scripts/bench/scale.py)",
        table,
        header,
        NOTES.replace("\n", " "),
        smoke=smoke,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--record", action="store_true", help="append the table to the history")
    ap.add_argument("--smoke", action="store_true", help="record only to $BENCH_RECORD")
    args = ap.parse_args(argv)
    p = plan()
    print(render(p))
    print(json.dumps({"bench": "plan_gpu", "arithmetic_not_measured": True, **p["summary"]}))
    if args.record or args.smoke:
        append(p, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
