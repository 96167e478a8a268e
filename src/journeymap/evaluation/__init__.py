"""Evaluation of next-behaviour models, apart from the models so that every one is measured alike.

Protocols (``evaluate_srgnn``, ``evaluate_temporal``, ``evaluate_leave_last``) cut training and
test cases; ``evaluate`` fits a model and ranks every test label over the full catalogue (never a
sample); metrics come with bootstrap confidence intervals. ``propensity_metrics`` scores
probabilities (AUC, log-loss, Brier, calibration). ``diginetica_srgnn`` and ``session_rec``
rebuild the published splits of the public samples.
"""

from __future__ import annotations

from journeymap.evaluation._datasets import SessionSplit, diginetica_srgnn, session_rec
from journeymap.evaluation._metrics import (
    DEFAULT_METRICS,
    Calibration,
    PropensityResult,
    RankingMetrics,
    auc,
    bootstrap_ci,
    calibration,
    label_ranks,
    log_loss,
    parse_metric,
    per_case,
    propensity_metrics,
    ranking_metrics,
)
from journeymap.evaluation._protocols import (
    EvaluationResult,
    evaluate,
    evaluate_leave_last,
    evaluate_srgnn,
    evaluate_temporal,
    rank_cases,
)
from journeymap.evaluation._srgnn import (
    TestCases,
    read_test_cases,
    read_train_sessions,
    write_srgnn,
)

__all__ = [
    "Calibration",
    "DEFAULT_METRICS",
    "EvaluationResult",
    "PropensityResult",
    "RankingMetrics",
    "SessionSplit",
    "TestCases",
    "auc",
    "bootstrap_ci",
    "calibration",
    "diginetica_srgnn",
    "evaluate",
    "evaluate_leave_last",
    "evaluate_srgnn",
    "evaluate_temporal",
    "label_ranks",
    "log_loss",
    "parse_metric",
    "per_case",
    "propensity_metrics",
    "rank_cases",
    "ranking_metrics",
    "read_test_cases",
    "read_train_sessions",
    "session_rec",
    "write_srgnn",
]
