"""A faster CPU query encoder: the part's model exported to ONNX, optionally int8, checked.

On CPU a dense request's time is almost all the encoder's forward pass. ONNX Runtime runs the
same graph with fewer framework overheads, and int8 (weights per output channel, activations
per token: ``onnx_int8``) cuts the matrix work further. The export is cached per model (key: a
hash of the model's weights and the encoder settings baked into the graph) and reused on the
next start; a damaged cache file is rebuilt. Before serving, the ONNX vectors of a fixed set of real
questions (HotpotQA, shipped in ``data/check_queries.txt``) are compared with the torch fp32
vectors: below ``MIN_COSINE`` the encoder refuses to load, since speed is never bought with a
different answer.

Tokenisation, prefixes, length-sorted batching and truncation are the torch encoder's own
(this class is a ``TransformerEncoder`` whose forward pass is the ONNX session); pooling and
normalisation are the torch encoder's ``pool`` and ``F.normalize``, traced into the graph. No
operator mixes tokens of different texts (per-token int8 scales included), so a text's vector
does not depend on its batch-mates and batches are as large as is fastest.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import orjson

from ..cores import default_threads
from ..errors import BadRequestError, IndexFormatError
from ..files import atomic_path, sha256_file, write_bytes_atomic
from .encoders import EncoderConfig, TransformerEncoder, pad_batch, pool
from .onnx_int8 import SCHEME, quantize_per_token

log = logging.getLogger(__name__)

QUERY_ENCODERS = ("torch", "onnx", "onnx-int8")
MIN_COSINE = 0.99
OPSET = 17
CACHE_ENV = "RETRIEVER_CACHE_DIR"
CHECK_QUERIES = Path(__file__).parent / "data" / "check_queries.txt"
# Texts per session run. Measured on 2 cores (one intra-op thread, passive, 128 HotpotQA
# questions, CPU ms/query): int8 alone 3.2, length-sorted batches of 16 2.4, of 32 2.7 (larger
# activations leave the cache); the per-tensor int8 it replaced was 4.3 alone.
BATCH_SIZE = 16
INT8_FILE = "model-int8-token.onnx"  # per-token scales (``onnx_int8.SCHEME``)
_META = "meta.json"


def cache_root() -> Path:
    """Where exports are kept: ``$RETRIEVER_CACHE_DIR``, else the user cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "retriever"


def check_queries() -> list[str]:
    """The fixed questions of the quality check (128 HotpotQA dev questions)."""
    return [q for q in CHECK_QUERIES.read_text(encoding="utf-8").splitlines() if q]


def model_key(model, config: EncoderConfig) -> str:
    """A hash of the weights and of what the graph bakes in (pooling, normalisation, versions)."""
    import onnxruntime
    import torch

    h = hashlib.sha256()
    h.update(orjson.dumps([config.pooling, config.normalize, OPSET, torch.__version__, SCHEME]))
    h.update(onnxruntime.__version__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def _export(
    model, config: EncoderConfig, path: Path, example: tuple[np.ndarray, np.ndarray]
) -> None:
    import torch
    import torch.nn.functional as F

    class Pooled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            pooled = pool(hidden.last_hidden_state, attention_mask, config.pooling)
            return F.normalize(pooled, p=2, dim=1) if config.normalize else pooled

    ids, mask = (torch.from_numpy(a) for a in example)
    axes = {0: "batch", 1: "sequence"}
    with atomic_path(path, unique=True) as tmp:
        torch.onnx.export(
            Pooled(model).eval(),
            (ids, mask),
            str(tmp),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic axes
            input_names=["input_ids", "attention_mask"],
            output_names=["vectors"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "vectors": {0: "batch"}},
            opset_version=OPSET,
        )


def _quantize(src: Path, path: Path) -> None:
    with atomic_path(path, unique=True) as tmp:
        quantize_per_token(src, tmp)


def _recorded(folder: Path) -> dict:
    try:
        return dict(orjson.loads((folder / _META).read_bytes())["sha256"])
    except (OSError, KeyError, TypeError, ValueError):
        return {}


def _intact(folder: Path, name: str, recorded: dict) -> bool:
    """True when ``folder/name`` has the hash meta.json recorded when it was written."""
    try:
        return name in recorded and sha256_file(folder / name) == recorded[name]
    except OSError:
        return False


def exported(
    model,
    config: EncoderConfig,
    runtime: str,
    example: tuple[np.ndarray, np.ndarray],
    cache_dir: Path | None = None,
) -> Path:
    """The ONNX file for ``runtime`` (``onnx`` or ``onnx-int8``): reused when its hash matches
    the one recorded at export, else (missing or damaged) exported again; ``example``: padded
    token ids and mask of two texts, from the model's own tokenizer, to trace with."""
    folder = Path(cache_dir or cache_root()) / "onnx" / model_key(model, config)
    names = ["model.onnx"] + ([INT8_FILE] if runtime == "onnx-int8" else [])
    recorded = _recorded(folder)
    todo = [n for n in names if not _intact(folder, n, recorded)]
    if not todo:
        log.info("query encoder %s: reusing %s", runtime, folder)
        return folder / names[-1]
    damaged = [n for n in todo if n in recorded]
    if damaged:
        log.warning("query encoder %s: %s in %s do not match their hashes; rebuilding",
                    runtime, damaged, folder)  # fmt: skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if "model.onnx" in todo:
            _export(model, config, folder / "model.onnx", example)
            recorded = {}  # an int8 file quantised from another export is stale
            todo = names
        if INT8_FILE in todo:
            _quantize(folder / "model.onnx", folder / INT8_FILE)
        recorded.update({n: sha256_file(folder / n) for n in todo})
        meta = {"model": config.model, "sha256": recorded}
        write_bytes_atomic(folder / _META, orjson.dumps(meta), unique=True)
    except OSError as exc:
        raise IndexFormatError(
            f"cannot write the ONNX export of {config.model} to {folder}: {exc}. Set "
            f"{CACHE_ENV} to a writable folder, or drop --query-encoder {runtime}"
        ) from exc
    log.info("query encoder %s: wrote %s to %s in %.1f s", runtime, todo, folder,
             time.perf_counter() - start)  # fmt: skip
    return folder / names[-1]


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "ACTIVE":
        # passive unless the user chose, as the CLIs set OMP_WAIT_POLICY: threads that spin
        # between operators starve the other work of a busy machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise IndexFormatError(
            f"cannot load the ONNX encoder {path}: {exc}. Delete that folder to re-export it"
        ) from exc


class OnnxEncoder(TransformerEncoder):
    """``TransformerEncoder`` whose forward pass runs in ONNX Runtime on CPU."""

    def __init__(
        self,
        config: EncoderConfig,
        runtime: str = "onnx-int8",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        min_cosine: float = MIN_COSINE,
    ):
        if runtime not in QUERY_ENCODERS[1:]:
            raise BadRequestError(
                f"unknown ONNX query encoder {runtime!r}; choose one of {QUERY_ENCODERS[1:]}"
            )
        super().__init__(config, device="cpu", dtype="fp32", batch_size=BATCH_SIZE)
        self.runtime = runtime
        example = pad_batch(self.tokenize(["an example question to trace", "short"]), self.pad_id)
        self.path = exported(self.model, config, runtime, example, cache_dir)
        # one intra-op thread a run, and a call's batches side by side on ``threads`` threads:
        # less CPU and less time than intra-op threads at every request size measured
        # (BENCHMARKS.md, "Query encoders on CPU"); ``session.run`` may be called concurrently
        self.threads = max(1, threads or default_threads())
        self.session = session(self.path, 1)
        self._pool = None
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="onnx-encoder")
            weakref.finalize(self, self._pool.shutdown, wait=False)
        self.min_cosine_seen = self._check(min_cosine)
        self.model = None  # the torch weights served their purpose: reference and export

    def _check(self, min_cosine: float) -> float:
        """Refuse to serve when any check query's vector strays from the fp32 one."""
        queries = check_queries()
        onnx_vectors = self.encode_queries(queries)
        self.batch_size = 64  # torch's fp32 vectors do not depend on their batch-mates
        try:
            reference = self._encode(queries, self.config.query_prefix, self._torch_forward)
        finally:
            self.batch_size = BATCH_SIZE
        cos = _cosines(onnx_vectors, reference)
        worst = float(cos.min())
        log.info(
            "query encoder %s: cosine to fp32 on %d questions min %.4f, mean %.4f",
            self.runtime, len(queries), worst, float(cos.mean()),
        )  # fmt: skip
        if not worst >= min_cosine:
            raise IndexFormatError(
                f"query encoder {self.runtime} for {self.config.model}: min cosine to fp32 "
                f"{worst:.4f} on {len(queries)} check questions is below {min_cosine}: drop "
                f"--query-encoder {self.runtime} (or try --query-encoder onnx)"
            )
        return worst

    def _batches(self, order: np.ndarray) -> list[np.ndarray]:
        """Batches of at most ``batch_size`` texts, and at least one per thread (as many as
        there are texts), of equal size: 64 texts on 2 threads are 4 batches of 16, 4 texts
        2 of 2, a lone text runs alone."""
        n = len(order)
        count = max(-(-n // self.batch_size), min(self.threads, n))
        size = max(-(-n // max(count, 1)), 1)
        return [order[s : s + size] for s in range(0, n, size)]

    def _run(self, forward, batches: list[list[list[int]]]) -> list[np.ndarray]:
        """The batches on the calling thread and ``threads - 1`` helpers, each taking the next
        batch not yet taken; the torch reference (``_check``) runs one after the other."""
        if self._pool is None or len(batches) < 2 or forward != self._forward:
            return super()._run(forward, batches)
        results: list = [None] * len(batches)
        cursor = itertools.count()  # next() on it is atomic: each batch is taken once

        def drain() -> None:
            while (i := next(cursor)) < len(batches):
                results[i] = forward(batches[i])

        helpers = [self._pool.submit(drain) for _ in range(min(self.threads, len(batches)) - 1)]
        try:
            drain()
        finally:
            wait(helpers)
        for helper in helpers:
            helper.result()  # a helper's error is the call's
        return results

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        input_ids, mask = pad_batch(ids, self.pad_id)
        feed = {"input_ids": input_ids, "attention_mask": mask}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)
