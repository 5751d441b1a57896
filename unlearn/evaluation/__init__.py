"""Evaluation: did the model forget, and what did it cost? Suites of metrics in `eval/*.yaml`."""

from . import metric_math
from .metrics import METRICS, MetricResult
from .report import compare
from .runner import EvalResult, evaluate
from .suite import available_suites, load_suite

__all__ = [
    "METRICS",
    "EvalResult",
    "MetricResult",
    "available_suites",
    "compare",
    "evaluate",
    "load_suite",
    "metric_math",
]
