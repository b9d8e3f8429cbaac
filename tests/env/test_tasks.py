"""QA loaders over every row layout, on small files written here (and the committed samples)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import DATA

from env.errors import TaskFormatError
from env.tasks import load_tasks, parse_dpr_line, row_to_task


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_verl_jsonl_committed_sample():
    tasks = load_tasks(DATA / "bamboogle.jsonl")
    assert len(tasks) == 125
    t = tasks[0]
    assert t.question.startswith("Who was president of the United States")
    assert t.answers == ("james madison",)
    assert t.source == "chiayewken/bamboogle" and t.id == "0"


def test_hotpotqa_jsonl_committed_sample():
    tasks = load_tasks(DATA / "hotpotqa-distractor-500.jsonl")
    assert len(tasks) == 500
    assert tasks[0].answers == ("Kansas Song",) and tasks[0].id == "5a7166395542994082a3e814"
    assert tasks[0].meta["supporting_facts"][0][0] == "Kansas Song"


def test_search_r1_parquet_with_target_dict(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompt = "Answer the given question. ... Question: who wrote hamlet?\n"
    rows = [
        {
            "data_source": "nq",
            "prompt": [{"role": "user", "content": prompt}],
            "ability": "fact-reasoning",
            "reward_model": {
                "style": "rule",
                "ground_truth": {"target": ["Shakespeare", "William Shakespeare"]},
            },
            "extra_info": {"split": "test", "index": 7},
        },
        {
            "data_source": "nq",
            "prompt": [{"role": "user", "content": "plain question?"}],
            "reward_model": {"style": "rule", "ground_truth": {"target": ["x"]}},
            "extra_info": {"split": "test", "index": 8},
        },
    ]
    path = tmp_path / "nq_test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    tasks = load_tasks(path)
    assert tasks[0].question == "who wrote hamlet?"
    assert tasks[0].answers == ("Shakespeare", "William Shakespeare")
    assert tasks[0].id == "7" and tasks[0].source == "nq"
    assert tasks[1].question == "plain question?"


def test_flashrag_and_asearcher_layouts(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"id": "test_0", "question": "q0?", "golden_answers": ["a", "b", "a"]},
            {"question": "q1?", "answer": "Main", "aug_answer": ["Alias 1", "alias 2"]},
            {"question": "q2?", "answer": ["l1", "l2"]},
            {
                "question": "q3?",
                "reward_model": {"ground_truth": "gt"},
                "extra_info": {"answer": "gt"},
            },
        ],
    )
    tasks = load_tasks(path)
    assert [t.answers for t in tasks] == [
        ("a", "b"),
        ("Main", "Alias 1", "alias 2"),
        ("l1", "l2"),
        ("gt",),
    ]
    assert tasks[0].id == "test_0" and tasks[1].id == "1"


def test_hotpotqa_json_list(tmp_path):
    path = tmp_path / "hotpot_dev.json"
    path.write_text(json.dumps([{"_id": "abc", "question": "q?", "answer": "yes", "context": []}]))
    (task,) = load_tasks(path)
    assert (task.id, task.answers) == ("abc", ("yes",))


DPR_LINES = [
    (
        "who got the first nobel prize in physics\t['Wilhelm Conrad Röntgen']",
        ["Wilhelm Conrad Röntgen"],
    ),
    (
        'who sings the theme song\t"[\'Solange Knowles\', ""Destiny \'s Child""]"',
        ["Solange Knowles", "Destiny 's Child"],
    ),
    (
        'genre of diary\t"[""Children \'s novel"", \'Graphic Novel\']"\r\n',
        ["Children 's novel", "Graphic Novel"],
    ),
    ("q with 'quotes' in it?\t['a', 'b']\n", ["a", "b"]),
]


@pytest.mark.parametrize("line,answers", DPR_LINES)
def test_dpr_line(line, answers):
    assert parse_dpr_line(line)[1] == answers


def test_dpr_tsv_file_with_a_bad_line(tmp_path, caplog):
    path = tmp_path / "nq-test.tsv.gz"
    body = (
        "\r\n".join(line.rstrip("\r\n") for line, _ in DPR_LINES) + "\r\nbroken line\t[unclosed\r\n"
    )
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(body)
    tasks = load_tasks(path)
    assert len(tasks) == 4  # the broken line is skipped with a warning, not fatal
    assert tasks[1].answers == ("Solange Knowles", "Destiny 's Child")
    assert "line 5" in caplog.text


def test_nq_file_reads_every_question():
    tasks = load_tasks(DATA / "nq-test.tsv")
    assert len(tasks) == 3610
    assert all(t.answers and all('""' not in a for a in t.answers) for t in tasks)


def test_shuffle_is_deterministic_and_limit(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl", [{"question": f"q{i}?", "answer": str(i)} for i in range(50)]
    )
    a = load_tasks(path, shuffle_seed=3)
    b = load_tasks(path, shuffle_seed=3)
    c = load_tasks(path, shuffle_seed=4)
    assert a == b and a != c
    assert sorted(t.question for t in a) == sorted(t.question for t in load_tasks(path))
    assert load_tasks(path, shuffle_seed=3, limit=5) == a[:5]
    assert [t.question for t in load_tasks(path, limit=2)] == ["q0?", "q1?"]


@pytest.mark.parametrize(
    "row,message",
    [
        ({"answer": "x"}, "no question"),
        ({"question": "q?"}, "no answer"),
        ({"question": "q?", "golden_answers": []}, "no answer"),
        ("not an object", "expected a JSON object"),
    ],
)
def test_bad_rows_name_the_problem(row, message):
    with pytest.raises(TaskFormatError, match=message):
        row_to_task(row, "f.jsonl: line 3")


def test_bad_files(tmp_path):
    with pytest.raises(TaskFormatError, match="no such QA file"):
        load_tasks(tmp_path / "missing.jsonl")
    with pytest.raises(TaskFormatError, match="line 1: no answer"):
        (tmp_path / "x.xml").write_text("<a/>")  # read as plain text: a question without answers
        load_tasks(tmp_path / "x.xml")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(TaskFormatError, match="line 2"):
        load_tasks(bad)


def test_env_tasks_and_search_cli_read_the_same_questions(tmp_path):
    """One reader: the env asks exactly what ``retriever.search --queries`` searches."""
    from retriever.queries import read_queries

    rows = [
        {"question": "A?", "extra_info": {"question": "B?"}, "answer": "a"},
        {"extra_info": {"question": "C?"}, "reward_model": {"ground_truth": "c"}},
        {"prompt": [{"role": "user", "content": "Answer.\nQuestion: D?\n"}], "answer": "d"},
        {"query": "E?", "golden_answers": ["e"]},
    ]
    jsonl = write_jsonl(tmp_path / "mixed.jsonl", rows)
    tsv = tmp_path / "three.tsv"
    tsv.write_text("question\tanswers\nwho\twhat?\t['x']\nplain?\t['y', 'z']\n")
    for path, questions in (
        (jsonl, ["A?", "C?", "D?", "E?"]),
        (tsv, ["who\twhat?", "plain?"]),
    ):
        assert read_queries(path) == questions
        assert [t.question for t in load_tasks(path)] == questions
    assert [t.answers for t in load_tasks(tsv)] == [("x",), ("y", "z")]
