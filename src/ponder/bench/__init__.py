"""Benchmarks: datasets behind one loader interface, a resumable sampling run that stores every
sample (with its token confidences) in a single SQLite file, and the dense arrays offline
evaluation replays strategies from."""

from ponder.bench.checkers import Checker, Grade, make_checker
from ponder.bench.datasets import (
    Dataset,
    DatasetInfo,
    list_datasets,
    load_dataset,
    parse_dataset,
)
from ponder.bench.items import CheckerName, DatasetSpec, Item, JsonlFields
from ponder.bench.run import BenchRunError, RunSummary, make_config, sample_run
from ponder.bench.store import RunArrays, RunConfig, RunStore, RunStoreError, SampleRecord

__all__ = [
    "BenchRunError",
    "Checker",
    "CheckerName",
    "Dataset",
    "DatasetInfo",
    "DatasetSpec",
    "Grade",
    "Item",
    "JsonlFields",
    "RunArrays",
    "RunConfig",
    "RunStore",
    "RunStoreError",
    "RunSummary",
    "SampleRecord",
    "list_datasets",
    "load_dataset",
    "make_checker",
    "make_config",
    "parse_dataset",
    "sample_run",
]
