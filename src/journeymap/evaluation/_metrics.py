"""Metrics: next-item ranking over the full catalogue, and propensity quality.

Ranking metrics take each test case's *rank*: the label's 1-based position in the model's full
list of known items (by score, ties to the more popular item, exactly as ``predict_next`` orders
them). A label the model does not know has rank infinity: a miss, never dropped. Never sampled.

* ``P@K`` is SR-GNN's P@20: the share of cases whose label is in the top K (so equal to ``HR@K``;
  with one relevant item per case it is hit rate, not precision in the IR sense).
* ``MRR@K``: mean of 1/rank, 0 beyond K. ``NDCG@K``: mean of 1/log2(rank + 1), 0 beyond K (one
  relevant item, so the ideal DCG is 1).

Confidence intervals are percentile bootstraps over test cases (resampled with replacement, fixed
seed). Propensities (purchase, churn) get AUC, log-loss, Brier score and calibration: reliability
bins and the expected calibration error (the bins' |observed - predicted| weighted by their size).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from journeymap.exceptions import JourneymapError

RANKING = ("P", "HR", "MRR", "NDCG")
DEFAULT_METRICS = ("P@20", "MRR@20", "HR@10", "NDCG@10")
_SPEC = re.compile(r"^(P|HR|MRR|NDCG)@([1-9][0-9]*)$")
_CELLS = 1 << 22  # bootstrap weights are drawn this many (resample x case) cells at a time


def parse_metric(spec: str) -> tuple[str, int]:
    """``"MRR@20"`` -> ``("MRR", 20)``, or an error listing what a metric looks like."""
    match = _SPEC.match(str(spec).strip())
    if not match:
        raise JourneymapError(f"A ranking metric looks like P@20, HR@10, MRR@20 or NDCG@10 (names: "
                              f"{', '.join(RANKING)}). Got '{spec}'.")
    return match.group(1), int(match.group(2))


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each label's 1-based rank among all items: (n,), ``inf`` where the label is ``-1`` (unknown).

    Rank = 1 + items scoring higher + equal-scoring items of lower index (the more popular ones),
    which is the label's position in ``predict_next``'s full list.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    ranks = np.full(len(labels), np.inf)
    known = labels >= 0
    if not known.any():
        return ranks
    rows = scores[known]
    own = rows[np.arange(len(rows)), labels[known]][:, None]  # (n_known, 1)
    higher = (rows > own).sum(axis=1)
    ties_before = ((rows == own) & (np.arange(rows.shape[1])[None, :] < labels[known][:, None])).sum(axis=1)
    ranks[known] = 1 + higher + ties_before
    return ranks


def per_case(ranks: np.ndarray, spec: str) -> np.ndarray:
    """One metric's value for every test case (0..1): (n,)."""
    name, k = parse_metric(spec)
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= k
    if name in ("P", "HR"):
        return hit.astype(np.float64)
    safe = np.where(hit, ranks, 1.0)
    if name == "MRR":
        return np.where(hit, 1.0 / safe, 0.0)
    return np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0)


def bootstrap_weights(n: int, n_resamples: int, seed: int):
    """Yield blocks of bootstrap resamples as case counts: (block, n), each row summing to n."""
    rng = np.random.default_rng(seed)
    block = max(1, _CELLS // max(n, 1))
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n  # (size, n) flat cells
        yield np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def bootstrap_ci(values: Mapping[str, np.ndarray], n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the *means* of per-case values, all from the same resamples."""
    _check_bootstrap(n_resamples, confidence)
    names = list(values)
    matrix = np.column_stack([np.asarray(values[k], dtype=np.float64) for k in names])  # (n, metrics)
    n = len(matrix)
    if n == 0 or n_resamples == 0:
        return {k: (float("nan"), float("nan")) for k in names}
    means = np.concatenate([counts @ matrix / n for counts in bootstrap_weights(n, n_resamples, seed)])
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return {k: (float(low[i]), float(high[i])) for i, k in enumerate(names)}


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise JourneymapError(f"The number of bootstrap resamples must be a whole number >= 0 (0: no intervals). "
                              f"Got {n_resamples!r}.")
    if not 0 < confidence < 1:
        raise JourneymapError(f"The confidence level must be between 0 and 1, like 0.95. Got {confidence!r}.")


@dataclass
class RankingMetrics:
    """Ranking metrics of one set of test cases, in percent, with bootstrap intervals."""

    values: dict[str, float]  # "P@20" -> percent
    ci: dict[str, tuple[float, float]]  # "P@20" -> (low, high) percent; NaN without a bootstrap
    cases: int
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0


def ranking_metrics(ranks: np.ndarray, metrics: Sequence[str] = DEFAULT_METRICS, n_resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> RankingMetrics:
    """Point estimates and bootstrap intervals (percent) of ranking metrics from label ranks."""
    for spec in metrics:
        parse_metric(spec)
    per = {spec: per_case(ranks, spec) for spec in metrics}
    values = {spec: float(v.mean() * 100) if len(v) else float("nan") for spec, v in per.items()}
    ci = {k: (lo * 100, hi * 100) for k, (lo, hi) in bootstrap_ci(per, n_resamples, confidence, seed).items()}
    return RankingMetrics(values, ci, len(ranks), confidence, n_resamples, seed)


# -- propensities -------------------------------------------------------------------------------
def _check_binary(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise JourneymapError(f"Outcomes and probabilities must be the same length; got {len(y)} and {len(p)}.")
    if len(y) and not np.isin(y, (0.0, 1.0)).all():
        raise JourneymapError("Outcomes must be 0 or 1 (or False/True).")
    if len(p) and (np.isnan(p).any() or (p < 0).any() or (p > 1).any()):
        raise JourneymapError("Probabilities must be numbers between 0 and 1.")
    return y, p


def _weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC (ties count one half) under each row of case weights: (b,) from weights (b, n)."""
    order = np.argsort(p, kind="stable")
    y, p, weights = y[order], p[order], weights[:, order]
    group_starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    positive = np.add.reduceat(weights * y, group_starts, axis=1)  # (b, groups)
    negative = np.add.reduceat(weights * (1 - y), group_starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative  # negatives strictly below each group
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    wins = (positive * (below + 0.5 * negative)).sum(axis=1)
    return np.divide(wins, pairs, out=np.full(len(pairs), np.nan), where=pairs > 0)


def auc(y: Any, p: Any) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative."""
    y, p = _check_binary(y, p)
    if len(y) == 0:
        return float("nan")
    return float(_weighted_auc(y, p, np.ones((1, len(y))))[0])


def _case_log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def log_loss(y: Any, p: Any, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood in nats (probabilities clipped to [eps, 1 - eps])."""
    y, p = _check_binary(y, p)
    return float(_case_log_loss(y, p, eps).mean()) if len(y) else float("nan")


@dataclass
class Calibration:
    """Reliability bins: per bin of predicted probability, its cases, mean prediction and outcome rate."""

    edges: list[float]  # bins + 1 edges; a bin holds lower <= p < upper (the last includes 1)
    counts: list[int]
    mean_predicted: list[float | None]  # None for an empty bin
    observed_rate: list[float | None]
    ece: float  # expected calibration error: sum over bins of count / n * |observed - predicted|
    mce: float  # maximum calibration error over non-empty bins

    def to_dict(self) -> dict[str, Any]:
        return {"ece": self.ece, "mce": self.mce, "bins": [
            {"lower": lo, "upper": hi, "cases": c, "mean_predicted": mp, "observed_rate": ob}
            for lo, hi, c, mp, ob in zip(self.edges[:-1], self.edges[1:], self.counts, self.mean_predicted,
                                         self.observed_rate)]}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.to_dict()["bins"])


def calibration(y: Any, p: Any, bins: int = 10, strategy: str = "uniform") -> Calibration:
    """Reliability bins over [0, 1] (``uniform``) or at quantiles of the predictions (``quantile``)."""
    y, p = _check_binary(y, p)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise JourneymapError(f"The number of calibration bins must be a whole number >= 1. Got {bins!r}.")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0, 1, bins + 1)) if len(p) else np.linspace(0, 1, bins + 1)
        edges[0], edges[-1] = 0.0, 1.0
        edges = np.unique(edges)
    else:
        raise JourneymapError(f"The calibration strategy must be 'uniform' or 'quantile'. Got '{strategy}'.")
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    nbins = len(edges) - 1
    counts = np.bincount(which, minlength=nbins)
    predicted = np.bincount(which, weights=p, minlength=nbins)
    observed = np.bincount(which, weights=y, minlength=nbins)
    filled = counts > 0
    mean_p = np.divide(predicted, counts, out=np.zeros(nbins), where=filled)
    rate = np.divide(observed, counts, out=np.zeros(nbins), where=filled)
    gaps = np.abs(rate - mean_p)
    n = max(int(counts.sum()), 1)
    return Calibration(
        edges=[float(e) for e in edges], counts=[int(c) for c in counts],
        mean_predicted=[float(v) if f else None for v, f in zip(mean_p, filled)],
        observed_rate=[float(v) if f else None for v, f in zip(rate, filled)],
        ece=float((counts * gaps).sum() / n) if len(p) else float("nan"),
        mce=float(gaps[filled].max()) if filled.any() else float("nan"))


@dataclass
class PropensityResult:
    """How good predicted probabilities of a yes/no outcome are, with the denominator and base rate."""

    cases: int
    positives: int
    base_rate: float  # share of positives: a constant prediction of it has log-loss = entropy
    auc: float
    log_loss: float
    brier: float  # mean squared error of the probability
    calibration: Calibration
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # auc, log_loss, brier

    def to_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "positives": self.positives, "base_rate": self.base_rate,
                "auc": self.auc, "log_loss": self.log_loss, "brier": self.brier,
                "ece": self.calibration.ece, "ci": {k: list(v) for k, v in self.ci.items()},
                "calibration": self.calibration.to_dict()}

    def to_frame(self):
        import pandas as pd

        rows = [{"metric": k, "value": getattr(self, k), "ci_low": self.ci.get(k, (None, None))[0],
                 "ci_high": self.ci.get(k, (None, None))[1]} for k in ("auc", "log_loss", "brier")]
        rows.append({"metric": "ece", "value": self.calibration.ece, "ci_low": None, "ci_high": None})
        return pd.DataFrame(rows)


def propensity_metrics(y: Any, p: Any, bins: int = 10, n_resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> PropensityResult:
    """AUC, log-loss, Brier score and calibration of probabilities ``p`` for outcomes ``y``."""
    y, p = _check_binary(y, p)
    _check_bootstrap(n_resamples, confidence)
    losses = _case_log_loss(y, p)
    squares = (p - y) ** 2
    ci: dict[str, tuple[float, float]] = {}
    if len(y) and n_resamples:
        tail = (1.0 - confidence) / 2.0
        draws = {"auc": [], "log_loss": [], "brier": []}
        for counts in bootstrap_weights(len(y), n_resamples, seed):
            draws["auc"].append(_weighted_auc(y, p, counts))
            draws["log_loss"].append(counts @ losses / len(y))
            draws["brier"].append(counts @ squares / len(y))
        for name, parts in draws.items():
            values = np.concatenate(parts)
            values = values[~np.isnan(values)]
            ci[name] = ((float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)))
                        if len(values) else (float("nan"), float("nan")))
    return PropensityResult(
        cases=len(y), positives=int(y.sum()), base_rate=float(y.mean()) if len(y) else float("nan"),
        auc=auc(y, p), log_loss=float(losses.mean()) if len(y) else float("nan"),
        brier=float(squares.mean()) if len(y) else float("nan"), calibration=calibration(y, p, bins), ci=ci)
