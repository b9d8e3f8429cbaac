"""``python -m index_build encode-ray``: the encode stage over a Ray cluster, one actor per GPU.

The same shard files as ``python -m index_build encode`` (``dense-NAME/emb-00000.npy``, ...,
``encode.json``, then ``manifest.json``), so ``faiss`` and ``verify`` run unchanged: every actor
loads the model once and runs the single-node code (``encode.encode_corpus``) for one shard file
at a time, handed out from a queue, so fast workers take more shards. Shard files that already
exist are skipped; an actor that dies is restarted by Ray and its shard retried; a shard that
still fails goes back to the queue for the other actors; a rerun resumes where a run stopped.

The index root must be on storage every node sees (NFS, Lustre, a mounted bucket): the actors
read ``ROOT/corpus`` and write ``ROOT/dense-NAME`` there. The model must load on every node
(a folder at the same path, or a hub name cached there).

    ray start --head  # then on the others: ray start --address HEAD:6379
    python -m index_build encode-ray --index /shared/wiki --model intfloat/e5-base-v2 --address auto
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from retriever.cli import add_config_arguments, config_from_args
from retriever.errors import BadRequestError, BuildError

from . import encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayEncodeOptions:
    """How the work is spread; none of it changes the shard files."""

    address: str | None = field(
        default=None,
        metadata={
            "help": "Ray cluster: auto (this node's), ray://HEAD:10001; default: a local one"
        },
    )
    workers: int | None = field(
        default=None, metadata={"help": "encoding actors (default: one per GPU, else per CPU)"}
    )
    gpus_per_worker: float | None = field(
        default=None, metadata={"help": "default: 1 when the cluster has GPUs, else 0"}
    )
    cpus_per_worker: float = 1.0
    max_retries: int = field(
        default=3, metadata={"help": "restarts of a dead worker (and retries of its shard)"}
    )
    ship_code: bool = field(
        default=True,
        metadata={"help": "use the package installed on the nodes instead of this checkout's"},
    )

    def __post_init__(self):
        for name in ("workers", "gpus_per_worker", "cpus_per_worker", "max_retries"):
            value = getattr(self, name)
            if value is not None and value < 0:
                flag = "--" + name.replace("_", "-")
                raise BadRequestError(f"{flag} must not be negative, got {value}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    encode.add_arguments(p)  # the same model, prefix, shard and dtype flags as `encode`
    add_config_arguments(p, RayEncodeOptions)


def run(args: argparse.Namespace) -> int:
    run_options = config_from_args(encode.EncodeOptions, args)  # checks --dtype, --batch-size
    if run_options.shard_id != 0 or run_options.num_shards != 1:
        raise BadRequestError(
            "--shard-id/--num-shards do not apply to encode-ray: Ray hands out the shards"
        )
    if args.device != "cpu":
        raise BadRequestError("--device does not apply to encode-ray: use --gpus-per-worker")
    config = encode.encoder_from_args(args)
    options = config_from_args(RayEncodeOptions, args)
    name = args.name or encode.default_name(args.model)
    start = time.perf_counter()
    result = encode_on_ray(
        args.index, name, config, args.shard_size, args.fp16, run_options.dtype,
        run_options.batch_size,
        options, overwrite=args.overwrite, show_progress=not args.no_progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    print(
        f"encode-ray: {result['encoded']} passages in {seconds:.1f} s "
        f"({result['encoded'] / max(seconds, 1e-9):.0f} passages/s) on {result['workers']} "
        f"workers, {result['skipped_shards']} shards already done, {result['retried']} retried "
        f"-> {result['folder']}"
    )
    return 0


class ShardEncoder:
    """A Ray actor body: one model on one device, encoding whole shard files on request."""

    def __init__(self, root, name, config: dict, shard_size, fp16, dtype, batch_size):
        from retriever.dense.encoders import EncoderConfig, load_encoder

        self.config = EncoderConfig.from_dict(config)
        device = "cuda" if _visible_gpus() else "cpu"
        self.encoder = load_encoder(self.config, device, dtype, batch_size)
        self.args = (root, name, self.config, shard_size, fp16)
        self.options = encode.EncodeOptions(devices=(device,), dtype=dtype, batch_size=batch_size)

    def encode_shard(self, shard: int, num_files: int) -> tuple[int, str, int]:
        """Write shard file ``shard`` (the single-node code, this one file); (shard, pid, rows)."""
        options = replace(self.options, shard_id=shard, num_shards=num_files)
        result = encode.encode_corpus(*self.args, options=options, encoder=self.encoder)
        return shard, f"{os.uname().nodename}:{os.getpid()}", result["encoded"]


def _visible_gpus() -> int:
    try:
        import ray

        return len(ray.get_gpu_ids())
    except Exception:
        return 0


def encode_on_ray(
    root: str | os.PathLike,
    name: str,
    config,
    shard_size: int = encode.SHARD_SIZE,
    fp16: bool = False,
    dtype: str = "auto",
    batch_size: int = 64,
    options: RayEncodeOptions = RayEncodeOptions(),
    overwrite: bool = False,
    show_progress: bool = False,
) -> dict:
    """Encode the missing shard files of ``root/corpus`` into ``root/dense-name`` on Ray actors."""
    import ray

    from retriever.store.docstore import CORPUS_DIR, DocStore

    root = Path(root).resolve()
    store = DocStore.open(root / CORPUS_DIR)
    folder = root / f"dense-{name}"
    ranges = encode.shard_ranges(len(store), shard_size)
    if not ray.is_initialized():
        from retriever.server.ray_serve import code_runtime_env

        env = code_runtime_env("index_build", "retriever") if options.ship_code else None
        ray.init(address=options.address, include_dashboard=False, runtime_env=env)
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    # the workers compute in one dtype, pinned in the plan (auto: fp16 on GPUs, fp32 on CPUs)
    dtype = encode.compute_dtype(dtype, "cuda" if gpus > 0 else "cpu")
    # the single-node code with a share of no shard: checks (or writes) encode.json, so a run
    # with other settings is refused before any worker starts; --overwrite clears the folder
    nothing = encode.EncodeOptions(
        devices=("cuda" if gpus > 0 else "cpu",),
        dtype=dtype,
        shard_id=len(ranges),
        num_shards=len(ranges) + 1,
    )
    encode.encode_corpus(root, name, config, shard_size, fp16, nothing, overwrite, _NoEncoder())
    todo = [
        i for i in range(len(ranges)) if not (folder / encode.SHARD_PATTERN.format(i)).is_file()
    ]
    workers = options.workers or _default_workers(gpus, options.cpus_per_worker)
    workers = max(1, min(workers, len(todo) or 1))
    log.info(
        "%s: %d shard files, %d to encode on %d Ray workers",
        folder,
        len(ranges),
        len(todo),
        workers,
    )
    retried = 0
    if todo:
        retried = _run_actors(
            root, name, config, shard_size, fp16, dtype, batch_size, options, gpus, workers,
            todo, len(ranges), show_progress,
        )  # fmt: skip
    # every shard file exists now; the actor that wrote the last one wrote the manifest, unless
    # nothing was left to encode
    if not (folder / "manifest.json").is_file():
        encode.encode_corpus(root, name, config, shard_size, fp16, nothing, False, _NoEncoder())
    return {
        "folder": str(folder),
        "encoded": sum(ranges[i][1] - ranges[i][0] for i in todo),
        "skipped_shards": len(ranges) - len(todo),
        "workers": workers if todo else 0,
        "retried": retried,
    }


def _default_workers(gpus: float, cpus: float) -> int:
    import ray

    resources = ray.cluster_resources()
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // max(cpus, 1e-9)))


def _run_actors(
    root,
    name,
    config,
    shard_size,
    fp16,
    dtype,
    batch_size,
    options,
    gpus,
    workers,
    todo,
    num_files,
    show_progress,
) -> int:
    """Hand shards to actors as they free up; a shard whose actor is gone goes back in the queue."""
    import ray
    from ray.exceptions import RayActorError

    remote = ray.remote(ShardEncoder).options(
        num_gpus=gpus,
        num_cpus=options.cpus_per_worker,
        max_restarts=options.max_retries,
        max_task_retries=options.max_retries,
    )
    init = (str(root), name, config.to_dict(), shard_size, fp16, dtype, batch_size)
    actors = [remote.remote(*init) for _ in range(workers)]
    queue, running, idle = deque(todo), {}, []
    failures: dict[int, int] = {}
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="shard", desc="encode-ray")

    def feed(actor) -> None:
        if queue:
            shard = queue.popleft()
            running[actor.encode_shard.remote(shard, num_files)] = (actor, shard)
        else:
            idle.append(actor)

    try:
        for actor in actors:
            feed(actor)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor, shard = running.pop(done[0])
            try:
                _, where, rows = ray.get(done[0])
            except RayActorError as exc:  # its restarts are used up: the others take the shard
                failures[shard] = failures.get(shard, 0) + 1
                if failures[shard] > options.max_retries:
                    raise BuildError(
                        f"shard {shard} failed on {failures[shard]} workers: {exc}; rerun to resume"
                    ) from exc
                log.warning("worker died on shard %d (%s); requeued", shard, exc)
                queue.append(shard)
                if idle:
                    feed(idle.pop())
                elif not running:  # every worker is gone: start a fresh one
                    actors.append(remote.remote(*init))
                    feed(actors[-1])
                continue
            log.debug("shard %d (%d rows) written by %s", shard, rows, where)
            if bar is not None:
                bar.update(1)
            feed(actor)
    finally:
        if bar is not None:
            bar.close()
        for actor in actors:
            ray.kill(actor)
    return sum(failures.values())


class _NoEncoder:
    """Stands in for the model when every shard file exists (writing the manifest only)."""

    def encode_passages(self, texts):  # pragma: no cover - never reached when all shards exist
        raise BuildError("a shard file is missing: rerun encode-ray")
