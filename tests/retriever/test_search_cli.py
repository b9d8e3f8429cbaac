"""``python -m retriever.search`` in-process, and the query-file readers it uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA
from retriever_fakes import build_root

from retriever.errors import CorpusInputError
from retriever.index import Index
from retriever.queries import read_queries
from retriever.search import main


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_root(tmp_path_factory.mktemp("search"), bm25=True)


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_queries_as_arguments_match_the_library(root, capsys):
    assert (
        main(["--index", str(root), "-k", "3", "Kansas Song", "University of Kansas campus", ""])
        == 0
    )
    out = _lines(capsys)
    assert [o["query"] for o in out] == ["Kansas Song", "University of Kansas campus", ""]
    assert out[2]["hits"] == []
    index = Index.open(root)
    for o, hits in zip(out, index.search([o["query"] for o in out], k=3)):
        assert [h for h in o["hits"]] == [hit.to_dict() for hit in hits]
        assert [(h["id"], h["score"]) for h in o["hits"]] == [(p.id, s) for p, s in hits]


def test_query_file_formats(root, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    q = ["Who directed Sinister?", "Ed Wood nationality"]
    files = {
        "plain.txt": "\n".join(q) + "\n\n",
        "flashrag.jsonl": "".join(
            json.dumps({"id": i, "question": x, "golden_answers": ["a"]}) + "\n"
            for i, x in enumerate(q)
        ),
        "hotpot.json": json.dumps([{"_id": "1", "question": x, "answer": "a"} for x in q]),
        "nq.tsv": "".join(f"{x}\t['a']\n" for x in q),
        "chat.jsonl": "".join(
            json.dumps(
                {
                    "prompt": [
                        {"role": "system", "content": "s"},
                        {"role": "user", "content": f"Answer.\nQuestion: {x}\n"},
                    ]
                }
            )
            + "\n"
            for x in q
        ),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    pq.write_table(
        pa.Table.from_pylist(
            [{"extra_info": {"question": x, "index": i}} for i, x in enumerate(q)]
        ),
        tmp_path / "verl.parquet",
    )
    for name in [*files, "verl.parquet"]:
        assert read_queries(tmp_path / name) == q, name
    assert read_queries(DATA / "bamboogle.jsonl")[0].startswith("Who was president")
    assert main(["--index", str(root), "-k", "2", "--queries", str(tmp_path / "verl.parquet")]) == 0
    out = _lines(capsys)
    assert [o["query"] for o in out] == q and all(len(o["hits"]) == 2 for o in out)


def test_nq_tsv_reads_every_question():
    questions = read_queries(DATA / "nq-test.tsv")
    assert len(questions) == 3610 and questions[0] == "who got the first nobel prize in physics"


def test_batches_stream_in_order(root, tmp_path, capsys):
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(f"film {i}" for i in range(7)))
    assert (
        main(["--index", str(root), "-k", "1", "--batch-size", "3", "--queries", str(qfile)]) == 0
    )
    assert [o["query"] for o in _lines(capsys)] == [f"film {i}" for i in range(7)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-k", "-1", "x"], "k must be >= 0"),
        (["--retriever", "dense-nope", "x"], "unknown retriever"),
        ([], "one of the two"),
        (["--queries", "/nonexistent/q.txt"], "no such file"),
    ],
)
def test_errors_exit_2_with_a_message(root, capsys, argv, message):
    assert main(["--index", str(root), *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_bad_qa_file_names_the_record(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{"answer": "no question"}\n')
    with pytest.raises(CorpusInputError, match="line 2"):
        read_queries(bad)
