"""Evaluation protocols: how training and test cases are cut, then one ranking evaluation for all.

* ``evaluate_srgnn(TRAIN.txt, TEST.tsv, model)``: the SR-GNN session protocol (files as given).
* ``evaluate_temporal(store, model, test_days=7)``: a global time split of the store's sessions.
  Sessions that end before the cutoff (last event minus ``test_days``) train; sessions that start
  at or after it are tested; sessions spanning the cutoff are in neither (counted), so nothing
  from after the cutoff reaches training. Every prefix of a test session is a test case.
* ``evaluate_leave_last(store, model)``: each user's last item event is the label and their whole
  history before it the prefix; training is every session without those last events. Not leak-free
  in time (other users' later sessions train the model); use the temporal split for that.

A test label the model never saw in training is counted as a miss, never dropped, and the count
is reported (``unknown_labels``). Every protocol returns an ``EvaluationResult``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from journeymap.evaluation._metrics import (
    DEFAULT_METRICS,
    RankingMetrics,
    label_ranks,
    ranking_metrics,
)
from journeymap.evaluation._srgnn import TestCases, read_test_cases, read_train_sessions
from journeymap.exceptions import JourneymapError
from journeymap.models import SequenceModel, make_model


@dataclass
class EvaluationResult:
    """A model's next-item accuracy under one protocol: metrics in percent with bootstrap intervals."""

    protocol: str
    model: str
    params: dict[str, Any]
    metrics: RankingMetrics
    train_sessions: int
    items: int  # the catalogue ranked: items seen in training
    unknown_labels: int  # test labels absent from training: counted as misses
    train_seconds: float
    eval_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def test_cases(self) -> int:
        return self.metrics.cases

    def __getitem__(self, metric: str) -> float:
        return self.metrics.values[metric]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metrics.values,
            "ci": {k: [lo, hi] if lo == lo else None for k, (lo, hi) in self.metrics.ci.items()},  # None: no bootstrap
            "confidence": self.metrics.confidence,
            "bootstrap_resamples": self.metrics.resamples,
            "test_cases": self.test_cases,
            "unknown_labels": self.unknown_labels,
            "train_sessions": self.train_sessions,
            "items": self.items,
            "protocol": self.protocol,
            "model": self.model,
            "params": self.params,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            **self.details,
        }

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([
            {"metric": k, "value": v, "ci_low": self.metrics.ci[k][0], "ci_high": self.metrics.ci[k][1],
             "test_cases": self.test_cases}
            for k, v in self.metrics.values.items()])


def rank_cases(model: SequenceModel, test: TestCases) -> np.ndarray:
    """The rank of every test case's label in the model's full ranking: (n,), inf for unknown labels."""
    labels = model.vocab_.index_of(test.labels)
    ranks = np.empty(len(test))
    step = model.batch_rows()
    for start in range(0, len(test), step):
        stop = start + step
        types = test.event_types[start:stop] if test.event_types is not None else None
        scores = model.score_items(test.prefixes[start:stop], types)
        ranks[start:stop] = label_ranks(scores, labels[start:stop])
    return ranks


def evaluate(model: SequenceModel | str, train: Sequence[Sequence], test: TestCases, *,
             train_event_types: Sequence[Sequence[str]] | None = None, metrics: Sequence[str] = DEFAULT_METRICS,
             n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0, protocol: str = "custom",
             details: dict[str, Any] | None = None) -> EvaluationResult:
    """Fit ``model`` (an instance or a registry name) on ``train`` and rank every test case's label."""
    if isinstance(model, str):
        model = make_model(model)
    if len(test) == 0:
        raise JourneymapError("There are no test cases to evaluate on (each needs a prefix and a next item).")
    started = time.perf_counter()
    model.fit(train, train_event_types)
    trained = time.perf_counter()
    ranks = rank_cases(model, test)
    done = time.perf_counter()  # evaluation time: scoring and ranking every case, not the bootstrap
    result = ranking_metrics(ranks, metrics, n_resamples, confidence, seed)
    unknown = int((model.vocab_.index_of(test.labels) < 0).sum())
    return EvaluationResult(protocol, model.name or type(model).__name__, model.get_params(), result,
                            len(train), len(model.vocab_), unknown, trained - started, done - trained,
                            dict(details or {}))


def evaluate_srgnn(train_path: str | Path, test_path: str | Path, model: SequenceModel | str,
                   **options: Any) -> EvaluationResult:
    """The SR-GNN session protocol: train on TRAIN.txt, rank every TEST.tsv case over all items."""
    train = read_train_sessions(train_path)
    test = read_test_cases(test_path)
    return evaluate(model, train, test, protocol="srgnn",
                    details={"train_file": str(train_path), "test_file": str(test_path)}, **options)


def evaluate_temporal(store: str | Path, model: SequenceModel | str, test_days: float = 7,
                      cutoff: datetime | None = None, gap: str | timedelta | None = None,
                      event_types: Sequence[str] | None = None, settings: Any = None,
                      **options: Any) -> EvaluationResult:
    """A global time split: sessions before the cutoff train, sessions after it are tested."""
    from journeymap.models import read_sessions

    sessions = read_sessions(store, gap, event_types, settings)
    last = max(s.end for s in sessions)
    if cutoff is None:
        if not test_days or test_days <= 0:
            raise JourneymapError(f"test_days must be a positive number of days. Got {test_days!r}.")
        cutoff = last - timedelta(days=test_days)
    train = [s for s in sessions if s.end < cutoff]
    test = [s for s in sessions if s.start >= cutoff]
    spanning = len(sessions) - len(train) - len(test)
    first = min(s.start for s in sessions)
    if not train:
        raise JourneymapError(f"No session ends before the cutoff {cutoff:%Y-%m-%d %H:%M}, so there is nothing to "
                              f"train on (the store spans {first:%Y-%m-%d} to {last:%Y-%m-%d}); use fewer test days.")
    cases = TestCases.from_sessions([s.items for s in test], [s.event_types for s in test])
    if not len(cases):
        raise JourneymapError(f"No session after the cutoff {cutoff:%Y-%m-%d %H:%M} has two item events, so there "
                              "is nothing to test; use more test days.")
    details = {"cutoff": cutoff.isoformat(sep=" "), "test_sessions": len(test), "spanning_sessions": spanning,
               "train_last_event": max(s.end for s in train).isoformat(sep=" "),
               "test_first_event": min(s.start for s in test).isoformat(sep=" ")}
    return evaluate(model, [s.items for s in train], cases, train_event_types=[s.event_types for s in train],
                    protocol="temporal", details=details, **options)


def evaluate_leave_last(store: str | Path, model: SequenceModel | str, gap: str | timedelta | None = None,
                        event_types: Sequence[str] | None = None, settings: Any = None,
                        **options: Any) -> EvaluationResult:
    """Leave-last-out per user: each user's last item event is predicted from their history."""
    from journeymap.models import read_sessions

    sessions = read_sessions(store, gap, event_types, settings)
    by_user: dict[str, list[int]] = {}
    for i, s in enumerate(sessions):  # sessions are ordered by their last event
        by_user.setdefault(s.user_id, []).append(i)
    held_out = {}  # session index -> its last event is a label
    prefixes, labels, groups, types = [], [], [], []
    for user, idx in by_user.items():
        items = [item for i in idx for item in sessions[i].items]
        kinds = [t for i in idx for t in sessions[i].event_types]
        if len(items) < 2:
            continue
        held_out[idx[-1]] = True
        prefixes.append(items[:-1])
        labels.append(items[-1])
        groups.append(len(groups))
        types.append(kinds[:-1])
    if not labels:
        raise JourneymapError("No user has two item events, so leave-last-out has nothing to test.")
    train, train_types = [], []
    for i, s in enumerate(sessions):
        cut = len(s.items) - 1 if i in held_out else len(s.items)
        if cut > 0:
            train.append(s.items[:cut])
            train_types.append(s.event_types[:cut])
    details = {"users": len(by_user), "users_tested": len(labels), "users_with_one_event": len(by_user) - len(labels)}
    return evaluate(model, train, TestCases(prefixes, labels, groups, types), train_event_types=train_types,
                    protocol="leave-last", details=details, **options)
