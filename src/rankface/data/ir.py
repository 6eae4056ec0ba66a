"""IR collections (ir_datasets ids and local folders, one code path) and training groups built from qrels + a run.

A local folder is registered with ir_datasets as `rankface-local/<name>` (documents) and
`rankface-local/<name>/<split>` (documents, queries, qrels and optionally a run), so everything downstream reads
both kinds of collection the same way. Local layout::

    corpus.jsonl            {"id", "contents"} or BEIR {"_id", "title", "text"} per line
      (or docs.tsv / collection.tsv: docid<TAB>text; read by `rankface.data.corpus`, the parser indexing uses)
    queries.<split>.tsv     qid<TAB>text            (or queries.tsv: the single split "all")
    qrels.<split>.txt       qid 0 docid grade       (or qrels.txt)
    run.<split>.<any>       qid Q0 docid rank score tag   (optional first-stage run)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from rankface.data.corpus import iter_corpus
from rankface.data.trec import read_qrels, read_run
from rankface.errors import UserError
from rankface.utils.io import read_lines
from rankface.utils.ties import ranked

logger = logging.getLogger(__name__)

__all__ = [
    "LOCAL_LAYOUT",
    "DataUnavailableError",
    "GroupReport",
    "IRCollection",
    "TrainingGroup",
    "build_training_groups",
    "load_collection",
    "read_queries_tsv",
]

LOCAL_LAYOUT = (
    "a folder with corpus.jsonl ({\"id\",\"contents\"} or BEIR {\"_id\",\"title\",\"text\"} per line) or "
    "docs.tsv/collection.tsv (docid<TAB>text), queries.<split>.tsv or queries.tsv (qid<TAB>text), "
    "qrels.<split>.txt or qrels.txt (TREC qrels `qid 0 docid grade`), optionally run.<split>.* (TREC run)"
)
_DOC_FILES = ("corpus.jsonl", "docs.tsv", "collection.tsv")
_SINGLE_SPLIT = "all"
_LOCAL_PREFIX = "rankface-local"
_registered_paths: dict[str, str] = {}  # ir_datasets name -> resolved folder it was registered for


class DataUnavailableError(UserError, RuntimeError):
    """The data behind a collection cannot be read (download failed, files missing).

    A `UserError` (the user can supply the data) and, as before, a `RuntimeError`.
    """


def _doc_text(doc: Any) -> str:
    return doc.default_text() if hasattr(doc, "default_text") else doc.text


# ---------------------------------------------------------------------------------------------------- collection
class IRCollection:
    """Documents, query splits, qrels and runs of one collection, read through ir_datasets.

    Use `load_collection(spec)` to build one.

    Attributes:
        name: the spec it was loaded from (a folder path or an ir_datasets id).
        dataset_ids: `{split: ir_datasets id}`.
        docs_id: the ir_datasets id of the documents.
        local_dir: the folder for a local collection, else None.
    """

    def __init__(self, name: str, docs_id: str, dataset_ids: Mapping[str, str], local_dir: Path | None = None,
                 corpus_file: Path | None = None, run_files: Mapping[str, Path] | None = None) -> None:
        self.name = name
        self.docs_id = docs_id
        self.dataset_ids = dict(dataset_ids)
        self.local_dir = local_dir
        self._corpus_file = corpus_file
        self._run_files = dict(run_files or {})
        self._docs: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"IRCollection({self.name!r}, splits={list(self.splits)})"

    # -------------------------------------------------------------------- access helpers
    def _dataset(self, dataset_id: str):
        import ir_datasets

        return ir_datasets.load(dataset_id)

    def _split_id(self, split: str | None) -> str:
        split = self.default_split if split is None else split
        if split not in self.dataset_ids:
            raise KeyError(f"collection {self.name!r} has no split {split!r}; it has {list(self.splits)}")
        return self.dataset_ids[split]

    def _unavailable(self, what: str, err: BaseException) -> DataUnavailableError:
        if self.local_dir is not None:
            how = f"check the files in {self.local_dir}; expected {LOCAL_LAYOUT}"
        else:
            how = (
                f"ir_datasets could not fetch {self.name!r} (no network, or the source needs a manual download). "
                f"Supply the data locally instead, as a folder named in place of the id: {LOCAL_LAYOUT}"
            )
        return DataUnavailableError(f"cannot read the {what} of {self.name!r}: {type(err).__name__}: {err}. {how}")

    # -------------------------------------------------------------------- public API
    @property
    def splits(self) -> tuple[str, ...]:
        """Names of the query splits (e.g. `("train", "dev", "test")`, or `("all",)` for a single one)."""
        return tuple(self.dataset_ids)

    @property
    def default_split(self) -> str:
        """`test` when present, else the only split."""
        if "test" in self.dataset_ids:
            return "test"
        if len(self.dataset_ids) == 1:
            return next(iter(self.dataset_ids))
        raise ValueError(f"collection {self.name!r} has several splits {list(self.splits)}: name one")

    def docs(self) -> dict[str, str]:
        """`{docid: text}` for the whole corpus (read once, then cached)."""
        if self._docs is None:
            try:
                dataset = self._dataset(self.docs_id)
                if not dataset.has_docs():
                    raise DataUnavailableError(f"ir_datasets id {self.docs_id!r} has no documents")
                docs: dict[str, str] = {}
                for doc in dataset.docs_iter():
                    docs[str(doc.doc_id)] = _doc_text(doc)  # JSON corpora may hold numeric ids
            except UserError:  # already names the file and line
                raise
            except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
                raise self._unavailable("documents", err) from err
            if not docs:
                raise DataUnavailableError(f"collection {self.name!r} has no documents")
            self._docs = docs
        return self._docs

    def doc_ids(self) -> set[str]:
        """The set of document ids."""
        return set(self.docs())

    def doc_text(self, docid: str) -> str:
        """Text of one document; `KeyError` naming the collection when unknown."""
        docs = self.docs()
        try:
            return docs[docid]
        except KeyError:
            raise KeyError(f"document {docid!r} is not in collection {self.name!r}") from None

    def queries(self, split: str | None = None) -> dict[str, str]:
        """`{qid: text}` of a split (default: `default_split`)."""
        dataset_id = self._split_id(split)
        try:
            return {str(q.query_id): _doc_text(q) for q in self._dataset(dataset_id).queries_iter()}
        except UserError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
            raise self._unavailable(f"queries ({dataset_id})", err) from err

    def qrels(self, split: str | None = None) -> dict[str, dict[str, int]]:
        """`{qid: {docid: grade}}` of a split (judged non-relevant documents kept with their grade, e.g. 0)."""
        dataset_id = self._split_id(split)
        dataset = self._dataset(dataset_id)
        if not dataset.has_qrels():
            raise KeyError(f"split {split!r} of {self.name!r} has no qrels")
        qrels: dict[str, dict[str, int]] = {}
        try:
            for q in dataset.qrels_iter():
                qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        except UserError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
            raise self._unavailable(f"qrels ({dataset_id})", err) from err
        return qrels

    def has_run(self, split: str | None = None) -> bool:
        """Whether the split comes with a first-stage run (a local `run.<split>.*` or ir_datasets scoreddocs)."""
        split = self.default_split if split is None else split
        if self.local_dir is not None:
            return split in self._run_files
        return self._dataset(self._split_id(split)).has_scoreddocs()

    def run(self, split: str | None = None) -> dict[str, dict[str, float]]:
        """The split's first-stage run `{qid: {docid: score}}` (local files are read strictly)."""
        split = self.default_split if split is None else split
        if self.local_dir is not None:
            if split not in self._run_files:
                raise KeyError(f"no run.{split}.* file in {self.local_dir}")
            return read_run(self._run_files[split])
        dataset_id = self._split_id(split)
        dataset = self._dataset(dataset_id)
        if not dataset.has_scoreddocs():
            raise KeyError(f"ir_datasets id {dataset_id!r} has no first-stage run (scoreddocs)")
        run: dict[str, dict[str, float]] = {}
        try:
            for sd in dataset.scoreddocs_iter():
                run.setdefault(sd.query_id, {})[sd.doc_id] = float(sd.score)
        except (OSError, RuntimeError, ValueError) as err:
            raise self._unavailable(f"run ({dataset_id})", err) from err
        return run

    @property
    def corpus_path(self) -> Path:
        """A corpus file that `rankface.retrieval.build_index` reads.

        For a local folder, its own `corpus.jsonl`/docs TSV; for an ir_datasets id, a `corpus.jsonl` exported
        once (atomically) under `$IR_DATASETS_HOME/rankface-export/`.
        """
        if self._corpus_file is not None:
            return self._corpus_file
        import ir_datasets

        from rankface.utils.io import atomic_write

        target = ir_datasets.util.home_path() / "rankface-export" / re.sub(r"[^\w.-]+", "_", self.docs_id) / \
            "corpus.jsonl"
        if not target.is_file():
            docs = self.docs()
            with atomic_write(target) as handle:
                for docid, text in docs.items():
                    handle.write(json.dumps({"id": docid, "contents": text}, ensure_ascii=False) + "\n")
        self._corpus_file = target
        return target


# ---------------------------------------------------------------------------------------------------- loading
def read_queries_tsv(path: str | os.PathLike) -> dict[str, str]:
    """Strictly read a `qid<TAB>text` topics file (UTF-8, a byte-order mark ignored).

    A malformed line, a repeated id or an id with whitespace (a TREC run cannot hold it) raises `UserError` naming
    file and line. Queries with empty text are kept, counted and reported as a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"queries file not found: {path} (expected `qid<TAB>text` lines)")
    queries: dict[str, str] = {}
    empty: list[str] = []
    for lineno, line in read_lines(path):
        if not line.strip():
            raise UserError(f"{path}:{lineno}: expected `qid<TAB>text`, found an empty line")
        cols = line.split("\t")
        if len(cols) != 2:
            raise UserError(f"{path}:{lineno}: expected `qid<TAB>text` (2 tab-separated fields), "
                            f"found {len(cols)} field(s): {line[:80]!r}")
        qid, text = cols
        if not qid.strip():
            raise UserError(f"{path}:{lineno}: the query id (the field before the tab) is empty; expected "
                            f"`qid<TAB>text`, found {line[:80]!r}")
        if any(c.isspace() for c in qid):
            raise UserError(f"{path}:{lineno}: query id {qid!r} contains whitespace; expected an id without spaces "
                            "(a TREC run cannot hold it)")
        if qid in queries:
            raise UserError(f"{path}:{lineno}: query id {qid!r} occurs twice; expected each id once")
        queries[qid] = text
        if not text.strip():
            empty.append(qid)
    if empty:
        logger.warning("%s: %d of %d queries have empty text (e.g. %s); they are kept", path, len(empty),
                       len(queries), ", ".join(empty[:5]))
    return queries


def _cache_link(src: Path, cache_dir: Path) -> Path:
    """Link (or copy) `src` into the writable cache: ir_datasets writes its lookup store beside the file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    dst = cache_dir / src.name
    if dst.is_symlink() and os.path.realpath(dst) == str(src.resolve()):
        return dst
    # Made under a private name and renamed over `dst`: processes loading the same folder at once (e.g. the ranks
    # of a multi-process training run) never see a missing or half-copied file.
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    try:
        tmp.symlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


@functools.cache
def _strict_formats() -> SimpleNamespace:
    """ir_datasets formats for a local folder that read through rankface's own strict parsers.

    A local folder is registered with ir_datasets, and everything reads it through ir_datasets; these classes keep
    ir_datasets' plumbing (the document lookup store in the cache, the `Dataset` API) but parse each file with
    `rankface.data.corpus` / `read_queries_tsv` / `data.trec`, the parsers indexing and the CLI use. A folder is
    then read one way whatever reads it. (Made on first use: ir_datasets is imported lazily.)
    """
    from ir_datasets.formats import (
        GenericDoc,
        GenericQuery,
        GenericScoredDoc,
        JsonlDocs,
        TrecQrel,
        TrecQrels,
        TrecScoredDocs,
        TsvQueries,
    )
    from ir_datasets.util import LocalDownload

    class StrictDocs(JsonlDocs):
        def __init__(self, source: Path, cached: Path) -> None:
            # The lookup store lives beside the cached link, under a name of its own: a store built by an older
            # rankface (ir_datasets' own parser, other fields) is not read back.
            super().__init__(LocalDownload(cached), doc_cls=GenericDoc, docstore_path=f"{cached}.strict.pklz4")
            self._source = source

        def _iter(self):
            return (GenericDoc(docid, text) for docid, text in iter_corpus(self._source))

    class StrictQueries(TsvQueries):
        def __init__(self, path: Path) -> None:
            super().__init__(LocalDownload(path))
            self._source = path

        def queries_iter(self):
            return (GenericQuery(qid, text) for qid, text in read_queries_tsv(self._source).items())

    class StrictQrels(TrecQrels):
        def __init__(self, path: Path) -> None:
            super().__init__(LocalDownload(path), {})
            self._source = path

        def qrels_iter(self):
            return (TrecQrel(qid, docid, grade, "0") for qid, docs in read_qrels(self._source).items()
                    for docid, grade in docs.items())

    class StrictScoredDocs(TrecScoredDocs):
        def __init__(self, path: Path) -> None:
            super().__init__(LocalDownload(path))
            self._source = path

        def scoreddocs_iter(self):
            return (GenericScoredDoc(qid, docid, score) for qid, docs in read_run(self._source).items()
                    for docid, score in docs.items())

    return SimpleNamespace(docs=StrictDocs, queries=StrictQueries, qrels=StrictQrels, scoreddocs=StrictScoredDocs)


def _local_collection(folder: Path) -> IRCollection:
    import ir_datasets
    from ir_datasets.datasets.base import Dataset

    folder = folder.resolve()
    docs_file = next((folder / n for n in _DOC_FILES if (folder / n).is_file()), None)
    if docs_file is None:
        raise DataUnavailableError(f"{folder}: no corpus.jsonl, docs.tsv or collection.tsv. Expected {LOCAL_LAYOUT}")
    queries: dict[str, Path] = {}
    qrels: dict[str, Path] = {}
    runs: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if not path.is_file():
            continue
        if m := re.fullmatch(r"queries\.(.+)\.tsv", name):
            queries[m.group(1)] = path
        elif name == "queries.tsv":
            queries[_SINGLE_SPLIT] = path
        elif m := re.fullmatch(r"qrels\.(.+)\.txt", name):
            qrels[m.group(1)] = path
        elif name == "qrels.txt":
            qrels[_SINGLE_SPLIT] = path
        elif m := re.fullmatch(r"run\.([^.]+)\..+", name):
            runs.setdefault(m.group(1), []).append(path)
    if not queries:
        raise DataUnavailableError(f"{folder}: no queries.<split>.tsv or queries.tsv. Expected {LOCAL_LAYOUT}")
    orphans = sorted((set(qrels) | set(runs)) - set(queries))
    if orphans:
        raise ValueError(f"{folder}: qrels/run files for split(s) {orphans} have no queries.<split>.tsv")
    ambiguous = {s: [p.name for p in ps] for s, ps in runs.items() if len(ps) > 1}
    if ambiguous:
        raise ValueError(f"{folder}: more than one run file for a split: {ambiguous}; keep one run.<split>.* each")
    for path in queries.values():
        read_queries_tsv(path)
    for path in qrels.values():
        read_qrels(path)  # strict check: a malformed line raises TrecFormatError with file and line

    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    base = f"{_LOCAL_PREFIX}/{folder.name}"
    if _registered_paths.get(base, str(folder)) != str(folder):
        base = f"{base}-{digest}"  # another folder with the same name is registered already
    cache = ir_datasets.util.home_path() / _LOCAL_PREFIX / f"{folder.name}-{digest}"
    docs = _strict_formats().docs(docs_file, _cache_link(docs_file, cache))
    names = {split: f"{base}/{split}" for split in queries}
    if base not in _registered_paths:
        ir_datasets.registry.register(base, Dataset(docs))
        formats = _strict_formats()
        for split, qpath in queries.items():
            parts: list = [docs, formats.queries(qpath)]
            if split in qrels:
                parts.append(formats.qrels(qrels[split]))
            if split in runs:
                parts.append(formats.scoreddocs(runs[split][0]))
            ir_datasets.registry.register(names[split], Dataset(*parts))
        _registered_paths[base] = str(folder)
    # Splits in a conventional order, then any other.
    order = {"train": 0, "dev": 1, "test": 2}
    ordered = dict(sorted(names.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))
    return IRCollection(str(folder), base, ordered, local_dir=folder, corpus_file=docs_file,
                        run_files={s: ps[0] for s, ps in runs.items()})


def load_collection(spec: str | os.PathLike) -> IRCollection:
    """Open a collection from a local folder or an ir_datasets id.

    Args:
        spec: a folder (layout in this module's docstring, e.g. `../shared/data/ir/nfcorpus`) or an ir_datasets
            id: one with queries (e.g. `beir/nfcorpus/test`, a single split named by its last part) or a parent
            whose registered children have queries (e.g. `beir/nfcorpus`: splits `train`, `dev`, `test`).

    Raises:
        DataUnavailableError: neither an existing folder nor a known ir_datasets id; or a folder without the
            expected files.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local_collection(path)
    spec = str(spec)
    import ir_datasets

    try:
        dataset = ir_datasets.load(spec)
    except KeyError:
        raise DataUnavailableError(
            f"{spec!r} is neither an existing folder nor a registered ir_datasets id. Give an ir_datasets id "
            f"(e.g. 'beir/nfcorpus/test') or a local folder: {LOCAL_LAYOUT}"
        ) from None
    if dataset.has_queries():
        return IRCollection(spec, spec, {spec.rsplit("/", 1)[-1]: spec})
    children = {
        name[len(spec) + 1:]: name
        for name in list(ir_datasets.registry)
        if name.startswith(spec + "/") and ir_datasets.load(name).has_queries()
    }
    if not children:
        raise DataUnavailableError(f"ir_datasets id {spec!r} has no queries and no sub-dataset with queries")
    return IRCollection(spec, spec, children)


# ---------------------------------------------------------------------------------------------------- training groups
@dataclass(frozen=True)
class TrainingGroup:
    """One training example: a query, one labelled positive and `K` sampled negatives (docids)."""

    qid: str
    positive_docid: str
    negative_docids: tuple[str, ...]


class CountingReport:
    """Counts of what a data step did with every query, with up to 5 example query ids per kind of problem."""

    examples: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _note(self, key: str, qid: str) -> None:
        bucket = self.examples.setdefault(key, [])
        if len(bucket) < 5:
            bucket.append(qid)


@dataclass
class GroupReport(CountingReport):
    """What `build_training_groups` did with every query, so that nothing is skipped silently.

    Query-level counts add up: `queries_total = queries_used + queries_excluded + queries_without_positive +
    queries_missing_from_run + queries_without_candidates`.
    """

    queries_total: int = 0
    queries_used: int = 0
    queries_excluded: int = 0
    queries_without_positive: int = 0
    queries_missing_from_run: int = 0
    queries_without_candidates: int = 0
    queries_sampled_with_replacement: int = 0
    groups: int = 0
    positives_missing_from_corpus: int = 0
    run_docids_unknown_to_corpus: int = 0
    labelled_docs_removed_from_window: int = 0
    qrels_queries_without_text: int = 0
    run_queries_without_text: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)


def _ranked_docids(ranking: Mapping[str, float] | Sequence[Any]) -> list[str]:
    if isinstance(ranking, Mapping):
        return [d for d, _ in ranked(ranking)]
    return [h.docid for h in sorted(ranking, key=lambda h: h.rank)]


def build_training_groups(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float] | Sequence[Any]],
    num_negatives: int,
    rank_window: tuple[int, int] = (1, 100),
    min_positive_grade: int = 1,
    positives: Literal["all", "top", "sampled"] = "all",
    seed: int = 0,
    exclude: Iterable[str] = (),
    doc_ids: Collection[str] | None = None,
) -> tuple[list[TrainingGroup], GroupReport]:
    """Groups of (query, positive, `K` negatives) from qrels and a first-stage run.

    Negatives are drawn (seeded, without replacement) from the run's ranks `rank_window` (1-based, inclusive),
    after removing every document the qrels grade >= 1 for that query (grade-0 judgments stay: they are
    trustworthy negatives) and, when `doc_ids` is given, every run docid not in the corpus. A query with fewer
    than `K` candidates gets its negatives drawn with replacement from the ones it has (counted).

    Args:
        queries: `{qid: text}`: the queries to build groups for, in this order.
        qrels: `{qid: {docid: grade}}`.
        run: `{qid: {docid: score}}` (e.g. `read_run`) or `{qid: [Hit, ...]}`.
        num_negatives: `K`.
        rank_window: `(first, last)` ranks the negatives come from.
        min_positive_grade: the lowest grade that makes a positive.
        positives: `"all"`: one group per positive; `"top"`: one group per query, with its highest-graded
            positive (ties: better run rank, then docid); `"sampled"`: one group per query, its positive drawn
            (seeded) among its highest-graded ones, so that a new seed per epoch varies it.
        seed: sampling seed (the same inputs and seed give the same groups).
        exclude: query ids to leave out (e.g. train queries that duplicate test queries).
        doc_ids: the corpus's document ids; enables the corpus checks.

    Returns:
        `(groups, report)`.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    lo, hi = rank_window
    if not 1 <= lo <= hi:
        raise ValueError(f"rank_window must be (first, last) with 1 <= first <= last, got {rank_window}")
    if positives not in ("all", "top", "sampled"):
        raise ValueError(f"positives must be 'all', 'top' or 'sampled', got {positives!r}")
    if min_positive_grade < 1:
        raise ValueError(f"min_positive_grade must be >= 1 (0 means judged non-relevant), got {min_positive_grade}")
    excluded = {str(q) for q in exclude}
    rng = random.Random(seed)
    report = GroupReport()
    report.qrels_queries_without_text = sum(1 for q in qrels if q not in queries)
    report.run_queries_without_text = sum(1 for q in run if q not in queries)
    groups: list[TrainingGroup] = []
    for qid in queries:
        report.queries_total += 1
        if qid in excluded:
            report.queries_excluded += 1
            continue
        judged = qrels.get(qid, {})
        pos = {d: g for d, g in judged.items() if g >= min_positive_grade}
        if doc_ids is not None:
            missing = [d for d in pos if d not in doc_ids]
            report.positives_missing_from_corpus += len(missing)
            for d in missing:
                del pos[d]
        if not pos:
            report.queries_without_positive += 1
            report._note("without_positive", qid)
            continue
        ranking = run.get(qid)
        ranked = _ranked_docids(ranking) if ranking is not None else []
        if not ranked:
            report.queries_missing_from_run += 1
            report._note("missing_from_run", qid)
            continue
        window = ranked[lo - 1:hi]
        labelled = {d for d, g in judged.items() if g >= 1}
        candidates = []
        for d in window:
            if d in labelled:
                report.labelled_docs_removed_from_window += 1
            elif doc_ids is not None and d not in doc_ids:
                report.run_docids_unknown_to_corpus += 1
            else:
                candidates.append(d)
        if not candidates:
            report.queries_without_candidates += 1
            report._note("without_candidates", qid)
            continue
        short = len(candidates) < num_negatives
        if short:
            report.queries_sampled_with_replacement += 1
            report._note("sampled_with_replacement", qid)
        if positives == "top":
            rank_of = {d: i for i, d in enumerate(ranked)}
            best = min(pos, key=lambda d: (-pos[d], rank_of.get(d, len(ranked)), d))
            chosen = [best]
        elif positives == "sampled":
            top_grade = max(pos.values())
            chosen = [rng.choice(sorted(d for d, g in pos.items() if g == top_grade))]
        else:
            chosen = sorted(pos, key=lambda d: (-pos[d], d))
        for positive in chosen:
            if short:
                negatives = tuple(rng.choice(candidates) for _ in range(num_negatives))
            else:
                negatives = tuple(rng.sample(candidates, num_negatives))
            groups.append(TrainingGroup(qid=qid, positive_docid=positive, negative_docids=negatives))
        report.queries_used += 1
    report.groups = len(groups)
    if report.queries_used < report.queries_total:
        logger.info("training groups: %s", {k: v for k, v in report.as_dict().items() if v and k != "examples"})
    return groups, report
