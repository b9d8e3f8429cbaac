"""Passage encoding on this CPU: our encoder against plain ``SentenceTransformer.encode``.

Same model folder (the packaged all-MiniLM-L6-v2), same passages (real HotpotQA paragraphs as
``"Title"\\ntext``, about 126 tokens each), same max length (256). Baseline:
``SentenceTransformer(path).encode(texts, batch_size=32)`` (its defaults; it sorts by character
length). Ours: ``TransformerEncoder`` in fp32 (same numerics: token-length-sorted batches of 64,
``inference_mode``) and in bf16 autocast (uses AVX512-BF16 where the CPU has it; cosine to the
fp32 vectors is printed). Runs alternate, medians of ``--repeat`` runs; tokens/s counts
non-padding tokens after truncation.

    python scripts/bench/encode.py [--n 512] [--repeat 3]
    python scripts/bench/encode.py --smoke  # 4 passages, one run
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import common as c
import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def passages(n: int) -> list[str]:
    seen, out = set(), []
    for line in (c.TEST_DATA / "hotpotqa-distractor-500.jsonl").read_text().splitlines():
        for title, sents in orjson.loads(line)["context"]:
            if title not in seen:
                seen.add(title)
                out.append(f'"{title}"\n' + "".join(sents))
    return out[:n]


def main(argv=None) -> int:
    import torch
    from sentence_transformers import SentenceTransformer

    from retriever.dense.encoders import load_encoder, packaged_model_path, resolve_config

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.repeat = 4, 1
    path = str(packaged_model_path())
    texts = passages(args.n)
    st = SentenceTransformer(path, device="cpu")
    config = resolve_config(path)
    ours32 = load_encoder(config, "cpu", "fp32", batch_size=64)
    ours16 = load_encoder(config, "cpu", "bf16", batch_size=64)
    tokens = sum(len(x) for x in ours32.tokenize(texts))
    runs = {
        "sentence-transformers encode (fp32, batch 32)": lambda: st.encode(
            texts, batch_size=32, convert_to_numpy=True
        ),
        "ours fp32 (token-sorted, batch 64)": lambda: ours32.encode_passages(texts),
        "ours bf16 autocast (batch 64)": lambda: ours16.encode_passages(texts),
    }
    vectors = {name: fn() for name, fn in ((n, f) for n, f in runs.items())}  # warm-up + outputs
    times = c.alternate(
        {name: lambda fn=fn: c.seconds_of(fn) for name, fn in runs.items()}, args.repeat
    )
    base_name = next(iter(runs))
    base = c.median(times[base_name])
    ref = vectors[base_name]
    rows = []
    print(f"{len(texts)} passages, {tokens} tokens, torch threads {torch.get_num_threads()}")
    for name in runs:
        t = c.median(times[name])
        cos = float((vectors[name] * ref).sum(1).min())
        rows.append(
            {
                "encoder": name,
                "seconds": round(t, 2),
                "passages_per_s": round(len(texts) / t, 1),
                "tokens_per_s": round(tokens / t),
                "speedup": round(base / t, 2),
                "min_cosine_to_st": round(cos, 5),
            }
        )
        print(
            f"{name:>48}: {t:6.2f} s  {len(texts) / t:7.1f} passages/s  {tokens / t:8.0f} tokens/s  "
            f"x{base / t:.2f}  min cos {cos:.5f}"
        )
    print(json.dumps({"bench": "encode", "n": len(texts), "tokens": tokens, "rows": rows}))
    if not args.no_record:
        header = [
            "encoder",
            "seconds",
            "passages/s",
            "tokens/s",
            "speedup vs ST",
            "min cosine to ST",
        ]
        keys = ["encoder", "seconds", "passages_per_s", "tokens_per_s", "speedup"]
        table = c.table_of(rows, [*keys, "min_cosine_to_st"])
        notes = (
            f"all-MiniLM-L6-v2 (packaged), {len(texts)} HotpotQA paragraphs, {tokens} tokens, max length 256, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads; medians of {args.repeat} alternating runs."
        )
        c.record(args, argv, "Passage encoding (CPU)", table, header, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
