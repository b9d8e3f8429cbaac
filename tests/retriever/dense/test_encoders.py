"""Encoder settings (presets, the model's own config, overrides) and the packaged MiniLM.

Reference: ``SentenceTransformer.encode`` of the same model folder.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from retriever.dense import encoders
from retriever.dense.encoders import (
    PACKAGED_MODEL_SHA256,
    EncoderConfig,
    load_encoder,
    packaged_model_path,
    pool,
    resolve_config,
)
from retriever.errors import BadRequestError, IndexFormatError

TEXTS = [
    "\"Arthur's Magazine\"\nArthur's Magazine (1844-1846) was an American literary periodical.",
    "short",
    "First for Women is a woman's magazine published by Bauer Media Group in the USA. " * 8,
    "",
]


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(packaged_model_path())


@pytest.fixture(scope="module")
def minilm(model_dir):
    return load_encoder(resolve_config(model_dir), batch_size=2)


def test_packaged_model_hash_is_pinned(tmp_path, model_dir):
    assert (packaged_model_path() / "model.safetensors").is_file()
    assert (
        PACKAGED_MODEL_SHA256 == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not the weights")
    with pytest.raises(IndexFormatError, match="sha256"):
        encoders._check_sha256(bad, PACKAGED_MODEL_SHA256)


def test_settings_come_from_the_models_own_config(model_dir, tmp_path):
    cfg = resolve_config(model_dir)
    assert (cfg.pooling, cfg.normalize, cfg.max_length) == ("mean", True, 256)
    assert (cfg.query_prefix, cfg.passage_prefix, cfg.preset) == ("", "", None)
    # never from the name: a MiniLM folder called like an e5 model is still MiniLM
    alias = tmp_path / "intfloat-e5-base-v2-bge"
    alias.symlink_to(model_dir, target_is_directory=True)
    assert resolve_config(str(alias)).query_prefix == ""


def test_presets_and_overrides(model_dir):
    e5 = resolve_config(model_dir, preset="e5")
    assert (e5.query_prefix, e5.passage_prefix, e5.pooling, e5.normalize) == (
        "query: ",
        "passage: ",
        "mean",
        True,
    )
    bge = resolve_config(model_dir, preset="bge")
    assert (
        bge.pooling == "cls"
        and bge.query_prefix.startswith("Represent this sentence")
        and bge.passage_prefix == ""
    )
    contriever = resolve_config(model_dir, preset="contriever")
    assert contriever.pooling == "mean" and contriever.normalize is False
    over = resolve_config(
        model_dir, preset="e5", query_prefix="q: ", normalize=False, max_length=64
    )
    assert (over.query_prefix, over.normalize, over.max_length, over.passage_prefix) == (
        "q: ",
        False,
        64,
        "passage: ",
    )
    assert EncoderConfig.from_dict(over.to_dict()) == over
    with pytest.raises(BadRequestError, match="unknown preset"):
        resolve_config(model_dir, preset="e6")


def test_model_without_declared_pooling_needs_a_preset(tmp_path, model_dir):
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ):
        os.symlink(os.path.join(model_dir, name), plain / name)
    with pytest.raises(BadRequestError, match="--preset .*--pooling"):
        resolve_config(str(plain))
    cfg = resolve_config(str(plain), pooling="cls")
    assert cfg.pooling == "cls" and cfg.normalize is True
    # a plain transformers model with declared pooling encodes (CLS, normalised)
    vec = load_encoder(cfg).encode_passages(["hello world"])
    assert vec.shape == (1, 384) and abs(np.linalg.norm(vec) - 1) < 1e-5


def test_matches_sentence_transformers(minilm, model_dir):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(model_dir, device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = minilm.encode_passages(TEXTS)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    # batched (length-sorted) equals one by one
    single = np.concatenate([minilm.encode_passages([t]) for t in TEXTS])
    np.testing.assert_allclose(ours, single, atol=2e-5)
    assert minilm.encode_queries([]).shape == (0, 384)


def test_prefixes_are_applied(model_dir):
    e5 = load_encoder(resolve_config(model_dir, preset="e5"))
    plain = load_encoder(resolve_config(model_dir))
    np.testing.assert_allclose(
        e5.encode_queries(["who wrote hamlet"]),
        plain.encode_passages(["query: who wrote hamlet"]),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        e5.encode_passages(["Hamlet"]), plain.encode_passages(["passage: Hamlet"]), atol=1e-5
    )


def test_bf16_on_cpu_is_close_to_fp32(minilm, model_dir):
    bf16 = load_encoder(resolve_config(model_dir), dtype="bf16")
    a, b = minilm.encode_passages(TEXTS[:3]), bf16.encode_passages(TEXTS[:3])
    assert (a * b).sum(1).min() > 0.999


def test_pooling_modes():
    hidden = torch.tensor([[[1.0, 0], [3, 2], [9, 9]], [[2, 2], [0, 4], [5, 5]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "cls").tolist() == [[1, 0], [2, 2]]
    np.testing.assert_allclose(
        pool(hidden, mask, "mean").numpy(), [[2, 1], [7 / 3, 11 / 3]], rtol=1e-6
    )
    assert pool(hidden, mask, "max").tolist() == [[3, 2], [5, 5]]
    assert pool(hidden, mask, "last").tolist() == [[3, 2], [5, 5]]


def test_hub_name_loading_path(monkeypatch):
    """The default model by hub name: loads from the cache when present, else says what to do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = resolve_config(encoders.DEFAULT_MODEL, preset=encoders.DEFAULT_PRESET)
    assert cfg.model == "intfloat/e5-base-v2" and cfg.query_prefix == "query: "
    try:
        enc = load_encoder(cfg)
    except IndexFormatError as exc:
        assert "intfloat/e5-base-v2" in str(exc) and "HF_HUB_OFFLINE" in str(exc)
    else:  # in the cache on this machine
        assert enc.dim == 768


def test_model_folder_copy_loads_by_path(tmp_path, model_dir):
    copy = tmp_path / "copied-model"
    shutil.copytree(model_dir, copy)
    enc = load_encoder(resolve_config(str(copy)))
    assert enc.encode_queries(["x"]).shape == (1, 384)
