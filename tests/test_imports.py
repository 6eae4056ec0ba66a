"""Import arrows between rankface's layers: data/ (file formats, collections) sits below retrieval/, which reads
corpora and TREC files through it; nothing in data/ imports retrieval/ when it loads."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import rankface.data, rankface.data.corpus, rankface.data.ir, rankface.data.mining, rankface.data.trec
# rankface/__init__ installs the pyserini Java hook (rankface.retrieval.java_hook: no import of its own).
print(*sorted(m for m in sys.modules if m.startswith("rankface.retrieval.")))
"""


def test_data_modules_import_nothing_from_retrieval():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["rankface.retrieval.java_hook"]


def test_retrieval_reads_trec_files_with_the_data_layer_readers():
    from rankface.data import trec
    from rankface.retrieval import read_qrels, read_run, write_run
    from rankface.retrieval import trec as retrieval_trec

    assert (read_run, read_qrels, write_run) == (trec.read_run, trec.read_qrels, trec.write_run)
    assert retrieval_trec.TrecFormatError is trec.TrecFormatError
