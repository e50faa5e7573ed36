"""Evaluation records, confidence intervals, paired comparisons, tables and plots."""

from fsar.report.compare import (
    Comparison,
    ComparisonError,
    compare_records,
    mcnemar_exact,
    paired_bootstrap_ci,
)
from fsar.report.results import (
    Record,
    RecordError,
    file_sha256,
    latest,
    load_record,
    load_records,
    make_record,
    write_record,
)
from fsar.report.stats import Summary, episode_accuracy, mean_ci, summarize
from fsar.report.table import render_table

__all__ = [
    "Comparison",
    "ComparisonError",
    "Record",
    "RecordError",
    "Summary",
    "compare_records",
    "episode_accuracy",
    "file_sha256",
    "latest",
    "load_record",
    "load_records",
    "make_record",
    "mcnemar_exact",
    "mean_ci",
    "paired_bootstrap_ci",
    "render_table",
    "summarize",
    "write_record",
]
