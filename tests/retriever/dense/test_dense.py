"""Dense search logic on seeded synthetic vectors and a deterministic fake encoder (fast).

The torch backend (several CPU "devices", small blocks, fp32/bf16/fp16) is checked against
exact numpy search and against faiss Flat; the retriever against one-by-one search; the faiss
Flat file reader against faiss itself.
"""

from __future__ import annotations

import threading

import faiss  # noqa: E402  (the cpu extra: a broken import fails, not skips)
import numpy as np
import orjson
import pytest
from retriever_fakes import HashEncoder

from index_build.encode import encode_corpus
from retriever.dense.encoders import parse_devices
from retriever.dense.faiss_backend import FaissBackend, flat_file_vectors
from retriever.dense.torch_backend import TorchBackend, merge_topk
from retriever.errors import BadRequestError, IndexFormatError, ManifestMismatchError
from retriever.index import Index


def exact_topk(x: np.ndarray, q: np.ndarray, k: int):
    """Reference: float64 products summed per pair, rounded to float32; ties by lower row.

    Not ``q @ x.T``: a BLAS matmul rounds a row's score by where the row falls in its tiles,
    so two identical rows can score a few ulps apart and the tie order would be the kernel's.
    """
    scores = (q.astype(np.float64)[:, None, :] * x.astype(np.float64)[None]).sum(-1)
    scores = scores.astype(np.float32)
    ids = np.stack([np.lexsort((np.arange(len(x)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 48)).astype(np.float32)
    x[1500:1510] = x[10:20]  # exact duplicates: ties must go to the lower row
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.normal(size=(40, 48)).astype(np.float32)
    q[:10] = x[10:20]  # queries whose best hits tie exactly
    return x, q


def test_merge_topk_matches_full_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(20, 30)).astype(np.float32)  # many ties
    ids = np.stack([rng.permutation(1000)[:30] for _ in range(20)])
    s, i = merge_topk(scores, ids, 7)
    for r in range(20):
        order = np.lexsort((ids[r], -scores[r]))[:7]
        assert i[r].tolist() == ids[r][order].tolist()
        assert s[r].tolist() == scores[r][order].tolist()


@pytest.mark.parametrize("devices,block_rows", [(["cpu"], None), (["cpu", "cpu", "cpu"], 257)])
def test_torch_backend_is_exact(vectors, devices, block_rows):
    x, q = vectors
    parts = [(0, x[:1000]), (1000, x[1000:2200]), (2200, x[2200:])]  # like shard files
    backend = TorchBackend(parts, devices, "fp32", block_rows=block_rows)
    assert len(backend.blocks) >= len(devices)
    want_s, want_i = exact_topk(x, q, 10)
    got_s, got_i = backend.search(q, 10)
    assert got_i.tolist() == want_i.tolist()
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-6)
    for r in range(10):  # every duplicate pair scores identically, lower row first
        assert got_i[r][:2].tolist() == [10 + r, 1500 + r]
        assert got_s[r][0] == got_s[r][1]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("devices", [["cpu"], ["cpu:0", "cpu:1"]])
def test_torch_backend_duplicates_tie_by_row_anywhere(dtype, devices):
    """Many copies of one vector, more than a block keeps (k + TIE_PAD), in several blocks and
    devices: all score alike and the lowest rows come first, in every precision."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 40)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    copies = np.sort(np.concatenate([rng.choice(np.arange(1, 300), 25, replace=False), [1999]]))
    x[copies] = x[0]
    backend = TorchBackend([(0, x[:900]), (900, x[900:])], devices, dtype, block_rows=300)
    q = x[:3] * np.float32(1.7)
    for k in (1, 5, 20, 27):
        s, i = backend.search(q, k)
        want = [0, *copies][:k]
        assert i[0].tolist() == want, k
        assert len(set(s[0].tolist())) == 1
        if dtype == "fp32":
            np.testing.assert_allclose(s[0], 1.7 * float(x[0] @ x[0]), rtol=1e-6)
    s, i = backend.search(q, 30)
    assert i[0].tolist()[:27] == [0, *copies] and s[0][26] > s[0][27]


def test_torch_backend_scores_do_not_depend_on_batch_or_layout(vectors):
    x, q = vectors
    one = TorchBackend([(0, x)], ["cpu"], "fp32")
    s, i = one.search(q, 10)
    for backend in (
        TorchBackend([(0, x[:1000]), (1000, x[1000:])], ["cpu:0", "cpu:1"], "fp32", 100),
        TorchBackend([(0, x)], ["cpu:0", "cpu:1"], "fp32", 333, shard=False),
    ):
        for r in range(0, len(q), 7):  # one by one: a 1-row batch is a gemv in BLAS
            s1, i1 = backend.search(q[r : r + 1], 10)
            assert i1[0].tolist() == i[r].tolist() and s1[0].tolist() == s[r].tolist()


def test_torch_backend_same_ids_as_faiss_flat(vectors):
    x, q = vectors
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    fs, fi = merge_topk(*FaissBackend(flat).search(q, 10), 10)  # faiss leaves ties unordered
    ts, ti = TorchBackend([(0, x)], ["cpu", "cpu"], "fp32", block_rows=500).search(q, 10)
    assert ti.tolist() == fi.tolist()
    np.testing.assert_allclose(ts, fs, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [("fp16", 2e-3), ("bf16", 2e-2)])
def test_torch_backend_half_precision_within_tolerance(vectors, dtype, tol):
    x, q = vectors
    want_s, want_i = exact_topk(x, q, 10)
    got_s, got_i = TorchBackend([(0, x)], ["cpu", "cpu"], dtype, block_rows=700).search(q, 10)
    np.testing.assert_allclose(got_s, want_s, atol=tol * 4)
    # ids agree wherever the exact scores are further apart than the rounding error
    for r in range(len(q)):
        for j in range(10):
            gap = min(
                abs(want_s[r, j] - want_s[r, j - 1]) if j else 1,
                abs(want_s[r, j] - want_s[r, j + 1]) if j < 9 else 1,
            )
            if gap > 4 * tol:
                assert got_i[r, j] == want_i[r, j]


def test_torch_backend_edge_cases(vectors):
    x, q = vectors
    backend = TorchBackend([(0, x[:5])], ["cpu", "cpu"], "fp32")
    s, i = backend.search(q[:2], 50)  # k clipped to the rows
    assert i.shape == (2, 5) and sorted(i[0].tolist()) == [0, 1, 2, 3, 4]
    s, i = backend.search(q[:0], 3)
    assert i.shape == (0, 3)


def test_faiss_backend_thread_policy(vectors):
    """One OpenMP thread for a single query, all for a batch, and the calling thread's own
    setting put back after: the server's worker encodes the next batch with torch on that
    thread and that setting (issue 26: one single-query search left every later encode on one
    core; this test saw [1, 2] after the searches before the fix)."""
    import torch

    x, q = vectors
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    during: list[int] = []

    class Spy:  # the real index, and the thread count each search ran with
        ntotal, d = flat.ntotal, flat.d

        def search(self, queries, k):
            during.append(faiss.omp_get_max_threads())
            return flat.search(queries, k)

    backend = FaissBackend(Spy(), threads=2)
    after: list = []

    def worker():  # a fresh thread: OpenMP keeps this setting per thread, the test's is untouched
        faiss.omp_set_num_threads(3)
        encode_threads = torch.get_num_threads()
        backend.search(q[:1], 5)
        after.append(faiss.omp_get_max_threads())
        backend.search(q, 5)
        after.append(faiss.omp_get_max_threads())
        after.append(torch.get_num_threads() - encode_threads)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert during == [1, 2] and after == [3, 3, 0], (during, after)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_file_vectors_read_faiss_files_in_place(tmp_path, vectors, metric):
    x, _ = vectors
    index = faiss.IndexFlatIP(x.shape[1]) if metric == "ip" else faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    path = tmp_path / "e5_Flat.index"
    faiss.write_index(index, str(path))
    mm, got_metric = flat_file_vectors(path)
    assert got_metric == metric and isinstance(mm, np.memmap)
    assert np.array_equal(np.asarray(mm), x)
    (tmp_path / "bad.index").write_bytes(b"IwPQ" + bytes(60))
    with pytest.raises(IndexFormatError, match="not a faiss Flat index"):
        flat_file_vectors(tmp_path / "bad.index")


def test_parse_devices():
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    assert parse_devices("0,1") == ["cuda:0", "cuda:1"]
    with pytest.raises(BadRequestError, match="unknown device"):
        parse_devices("tpu")


# ---- a dense part over a small real corpus, with the fake encoder ----------------------------


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    from retriever_fakes import paragraphs_jsonl

    from index_build.__main__ import main

    src = tmp_path_factory.mktemp("fake-dense")
    corpus = paragraphs_jsonl(src / "wiki-18.jsonl", 30)
    root = src / "index"
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    encode_corpus(root, "fake", HashEncoder().config, shard_size=70, encoder=HashEncoder())
    return root


def test_dense_part_manifest_and_retriever(fake_root):
    manifest = orjson.loads((fake_root / "dense-fake" / "manifest.json").read_bytes())
    idx = Index.open(fake_root)
    assert manifest["num_docs"] == len(idx.store) and manifest["dim"] == 32
    assert [s["rows"][0] for s in manifest["shards"]] == list(range(0, len(idx.store), 70))
    enc = HashEncoder()
    r = idx.retriever("dense-fake", encoder=enc, backend="torch")
    queries = ["Which magazine was started first", "Arthur's Magazine", "zzzz unknown"]
    batched = r.search(queries, 5)
    single = [r.search([q], 5)[0] for q in queries]
    # same rows; scores equal up to float rounding (a 1-row matmul is another BLAS kernel)
    assert [[h.row for h in hits] for hits in batched] == [[h.row for h in hits] for hits in single]
    for a, b in zip(batched, single):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6)
    assert r.search(queries, 0) == [[], [], []] and r.search([], 3) == []
    assert len(r.search(["x"], 10_000)[0]) == len(idx.store)
    with pytest.raises(BadRequestError):
        r.search("one string", 3)
    with pytest.raises(BadRequestError):
        r.search(["q"], -1)
    # passage text encoded as a query finds itself first
    p = idx.store.get(17)
    assert r.search([p.contents], 1)[0][0].row == 17


def test_faiss_flat_part_equals_torch_backend(fake_root):
    from index_build.build_faiss import build_index
    from retriever.dense.retriever import load

    idx = Index.open(fake_root)
    folder = fake_root / "dense-fake"
    with pytest.raises(IndexFormatError, match="python -m index_build faiss"):
        load(folder, idx.store, backend="faiss", encoder=HashEncoder())
    build_index(fake_root, "fake", "Flat")
    qs = [idx.store.get(i).title + " history" for i in range(0, len(idx.store), 9)]
    via_faiss = load(folder, idx.store, backend="faiss", encoder=HashEncoder()).search(qs, 8)
    via_torch = load(folder, idx.store, backend="torch", encoder=HashEncoder()).search(qs, 8)
    assert [[h.row for h in hits] for hits in via_faiss] == [
        [h.row for h in hits] for hits in via_torch
    ]


def test_query_encoder_mismatch_is_refused(fake_root):
    from retriever.dense.retriever import load

    idx = Index.open(fake_root)
    with pytest.raises(ManifestMismatchError, match="'fake-hash'.*'other-model'"):
        load(
            fake_root / "dense-fake",
            idx.store,
            backend="torch",
            encoder=HashEncoder(model="other-model"),
        )
    with pytest.raises(ManifestMismatchError, match="32-d vectors"):
        load(fake_root / "dense-fake", idx.store, backend="torch", encoder=HashEncoder(dim=16))


def test_gpu_backends_say_what_to_do_without_a_gpu(fake_root):
    from retriever.dense.faiss_backend import gpu_available
    from retriever.dense.retriever import load

    if gpu_available():
        pytest.skip("a GPU is present")
    idx = Index.open(fake_root)
    with pytest.raises(BadRequestError, match="backend='torch'|no GPU"):
        load(
            fake_root / "dense-fake",
            idx.store,
            backend="faiss",
            device="cuda:0",
            encoder=HashEncoder(),
        )


def test_torch_backend_uses_device_tensors_in_place(vectors):
    """Parts that already are tensors on the device in the backend's dtype are used as they are
    (the GPU check builds 21M x 768 on the GPU: a second copy would not fit)."""
    import torch

    x, q = vectors
    t = torch.from_numpy(x.copy())
    backend = TorchBackend([(0, t[:1200]), (1200, t[1200:])], ["cpu:0", "cpu:1"], "fp32", 500)
    assert backend.segments[0][0][1].data_ptr() == t.data_ptr()
    want_s, want_i = TorchBackend([(0, x)], ["cpu"], "fp32").search(q, 10)
    got_s, got_i = backend.search(q, 10)
    assert got_i.tolist() == want_i.tolist() and got_s.tolist() == want_s.tolist()
    half = TorchBackend([(0, t)], ["cpu"], "fp16")  # another dtype: converted, not shared
    assert half.segments[0][0][1].dtype == torch.float16


def test_read_rows_equals_memmap_slicing(tmp_path):
    from index_build.build_faiss import read_rows, sample_rows

    rng = np.random.default_rng(5)
    parts = []
    for i, dtype in enumerate((np.float16, np.float32)):
        np.save(tmp_path / f"emb-{i}.npy", rng.normal(size=(300, 24)).astype(dtype))
        parts.append((300 * i, np.load(tmp_path / f"emb-{i}.npy", mmap_mode="r")))
    for _, mm in parts:
        for rows in (slice(0, 300), slice(100, 170), slice(290, 400), np.array([299, 0, 7, 7])):
            got = read_rows(mm, rows)
            assert got.dtype == np.float32 and got.flags.writeable
            assert np.array_equal(got, np.asarray(mm[rows], dtype=np.float32))
    full = np.concatenate([np.asarray(a, np.float32) for _, a in parts])
    rows = np.sort(np.random.default_rng(3).choice(600, 50, replace=False))
    assert np.array_equal(sample_rows(parts, 50, seed=3), full[rows])
    assert np.array_equal(read_rows(full, slice(5, 9)), full[5:9])  # plain arrays: slicing


@pytest.mark.parametrize("factory,params", [("IVF4,Flat", {"nprobe": 4}), ("HNSW8", {})])
def test_ann_built_from_shards_finds_the_exact_scores(fake_root, tmp_path, factory, params):
    """IVF searching every list, and HNSW on a tiny corpus, give the exact top scores."""
    import shutil

    from index_build.build_faiss import build_index
    from retriever.dense.retriever import load

    root = tmp_path / "root"
    shutil.copytree(fake_root, root)
    entry = build_index(root, "fake", factory, train_sample=200, **params)
    assert entry["ntotal"] == len(Index.open(root).store)
    idx = Index.open(root)
    qs = [idx.store.get(i).title + " film" for i in range(0, len(idx.store), 11)]
    folder = root / "dense-fake"
    ann = load(folder, idx.store, backend="faiss", encoder=HashEncoder(), ef_search=400)
    exact = load(folder, idx.store, backend="torch", encoder=HashEncoder())
    for a, b in zip(ann.search(qs, 5), exact.search(qs, 5)):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)


def test_exact_rerank_scores_candidates_from_the_shards(vectors):
    from retriever.dense.faiss_backend import exact_rerank

    x, q = vectors
    parts = [(0, x[:1000]), (1000, x[1000:])]
    rng = np.random.default_rng(4)
    others = np.setdiff1d(np.arange(len(x)), np.r_[10:20, 1500:1510])
    ids = np.stack([rng.choice(others, 30, replace=False) for _ in q])  # distinct, as faiss's
    ids[:10, 0], ids[:10, 1] = np.arange(1500, 1510), np.arange(10, 20)  # the duplicate pairs
    ids[5, -3:] = -1  # faiss pads with -1
    for metric in ("ip", "l2"):
        s, i = exact_rerank(q, ids, parts, 8, metric)
        for r in range(len(q)):
            cand = ids[r][ids[r] >= 0]
            exact = x[cand].astype(np.float64) @ q[r].astype(np.float64)
            if metric == "l2":
                exact = -((x[cand].astype(np.float64) - q[r]) ** 2).sum(1)
            order = np.lexsort((cand, -exact.astype(np.float32)))[:8]
            assert i[r].tolist() == cand[order].tolist()
            np.testing.assert_allclose(s[r], exact[order], rtol=1e-6)
        assert [i[r][:2].tolist() for r in range(10)] == [[10 + r, 1500 + r] for r in range(10)]
    s, i = exact_rerank(q[:1], np.array([[3, -1, -1]]), parts, 3)
    assert i.tolist() == [[3, -1, -1]] and np.isinf(s[0, 1:]).all()


def test_ivfpq_part_reranks_from_the_shards_by_default(fake_root, tmp_path):
    import shutil

    from index_build.build_faiss import build_index
    from retriever.dense.retriever import load

    root = tmp_path / "root"
    shutil.copytree(fake_root, root)
    entry = build_index(root, "fake", "IVF4,PQ8x4", nprobe=4, train_sample=500)
    assert entry["rerank"] == 100
    idx = Index.open(root)
    qs = [idx.store.get(i).title + " river" for i in range(0, len(idx.store), 7)]
    folder = root / "dense-fake"
    exact = load(folder, idx.store, backend="torch", encoder=HashEncoder()).search(qs, 5)
    every = load(folder, idx.store, backend="faiss", encoder=HashEncoder(), rerank=len(idx.store))
    rows = [[h.row for h in a] for a in every.search(qs, 5)]
    assert rows == [[h.row for h in a] for a in exact]  # all candidates re-scored: exact
    default = load(folder, idx.store, backend="faiss", encoder=HashEncoder()).search(qs, 5)
    codes = load(folder, idx.store, backend="faiss", encoder=HashEncoder(), rerank=0).search(qs, 5)

    def recall(found):
        return np.mean(
            [len({h.row for h in a} & {h.row for h in b}) / 5 for a, b in zip(found, exact)]
        )

    assert recall(default) > recall(codes) and recall(default) >= 0.9, (
        recall(default),
        recall(codes),
    )
    for a, b in zip(default, exact):  # re-scored hits carry their exact scores
        want = {h.row: h.score for h in b}
        assert all(abs(h.score - want[h.row]) < 1e-6 for h in a if h.row in want)
    lossy = [abs(a[0].score - b[0].score) > 1e-4 for a, b in zip(codes, exact)]
    assert any(lossy)  # PQ scores alone are approximate: the re-rank is what makes them exact


def test_faiss_verb_records_the_rerank_depth(fake_root, tmp_path):
    import shutil

    from index_build.__main__ import main

    root = tmp_path / "root"
    shutil.copytree(fake_root, root)
    base = ["faiss", "--index", str(root), "--name", "fake", "--train-sample", "300"]
    assert main([*base, "--factory", "IVF4,PQ8x4", "--rerank", "0", "--no-progress"]) == 0
    manifest = orjson.loads((root / "dense-fake" / "manifest.json").read_bytes())
    assert manifest["faiss"]["rerank"] == 0 and manifest["faiss"]["factory"] == "IVF4,PQ8x4"
    assert main([*base, "--factory", "IVF4,Flat", "--no-progress"]) == 0
    manifest = orjson.loads((root / "dense-fake" / "manifest.json").read_bytes())
    assert manifest["faiss"]["rerank"] == 0  # exact codes: nothing to re-rank
    assert main([*base, "--factory", "HNSW8,SQ8", "--no-progress"]) == 0
    manifest = orjson.loads((root / "dense-fake" / "manifest.json").read_bytes())
    assert manifest["faiss"]["rerank"] == 100
