"""Benchmarks: datasets behind one loader interface, a resumable sampling run that stores every
sample (with its token confidences) in a single SQLite file, the dense arrays offline
evaluation replays strategies from, and the report that sets replays, live runs and their costs
side by side (priced by `ponder.planning.pricing`)."""

from ponder.bench.checkers import Checker, Grade, make_checker
from ponder.bench.datasets import (
    Dataset,
    DatasetInfo,
    list_datasets,
    load_dataset,
    parse_dataset,
)
from ponder.bench.items import CheckerName, DatasetSpec, Item, JsonlFields
from ponder.bench.report import (
    Report,
    ReportError,
    ReportRow,
    build_report,
    pareto_front,
    replay_data,
)
from ponder.bench.report_files import render_markdown, write_report
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
    "Report",
    "ReportError",
    "ReportRow",
    "RunArrays",
    "RunConfig",
    "RunStore",
    "RunStoreError",
    "RunSummary",
    "SampleRecord",
    "build_report",
    "list_datasets",
    "load_dataset",
    "make_checker",
    "make_config",
    "pareto_front",
    "parse_dataset",
    "render_markdown",
    "replay_data",
    "sample_run",
    "write_report",
]
