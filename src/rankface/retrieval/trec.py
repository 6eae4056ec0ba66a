"""TREC run and qrels files: the readers and writers live in `rankface.data.trec` (data/ is the layer below
retrieval/, so that both can use them); this module keeps the names where retrieval users look for them."""

from __future__ import annotations

from rankface.data.trec import (
    QRELS_FORMAT,
    RUN_FORMAT,
    TrecFormatError,
    read_qrels,
    read_run,
    write_qrels,
    write_run,
)

__all__ = ["QRELS_FORMAT", "RUN_FORMAT", "TrecFormatError", "read_qrels", "read_run", "write_qrels", "write_run"]
