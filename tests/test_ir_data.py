"""Local collections through ir_datasets, clear errors for missing data, and training-group sampling."""

from __future__ import annotations

import json

import pytest

from rankface.data.ir import (
    DataUnavailableError,
    GroupReport,
    TrainingGroup,
    build_training_groups,
    load_collection,
)
from rankface.retrieval.lucene import Hit
from rankface.retrieval.trec import TrecFormatError, write_run

DOCS = {"MED-1": "statins and cancer", "MED-2": "green tea", "MED-3": "vitamin d levels", "MED-4": "eggs"}


def _write_folder(root, name="tinycorpus", beir=False):
    folder = root / name
    folder.mkdir()
    with (folder / "corpus.jsonl").open("w") as handle:
        for docid, text in DOCS.items():
            row = {"_id": docid, "title": "T", "text": text} if beir else {"id": docid, "contents": text}
            handle.write(json.dumps(row) + "\n")
    (folder / "queries.train.tsv").write_text("P-1\tdo statins work ?\nP-2\ttea\n")
    (folder / "queries.test.tsv").write_text("P-9\tvitamin d\n")
    (folder / "qrels.train.txt").write_text("P-1 0 MED-1 3\nP-1 0 MED-2 0\nP-2 0 MED-2 2\n")
    (folder / "qrels.test.txt").write_text("P-9 0 MED-3 1\n")
    write_run(folder / "run.train.bm25.txt", {"P-1": {"MED-1": 2.0, "MED-4": 1.0}})
    (folder / "README.md").write_text("not data\n")
    return folder


def test_local_folder_is_an_ir_datasets_dataset(tmp_path):
    import ir_datasets

    folder = _write_folder(tmp_path)
    col = load_collection(folder)
    assert col.splits == ("train", "test")
    assert col.default_split == "test"
    assert col.docs() == DOCS
    assert col.doc_text("MED-3") == "vitamin d levels"
    with pytest.raises(KeyError, match="MED-404"):
        col.doc_text("MED-404")
    assert col.queries("train") == {"P-1": "do statins work ?", "P-2": "tea"}
    assert col.queries() == {"P-9": "vitamin d"}
    assert col.qrels("train") == {"P-1": {"MED-1": 3, "MED-2": 0}, "P-2": {"MED-2": 2}}
    assert col.has_run("train") and not col.has_run("test")
    assert col.run("train") == {"P-1": {"MED-1": 2.0, "MED-4": 1.0}}
    assert col.corpus_path == folder.resolve() / "corpus.jsonl"
    with pytest.raises(KeyError, match="no split 'dev'"):
        col.queries("dev")
    # the same data through the plain ir_datasets API
    ds = ir_datasets.load(col.dataset_ids["train"])
    assert [q.query_id for q in ds.queries_iter()] == ["P-1", "P-2"]
    assert ds.docs_store().get("MED-2").text == "green tea"
    assert [(s.query_id, s.doc_id) for s in ds.scoreddocs_iter()] == [("P-1", "MED-1"), ("P-1", "MED-4")]
    # the docs lookup store is written into the writable cache, never beside the source data
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["corpus.jsonl", "queries.train.tsv", "queries.test.tsv", "qrels.train.txt", "qrels.test.txt",
         "run.train.bm25.txt", "README.md"]
    )
    # loading again (or another folder with the same name) works
    assert load_collection(folder).queries("test") == {"P-9": "vitamin d"}
    other = tmp_path / "elsewhere"
    other.mkdir()
    col2 = load_collection(_write_folder(other))
    assert col2.dataset_ids["test"] != col.dataset_ids["test"]


def test_beir_corpus_and_single_split(tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "Title", "text": "body"}) + "\n"
                                         + json.dumps({"_id": "2", "title": "", "text": "only body"}) + "\n")
    (folder / "queries.tsv").write_text("7\twhat\n")
    (folder / "qrels.txt").write_text("7 0 2 1\n")
    col = load_collection(str(folder))
    assert col.splits == ("all",)
    assert col.default_split == "all"
    assert col.docs() == {"1": "Title body", "2": "only body"}
    assert col.qrels() == {"7": {"2": 1}}


def test_docs_tsv_folder(tmp_path):
    folder = tmp_path / "tsvcol"
    folder.mkdir()
    (folder / "collection.tsv").write_text("0\tfirst passage\n1\tsecond passage\n")
    (folder / "queries.dev.tsv").write_text("q\tpassage\n")
    col = load_collection(folder)
    assert col.docs() == {"0": "first passage", "1": "second passage"}
    assert col.doc_text("1") == "second passage"
    with pytest.raises(KeyError, match="no qrels"):
        col.qrels("dev")


def test_malformed_local_files_name_file_and_line(tmp_path):
    folder = _write_folder(tmp_path)
    (folder / "queries.test.tsv").write_text("P-9\tvitamin d\nP-10 no tab here\n")
    with pytest.raises(ValueError, match=r"queries.test.tsv:2: expected `qid<TAB>text`"):
        load_collection(folder)
    (folder / "queries.test.tsv").write_text("P-9\tvitamin d\n")
    (folder / "qrels.test.txt").write_text("P-9 0 MED-3\n")
    with pytest.raises(TrecFormatError, match=r"qrels.test.txt:1: expected 4 whitespace-separated columns"):
        load_collection(folder)


def test_missing_data_explains_the_local_layout(tmp_path):
    with pytest.raises(DataUnavailableError, match=r"neither an existing folder.*corpus.jsonl.*queries"):
        load_collection(tmp_path / "no-such-folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailableError, match="no corpus.jsonl"):
        load_collection(tmp_path / "empty")


def test_failed_download_says_how_to_supply_data_locally(tmp_path):
    """An ir_datasets id whose source cannot be reached (a closed local port: no internet involved)."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TsvDocs, TsvQueries
    from ir_datasets.util import Download, RequestsDownload

    def unreachable(name):
        return Download([RequestsDownload(f"http://127.0.0.1:9/{name}")], cache_path=str(tmp_path / name))

    name = "rankface-test-unreachable/test"
    if name not in list(ir_datasets.registry):
        ir_datasets.registry.register(name, Dataset(TsvDocs(unreachable("docs.tsv")),
                                                    TsvQueries(unreachable("queries.tsv"))))
    col = load_collection(name)
    assert col.splits == ("test",)
    with pytest.raises(DataUnavailableError, match=r"could not fetch.*Supply the data locally.*corpus.jsonl"):
        col.queries("test")
    with pytest.raises(DataUnavailableError, match="documents"):
        col.docs()


def test_ir_datasets_parent_id_lists_child_splits(tmp_path):
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    (tmp_path / "docs.tsv").write_text("a\talpha\nb\tbeta\n")
    (tmp_path / "q1.tsv").write_text("1\tone\n")
    (tmp_path / "q2.tsv").write_text("2\ttwo\n")
    (tmp_path / "qrels.txt").write_text("2 0 b 1\n")
    docs = TsvDocs(LocalDownload(tmp_path / "docs.tsv"))
    base = f"rankface-test-parent-{tmp_path.name}"
    ir_datasets.registry.register(base, Dataset(docs))
    ir_datasets.registry.register(f"{base}/train", Dataset(docs, TsvQueries(LocalDownload(tmp_path / "q1.tsv"))))
    ir_datasets.registry.register(f"{base}/test", Dataset(docs, TsvQueries(LocalDownload(tmp_path / "q2.tsv")),
                                                          TrecQrels(LocalDownload(tmp_path / "qrels.txt"), {})))
    col = load_collection(base)
    assert set(col.splits) == {"train", "test"}
    assert col.queries("test") == {"2": "two"}
    assert col.qrels("test") == {"2": {"b": 1}}
    assert col.docs() == {"a": "alpha", "b": "beta"}
    exported = col.corpus_path  # ir_datasets ids are exported once as corpus.jsonl for indexing
    assert [json.loads(line) for line in exported.read_text().splitlines()] == [
        {"id": "a", "contents": "alpha"}, {"id": "b", "contents": "beta"}]


# ---------------------------------------------------------------------------------------------- training groups
def _group_fixture():
    queries = {f"q{i}": f"text {i}" for i in range(1, 8)}
    qrels = {
        "q1": {"p1": 2, "p2": 1, "j0": 0},  # j0: judged non-relevant -> allowed as negative
        "q2": {"j0": 0},  # no positive
        "q3": {"p1": 1},  # absent from the run
        "q4": {"p1": 1, "p2": 1},  # window holds only labelled docs
        "q5": {"p1": 1},  # only 2 candidates < K
        "q6": {"p1": 1},  # excluded
        "q7": {"ghost": 2},  # its only positive is not in the corpus
        "q_no_text": {"p1": 1},
    }
    run = {
        "q1": {"p1": 9.0, "n1": 8.0, "p2": 7.0, "j0": 6.0, "n2": 5.0, "unknown": 4.5, "n3": 4.0, "n4": 3.0,
               "far": 1.0},
        "q2": {"n1": 1.0},
        "q4": {"p2": 2.0, "p1": 1.0},
        "q5": {"n1": 3.0, "p1": 2.0, "n2": 1.0},
        "q6": {"n1": 1.0},
        "q7": {"n1": 1.0},
        "q_run_only": {"n1": 1.0},
    }
    corpus = {"p1", "p2", "j0", "n1", "n2", "n3", "n4", "far"}
    return queries, qrels, run, corpus


def test_training_groups_sampling_and_report():
    queries, qrels, run, corpus = _group_fixture()
    groups, report = build_training_groups(queries, qrels, run, num_negatives=3, rank_window=(1, 8),
                                           exclude=["q6"], doc_ids=corpus, seed=1)
    assert isinstance(report, GroupReport)
    assert all(isinstance(g, TrainingGroup) for g in groups)
    by_q = {}
    for g in groups:
        by_q.setdefault(g.qid, []).append(g)
    assert set(by_q) == {"q1", "q5"}
    assert [g.positive_docid for g in by_q["q1"]] == ["p1", "p2"]  # positives="all", best grade first
    q1_window = {"n1", "j0", "n2", "n3", "n4"}  # ranks 1-8 minus labelled p1, p2 and the unknown docid
    for g in by_q["q1"]:
        assert len(g.negative_docids) == 3 and len(set(g.negative_docids)) == 3
        assert set(g.negative_docids) <= q1_window
    (g5,) = by_q["q5"]
    assert len(g5.negative_docids) == 3 and set(g5.negative_docids) <= {"n1", "n2"}  # with replacement
    assert report.as_dict() == {
        "queries_total": 7,
        "queries_used": 2,
        "queries_excluded": 1,
        "queries_without_positive": 2,
        "queries_missing_from_run": 1,
        "queries_without_candidates": 1,
        "queries_sampled_with_replacement": 1,
        "groups": 3,
        "positives_missing_from_corpus": 1,
        "run_docids_unknown_to_corpus": 1,
        "labelled_docs_removed_from_window": 2 + 2 + 1,  # q1: p1, p2; q4: p2, p1; q5: p1
        "qrels_queries_without_text": 1,
        "run_queries_without_text": 1,
        "examples": {"without_positive": ["q2", "q7"], "missing_from_run": ["q3"],
                     "without_candidates": ["q4"], "sampled_with_replacement": ["q5"]},
    }
    d = report.as_dict()
    assert d["queries_total"] == sum(d[k] for k in ("queries_used", "queries_excluded", "queries_without_positive",
                                                    "queries_missing_from_run", "queries_without_candidates"))


def test_training_groups_seeded_and_window():
    queries, qrels, run, _corpus = _group_fixture()
    a, _ = build_training_groups(queries, qrels, run, 2, rank_window=(1, 8), seed=5)
    b, _ = build_training_groups(queries, qrels, run, 2, rank_window=(1, 8), seed=5)
    assert a == b
    seen = set()
    for seed in range(30):
        groups, _ = build_training_groups({"q1": "x"}, qrels, run, 2, rank_window=(1, 8), seed=seed)
        seen.update(n for g in groups for n in g.negative_docids)
    assert seen == {"n1", "j0", "n2", "unknown", "n3", "n4"}  # without doc_ids, unknown ids are not filtered
    # a window of ranks 9..9 holds only "far"
    groups, report = build_training_groups({"q1": "x"}, qrels, run, 2, rank_window=(9, 20))
    assert all(g.negative_docids == ("far", "far") for g in groups)
    assert report.queries_sampled_with_replacement == 1


def test_training_groups_top_positive_and_hits_input():
    queries, qrels, run, _corpus = _group_fixture()
    hits = {q: [Hit(d, s, r) for r, (d, s) in enumerate(sorted(docs.items(), key=lambda kv: -kv[1]), 1)]
            for q, docs in run.items()}
    from_dict, rep1 = build_training_groups(queries, qrels, run, 2, positives="top", min_positive_grade=2, seed=3)
    from_hits, rep2 = build_training_groups(queries, qrels, hits, 2, positives="top", min_positive_grade=2, seed=3)
    assert from_dict == from_hits and rep1 == rep2
    assert [(g.qid, g.positive_docid) for g in from_dict] == [("q1", "p1"), ("q7", "ghost")]
    # grade-1 docs are not positives at min grade 2 but still never negatives
    assert all("p2" not in g.negative_docids for g in from_dict)


def test_training_groups_sampled_positive_is_one_of_the_best_graded():
    qrels = {"q": {"a": 2, "b": 2, "c": 2, "low": 1}}
    run = {"q": {f"n{i}": float(-i) for i in range(10)}}
    drawn = set()
    for seed in range(40):
        groups, report = build_training_groups({"q": "x"}, qrels, run, 2, positives="sampled", seed=seed)
        assert len(groups) == 1 and report.groups == 1
        drawn.add(groups[0].positive_docid)
    assert drawn == {"a", "b", "c"}  # every best-graded document comes up, the grade-1 one never


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_negatives": 0}, "num_negatives"),
        ({"num_negatives": 1, "rank_window": (0, 5)}, "rank_window"),
        ({"num_negatives": 1, "positives": "best"}, "positives"),
        ({"num_negatives": 1, "min_positive_grade": 0}, "grade"),
    ],
)
def test_training_groups_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_training_groups({"q": "x"}, {"q": {"d": 1}}, {"q": {"n": 1.0}}, **kwargs)
