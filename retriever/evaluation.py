"""Standard IR evaluation: judgments and runs in, recall@k, nDCG@10, MRR@10 and answer recall out.

The ranking measures are computed by ``ir_measures`` (trec_eval through pytrec_eval), never by
hand here, so they equal what ``trec_eval -c`` prints: a query of the judgments that the run
does not rank counts 0 (the mean is over every judged query), and trec_eval orders each query's
documents by score (ties by docid, descending), not by rank. Answer recall@k is DPR's and
pyserini's ``has_answer``: a passage's text (not its title) contains an answer as a sequence of
tokens, uncased, after NFD normalisation; the first k passages in rank order count.

Every reader checks its file and raises ``CorpusInputError`` naming the file and line: unknown
query or document ids, duplicate rows, empty answers, malformed lines.

>>> answer_tokens("The U.S. Open")
['the', 'u', '.', 's', '.', 'open']
>>> has_answer("Lawrence, Kansas is home to KU.", ["kansas"]), has_answer("Arkansas", ["kansas"])
(True, False)
"""

from __future__ import annotations

import io
import logging
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import orjson

from .errors import BadRequestError, CorpusInputError
from .queries import answers_of, gold_evidence_of, id_of, iter_qa_rows, question_of

log = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]  # qid -> (docid, score) in rank order
Qrels = dict[str, dict[str, int]]  # qid -> docid -> relevance
CUTOFFS = (1, 5, 10, 20, 100)
MISSING_GOLD = ("error", "keep", "drop")


@dataclass(frozen=True)
class Topic:
    """One query to evaluate: its id, text, accepted answers and (HotpotQA) gold titles."""

    qid: str
    query: str
    answers: tuple[str, ...] = ()
    gold_titles: tuple[str, ...] = ()
    position: str = ""


@dataclass
class Topics:
    """The queries of a QA or topics file in file order, and the judgments they come with."""

    path: str
    items: list[Topic] = field(default_factory=list)
    qrels: Qrels = field(default_factory=dict)
    level: str = "passage"  # "title": the judgments and the run are article titles


# ---- answers ---------------------------------------------------------------------------------
@cache
def _tokenizer():
    import regex  # DPR's SimpleTokenizer classes need \p{...}, which re lacks

    return regex.compile(
        r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])", flags=regex.IGNORECASE | regex.UNICODE
    )


def answer_tokens(text: str) -> list[str]:
    """DPR's SimpleTokenizer words, uncased, of the NFD-normalised text."""
    return [m.group().lower() for m in _tokenizer().finditer(unicodedata.normalize("NFD", text))]


def has_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether an answer occurs in ``text`` as a token sequence (DPR's ``has_answer``)."""
    words = answer_tokens(text)
    for answer in answers:
        gold = answer_tokens(answer)
        n = len(gold)
        if n and any(words[i : i + n] == gold for i in range(len(words) - n + 1)):
            return True
    return False


# ---- readers ---------------------------------------------------------------------------------
def _lines(path: str | os.PathLike) -> Iterable[tuple[int, str]]:
    p = Path(path)
    if not p.is_file():
        raise CorpusInputError(str(path), "open", "no such file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusInputError(str(path), f"byte {exc.start}", "not UTF-8 text") from exc
    for n, line in enumerate(io.StringIO(text), 1):
        if line.strip():
            yield n, line


def _is_topics_tsv(path: str | os.PathLike) -> bool:
    """``qid<TAB>query`` (TREC topics TSV) rather than a DPR ``question<TAB>[answers]`` file."""
    from .queries import parse_dpr_line

    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in (".tsv", ".txt", ".topics", ""):
        return False
    first = next(iter(_lines(p)), (0, ""))[1]
    if "\t" not in first:
        return False
    try:
        parse_dpr_line(first)
    except ValueError:
        return True
    return False


def read_topics(path: str | os.PathLike, *, store=None, missing_gold: str = "error") -> Topics:
    """Queries from a TREC topics TSV (``qid<TAB>query``) or any QA file ``retriever.queries``
    reads. QA rows bring their answers; rows with gold evidence (HotpotQA's ``supporting_facts``,
    ``supporting_titles``; read by ``retriever.queries.gold_evidence_of``) also bring gold
    titles, judged against the corpus ``store`` (``missing_gold``: a title the corpus lacks is
    an error, kept as an unretrievable relevant title, or dropped)."""
    if missing_gold not in MISSING_GOLD:
        raise BadRequestError(f"missing_gold must be one of {MISSING_GOLD}, got {missing_gold!r}")
    out = Topics(str(path))
    seen: dict[str, str] = {}

    def add(topic: Topic) -> None:
        if topic.qid in seen:
            raise CorpusInputError(
                str(path),
                topic.position,
                f"duplicate query id {topic.qid!r} (first at "
                f"{seen[topic.qid]}); give each query one row",
            )
        seen[topic.qid] = topic.position
        out.items.append(topic)

    if _is_topics_tsv(path):
        for n, line in _lines(path):
            qid, sep, query = line.rstrip("\r\n").partition("\t")
            if not sep or not qid.strip() or not query.strip() or "\t" in query:
                raise CorpusInputError(
                    str(path), f"line {n}", "expected 'qid<TAB>query' (two columns)"
                )
            add(Topic(qid.strip(), query.strip(), position=f"line {n}"))
        return out
    for i, (position, row) in enumerate(iter_qa_rows(path)):
        question = question_of(row) if isinstance(row, dict) else None
        if question is None:
            raise CorpusInputError(str(path), position, "no question found")
        qid = id_of(row) or str(i)
        answers = tuple(answers_of(row))
        titles = tuple(gold_evidence_of(row)[0])  # the one reader of gold evidence
        if not titles and row.get("supporting_facts") is not None:
            raise CorpusInputError(
                str(path), position, "supporting_facts is not a list of [title, sentence]"
            )
        add(Topic(qid, question, answers, titles, position))
    if any(t.gold_titles for t in out.items):
        _title_qrels(out, store, missing_gold)
    return out


def _title_qrels(topics: Topics, store, missing_gold: str) -> None:
    topics.level = "title"
    dropped = 0
    for t in topics.items:
        if not t.gold_titles:
            raise CorpusInputError(
                topics.path, t.position, "no gold titles (supporting_facts or supporting_titles)"
            )
        gold = {}
        for title in t.gold_titles:
            if store is not None and not store.find_title(title):
                if missing_gold == "error":
                    raise CorpusInputError(
                        topics.path,
                        t.position,
                        f"gold title {title!r} is not in the corpus; build the index from a "
                        "corpus that has it, or pass --missing-gold keep|drop",
                    )
                if missing_gold == "drop":
                    continue
            gold[title] = 1
        if gold:
            topics.qrels[t.qid] = gold
        else:
            dropped += 1
    if dropped:
        log.warning(
            "%s: %d queries have no gold title in the corpus: not judged", topics.path, dropped
        )


def read_qrels(path: str | os.PathLike, topics: Topics, *, known_doc=None) -> Qrels:
    """TREC qrels (``qid iter docid rel``) or JSONL (``query_id``/``qid``, ``doc_id``/``docid``,
    ``relevance``). Every qid must be a query of ``topics`` and every topic judged; ``known_doc``
    (docid -> bool) refuses documents the corpus lacks."""
    qids = {t.qid for t in topics.items}
    qrels: Qrels = {}
    where: dict[tuple[str, str], int] = {}
    for n, line in _lines(path):
        bad = CorpusInputError(str(path), f"line {n}", "expected 'qid 0 docid relevance'")
        if line.lstrip().startswith("{"):
            try:
                obj = orjson.loads(line)
                qid = str(obj.get("query_id", obj.get("qid")))
                docid = str(obj.get("doc_id", obj.get("docid")))
                rel = int(obj.get("relevance", obj.get("rel", 1)))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
                raise bad from exc
        else:
            cols = line.split()
            if len(cols) != 4:
                raise bad
            qid, _, docid, rel_text = cols
            try:
                rel = int(rel_text)
            except ValueError as exc:
                raise bad from exc
        if qid not in qids:
            raise CorpusInputError(
                str(path), f"line {n}", f"query id {qid!r} is not in {topics.path}"
            )
        _check_row(path, n, qid, docid, known_doc, where, "duplicate judgment of {q!r} {d!r}")
        qrels.setdefault(qid, {})[docid] = rel
    for t in topics.items:
        if t.qid not in qrels:
            raise CorpusInputError(
                topics.path, t.position, f"query {t.qid!r} has no judgments in {path}"
            )
    return qrels


def _check_row(
    path: str | os.PathLike,
    n: int,
    qid: str,
    docid: str,
    known_doc: Callable[[str], bool] | None,
    seen: dict[tuple[str, str], int],
    twice: str,
) -> None:
    """The checks a qrels row and a run row share: the document exists (when ``known_doc`` is
    given) and the (query, document) pair comes once; records the pair's line in ``seen``.
    ``twice`` names a repeated pair, formatted with ``q`` and ``d`` only when it is raised."""
    if known_doc is not None and not known_doc(docid):
        raise CorpusInputError(
            str(path), f"line {n}", f"document id {docid!r} is not in the corpus"
        )
    if (qid, docid) in seen:
        raise CorpusInputError(
            str(path),
            f"line {n}",
            f"{twice.format(q=qid, d=docid)} (first on line {seen[qid, docid]})",
        )
    seen[qid, docid] = n


def read_run(path: str | os.PathLike, qids: Iterable[str], *, known_doc=None) -> Run:
    """A TREC run (``qid Q0 docid rank score tag``), each query's rows in rank order."""
    qids = set(qids)
    rows: dict[str, list[tuple[int, str, float]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for n, line in _lines(path):
        cols = line.split()
        try:
            qid, _, docid, rank, score = cols[0], cols[1], cols[2], int(cols[3]), float(cols[4])
            if len(cols) != 6:
                raise ValueError
        except (ValueError, IndexError) as exc:
            raise CorpusInputError(
                str(path), f"line {n}", "expected 'qid Q0 docid rank score tag'"
            ) from exc
        if qid not in qids:
            raise CorpusInputError(str(path), f"line {n}", f"query id {qid!r} is not evaluated")
        _check_row(path, n, qid, docid, known_doc, seen, "{d!r} ranked twice for {q!r}")
        rows.setdefault(qid, []).append((rank, docid, score))
    return {q: [(d, s) for _, d, s in sorted(r, key=lambda x: x[0])] for q, r in rows.items()}


def write_run(
    path: str | os.PathLike, run: Mapping[str, Sequence[tuple[str, float]]], tag: str
) -> None:
    """Write a TREC run atomically; scores keep every digit, so reading it back ranks alike."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            for rank, (docid, score) in enumerate(docs, 1):
                f.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")
    os.replace(tmp, path)


# ---- measures --------------------------------------------------------------------------------
def titles_run(run: Run, title_of) -> Run:
    """Passage run -> title run: each article ranked by its best passage."""
    out: Run = {}
    for qid, docs in run.items():
        best: dict[str, float] = {}
        for docid, score in docs:
            best.setdefault(title_of(docid), score)
        out[qid] = list(best.items())
    return out


def ranking_metrics(qrels: Qrels, run: Run, cutoffs: Sequence[int]) -> dict[str, float]:
    """Mean R@k (each cutoff), nDCG@10 and RR@10 over every judged query, by ``ir_measures``."""
    import ir_measures
    from ir_measures import RR, R, ScoredDoc, nDCG

    measures = [R @ k for k in cutoffs] + [nDCG @ 10, RR @ 10]
    docs = [ScoredDoc(q, d, float(s)) for q, ds in run.items() if q in qrels for d, s in ds]
    totals = dict.fromkeys(measures, 0.0)
    for m in ir_measures.iter_calc(measures, qrels, docs):
        totals[m.measure] += m.value
    n = max(len(qrels), 1)  # unranked judged queries score 0 (trec_eval -c)
    return {str(m): v / n for m, v in totals.items()}


def answer_recall(
    topics: Sequence[Topic], texts: Mapping[str, Sequence[str]], cutoffs: Sequence[int]
) -> dict[str, float]:
    """Fraction of queries with an answer in the first k passage texts, each cutoff k."""
    hits = dict.fromkeys(cutoffs, 0)
    for t in topics:
        first = next(
            (i for i, text in enumerate(texts.get(t.qid, ())) if has_answer(text, t.answers)), None
        )
        for k in cutoffs:
            hits[k] += first is not None and first < k
    n = max(len(topics), 1)
    return {f"answer_recall@{k}": hits[k] / n for k in cutoffs}


def check_answers(topics: Topics) -> None:
    """Every QA row needs an answer with a letter or digit; name the first row that lacks one."""
    for t in topics.items:
        if not any(c.isalnum() for a in t.answers for c in a):  # "." would match everywhere
            raise CorpusInputError(
                topics.path,
                t.position,
                f"query {t.qid!r} has no (non-empty) answer: give each row a letter or digit "
                "in answer / golden_answers",
            )
