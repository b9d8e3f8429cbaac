"""Real encoding with the packaged MiniLM on HotpotQA paragraphs, faiss builds, verify, resume.

One index root over the paragraphs of the first questions is encoded once for the module
(encoding all 4,920 paragraphs on two CPU cores takes minutes); the full-corpus recall of the
same code path is reported by ``scripts/demo_steps/dense.py`` and the issue report.
"""

from __future__ import annotations

import logging
import shutil

import faiss  # noqa: E402  (the cpu extra: a broken import fails, not skips)
import numpy as np
import orjson
import pytest
from retriever_fakes import HOTPOT, paragraphs_jsonl

from index_build.__main__ import main
from retriever.dense.encoders import packaged_model_path
from retriever.errors import ManifestMismatchError
from retriever.index import Index

log = logging.getLogger(__name__)

N_QUESTIONS = 40
SHARD = 100
ENCODE = ["--dtype", "bf16", "--shard-size", str(SHARD), "--no-progress"]


def _questions():
    rows = [orjson.loads(line) for line in HOTPOT.read_text().splitlines()[:N_QUESTIONS]]
    return [(r["question"], {t for t, _ in r["supporting_facts"]}) for r in rows]


@pytest.fixture(scope="module")
def model() -> str:
    return str(packaged_model_path())


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory, model):
    """Corpus (Search-R1 style JSONL) of the first questions' paragraphs, encoded with MiniLM."""
    src = tmp_path_factory.mktemp("mini")
    corpus = paragraphs_jsonl(src / "wiki-18.jsonl", N_QUESTIONS, distinct=True)
    root = src / "index"
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    assert (
        main(["encode", "--index", str(root), "--model", model, "--name", "minilm", *ENCODE]) == 0
    )
    assert (
        main(
            [
                "faiss",
                "--index",
                str(root),
                "--name",
                "minilm",
                "--factory",
                "Flat",
                "--no-progress",
            ]
        )
        == 0
    )
    return root


def _recall(idx: Index, name: str, k: int = 10) -> tuple[float, float]:
    """(both gold paragraphs in top k, per-gold recall@k) over the questions."""
    qs = _questions()
    results = idx.retriever(name).search([q for q, _ in qs], k)
    both = per = 0
    for (_, gold), hits in zip(qs, results):
        titles = {idx.store.get(h.row).title for h in hits}
        both += gold <= titles
        per += len(gold & titles)
    return both / len(qs), per / (2 * len(qs))


@pytest.mark.slow
def test_dense_recall_beside_bm25(mini_root, record_property, capsys):
    idx = Index.open(mini_root)
    manifest = orjson.loads((mini_root / "dense-minilm" / "manifest.json").read_bytes())
    assert manifest["num_docs"] == len(idx.store) and manifest["dim"] == 384
    assert manifest["pooling"] == "mean" and manifest["normalize"] and manifest["max_length"] == 256
    both, per = _recall(idx, "dense-minilm")
    record_property("dense_recall10_both_gold", both)
    record_property("dense_recall10_per_gold", per)
    line = f"{len(idx.store)} passages, {N_QUESTIONS} questions: dense-minilm recall@10 both-gold {both:.3f} per-gold {per:.3f}"
    try:
        import retriever.bm25.retriever  # noqa: F401
    except ImportError:
        bm25 = None
    else:
        assert main(["bm25", "--index", str(mini_root), "--no-progress"]) == 0
        bm25 = _recall(idx, "bm25")
        record_property("bm25_recall10_both_gold", bm25[0])
        line += f"; bm25 both-gold {bm25[0]:.3f} per-gold {bm25[1]:.3f}"
    with capsys.disabled():
        print("\n" + line)
    # a broken encoder scores about 10/386 = 0.03 here; MiniLM finds about half of the gold paragraphs
    assert per >= 0.45 and both >= 0.2


@pytest.mark.parametrize(
    "factory,params", [("HNSW32", ["--ef-search", "64"]), ("IVF8,Flat", ["--nprobe", "4"])]
)
def test_approximate_index_against_flat(mini_root, tmp_path, factory, params):
    from index_build.verify import verify_root
    from retriever.dense.retriever import load

    root = tmp_path / "index"
    shutil.copytree(mini_root, root)
    args = [
        "faiss",
        "--index",
        str(root),
        "--name",
        "minilm",
        "--factory",
        factory,
        "--train-sample",
        "400",
        *params,
    ]
    assert main(args) == 0
    idx = Index.open(root)
    flat = load(root / "dense-minilm", idx.store, backend="torch")
    approx = idx.retriever("dense-minilm")
    qs = [q for q, _ in _questions()]
    want = flat.search(qs, 10)
    got = approx.search(qs, 10)
    recall = np.mean([len({h.row for h in a} & {h.row for h in b}) / 10 for a, b in zip(got, want)])
    assert recall >= 0.9, (factory, recall)
    report = verify_root(root, queries=100, k=10, min_recall=0.85)
    assert report["ok"], report["problems"]
    assert report["parts"]["dense-minilm"]["faiss"]["recall@10"] >= 0.85


def test_torch_backend_same_ids_as_faiss_flat(mini_root):
    from retriever.dense.retriever import load

    idx = Index.open(mini_root)
    qs = [q for q, _ in _questions()]
    via_faiss = idx.retriever("dense-minilm")  # manifest has a Flat faiss index
    q = via_faiss.encoder.encode_queries(qs)
    fs = via_faiss.search_vectors(q, 10)
    torch32 = load(
        mini_root / "dense-minilm", idx.store, backend="torch", encoder=via_faiss.encoder
    )
    assert [[h.row for h in x] for x in torch32.search_vectors(q, 10)] == [
        [h.row for h in x] for x in fs
    ]
    torch16 = load(
        mini_root / "dense-minilm",
        idx.store,
        backend="torch",
        device="cpu,cpu",
        dtype="fp16",
        encoder=via_faiss.encoder,
    )
    for a, b in zip(torch16.search_vectors(q, 10), fs):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=2e-3)
        assert a[0].row == b[0].row


@pytest.mark.slow
def test_interrupted_encode_resumes_byte_identical(mini_root, tmp_path, model):
    """Interrupt after shard 0, resume as node 0 of 2, then finish in a spawned worker process."""
    from index_build.encode import EncodeOptions, encode_corpus
    from retriever.dense.encoders import resolve_config

    # the first 250 passages: shards 0 and 1 cover the same rows as the reference's
    jsonl = mini_root.parent / "wiki-18.jsonl"
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"".join(jsonl.read_bytes().splitlines(keepends=True)[:250]))
    root = tmp_path / "index"
    assert main(["corpus", "--input", str(part), "--out", str(root), "--no-progress"]) == 0
    config = resolve_config(model)
    options = EncodeOptions(dtype="bf16")

    def stop_after_shard_0(i, path):
        raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        encode_corpus(
            root, "minilm", config, shard_size=SHARD, options=options, on_shard=stop_after_shard_0
        )
    folder = root / "dense-minilm"
    assert sorted(p.name for p in folder.glob("emb-*")) == ["emb-00000.npy"]
    assert not (folder / "manifest.json").exists()
    assert Index.open(root).names() == []  # an unfinished part is not offered
    # this node does every other shard (0, 2): only shard 2 is left of those; no manifest yet
    node = EncodeOptions(dtype="bf16", shard_id=0, num_shards=2)
    result = encode_corpus(root, "minilm", config, SHARD, options=node)
    assert not result["complete"] and result["skipped_shards"] == 1 and result["encoded"] == 50
    # the rest in worker processes, as with --device cuda:0,1 (here two CPU workers)
    result = encode_corpus(
        root, "minilm", config, SHARD, options=EncodeOptions(devices=("cpu", "cpu"), dtype="bf16")
    )
    assert result["complete"] and result["encoded"] == 100
    for name in ("emb-00000.npy", "emb-00001.npy"):
        assert (folder / name).read_bytes() == (mini_root / "dense-minilm" / name).read_bytes(), (
            name
        )
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    assert [s["rows"] for s in manifest["shards"]] == [[0, 100], [100, 200], [200, 250]]
    assert Index.open(root).names() == ["dense-minilm"]


def test_other_model_or_corpus_is_refused_naming_both(
    mini_root, hotpot_root, tmp_path, model, capsys
):
    from retriever.dense.retriever import load

    root = tmp_path / "index"
    shutil.copytree(mini_root, root)
    other = tmp_path / "another-model"
    other.symlink_to(model, target_is_directory=True)
    assert (
        main(["encode", "--index", str(root), "--model", str(other), "--name", "minilm", *ENCODE])
        == 2
    )
    err = capsys.readouterr().err
    assert model in err and str(other) in err
    # same part opened against another corpus
    store = Index.open(hotpot_root).store
    with pytest.raises(ManifestMismatchError) as exc:
        load(root / "dense-minilm", store)
    assert store.checksum in str(exc.value) and Index.open(root).store.checksum in str(exc.value)
    # resuming the part's shards against another corpus
    shutil.copytree(root / "dense-minilm", hotpot_root.parent / "copy" / "dense-minilm")
    shutil.copytree(hotpot_root / "corpus", hotpot_root.parent / "copy" / "corpus")
    args = [
        "encode",
        "--index",
        str(hotpot_root.parent / "copy"),
        "--model",
        model,
        "--name",
        "minilm",
        *ENCODE,
    ]
    assert main(args) == 2
    assert store.checksum in capsys.readouterr().err


def test_search_r1_flat_index_opens_as_it_is(mini_root, tmp_path, model):
    """An ``e5_Flat.index`` + ``wiki-18.jsonl`` pair, registered without re-encoding or copying."""
    from retriever.dense.retriever import load, vector_parts

    src = tmp_path / "searchr1"
    src.mkdir()
    corpus = src / "wiki-18.jsonl"
    shutil.copy(next((mini_root / "corpus").parent.parent.glob("wiki-18.jsonl")), corpus)
    folder = mini_root / "dense-minilm"
    vectors = np.concatenate(
        [a for _, a in vector_parts(folder, orjson.loads((folder / "manifest.json").read_bytes()))]
    )
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    faiss.write_index(flat, str(src / "e5_Flat.index"))
    size = (src / "e5_Flat.index").stat().st_size
    root = tmp_path / "index"
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    args = [
        "faiss",
        "--index",
        str(root),
        "--name",
        "e5",
        "--faiss-file",
        str(src / "e5_Flat.index"),
        "--model",
        model,
    ]
    assert main(args) == 0
    assert not list((root / "dense-e5").glob("*.index"))  # nothing copied
    assert (src / "e5_Flat.index").stat().st_size == size
    idx, ref = Index.open(root), Index.open(mini_root)
    qs = [q for q, _ in _questions()]
    got = idx.retriever("dense-e5").search(qs, 5)
    want = ref.retriever("dense-minilm").search(qs, 5)
    assert [[h.row for h in x] for x in got] == [[h.row for h in x] for x in want]
    torch_r = load(
        root / "dense-e5", idx.store, backend="torch"
    )  # reads the file's vectors in place
    assert [[h.row for h in x] for x in torch_r.search(qs, 5)] == [[h.row for h in x] for x in want]
    # a file of another size than the corpus is refused
    small = faiss.IndexFlatIP(vectors.shape[1])
    small.add(vectors[:10])
    faiss.write_index(small, str(src / "small.index"))
    args[-3] = str(src / "small.index")
    assert main(args) == 2


def test_verify_reports_a_corrupt_shard(mini_root, tmp_path, capsys):
    root = tmp_path / "index"
    shutil.copytree(mini_root, root)
    assert main(["verify", "--index", str(root)]) == 0
    assert orjson.loads(capsys.readouterr().out)["ok"]
    shard = root / "dense-minilm" / "emb-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", "--index", str(root)]) == 1
    report = orjson.loads(capsys.readouterr().out)
    assert not report["ok"] and "emb-00001.npy" in report["problems"][0]
