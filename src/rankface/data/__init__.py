"""Data: IR collections (ir_datasets ids and local folders) and training groups; face data lives in `faces`."""

from rankface.data.ir import (
    DataUnavailableError,
    GroupReport,
    IRCollection,
    TrainingGroup,
    build_training_groups,
    load_collection,
)

__all__ = [
    "DataUnavailableError",
    "GroupReport",
    "IRCollection",
    "TrainingGroup",
    "build_training_groups",
    "load_collection",
]
