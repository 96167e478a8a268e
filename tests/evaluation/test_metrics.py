"""Metrics on hand-made rankings and outcomes whose values are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

import journeymap.evaluation
from journeymap.evaluation import (
    auc,
    bootstrap_ci,
    calibration,
    label_ranks,
    log_loss,
    per_case,
    propensity_metrics,
    ranking_metrics,
)
from journeymap.exceptions import JourneymapError


def test_all_is_sorted_and_resolves():
    names = journeymap.evaluation.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert getattr(journeymap.evaluation, name) is not None, name


def test_label_rank_is_its_position_in_the_full_list_ties_to_lower_index():
    scores = np.array([[0.1, 0.5, 0.3, 0.5],
                       [0.0, 0.0, 0.0, 0.0],
                       [0.9, 0.1, 0.1, 0.2]])
    # row 0: label 3 ties with item 1 (lower index first) -> rank 2; row 1: all tied, label 2 -> 3;
    # row 2: label 1 ties with item 2 and comes first -> after 0.9 and 0.2 -> 3; row 3 unknown label.
    ranks = label_ranks(np.vstack([scores, scores[:1]]), np.array([3, 2, 1, -1]))
    assert ranks.tolist() == [2, 3, 3, math.inf]


def test_mrr_ndcg_and_hit_rate_on_hand_made_ranks():
    ranks = np.array([1, 2, 4, 25, math.inf])  # the last label was never seen in training: a miss
    assert per_case(ranks, "MRR@20").tolist() == [1, 0.5, 0.25, 0, 0]
    assert per_case(ranks, "HR@3").tolist() == [1, 1, 0, 0, 0]
    np.testing.assert_allclose(per_case(ranks, "NDCG@10"), [1, 1 / math.log2(3), 1 / math.log2(5), 0, 0])
    result = ranking_metrics(ranks, ("P@20", "MRR@20", "HR@10", "NDCG@10"), n_resamples=0)
    assert result.values["P@20"] == pytest.approx(60.0)
    assert result.values["MRR@20"] == pytest.approx((1 + 0.5 + 0.25) / 5 * 100)
    assert result.values["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 5 * 100)
    assert result.cases == 5


def test_metric_names_are_checked():
    with pytest.raises(JourneymapError, match="looks like P@20, HR@10, MRR@20 or NDCG@10.*Got 'Recall@20'"):
        per_case(np.array([1.0]), "Recall@20")
    with pytest.raises(JourneymapError, match="Got 'P@0'"):
        ranking_metrics(np.array([1.0]), ("P@0",))


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 2_000):
        hits = (rng.random(n) < 0.3).astype(float)
        (low, high), = bootstrap_ci({"hit": hits}, n_resamples=500, seed=3).values()
        assert low <= hits.mean() <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # width ~ 1/sqrt(n): 20x the cases, about 4.5x narrower
    again = bootstrap_ci({"hit": hits}, n_resamples=500, seed=3)
    assert again == bootstrap_ci({"hit": hits}, n_resamples=500, seed=3)  # seeded


def test_ranking_metrics_report_intervals_in_percent():
    ranks = np.array([1, 3, 30, 2, 50] * 40, dtype=float)
    result = ranking_metrics(ranks, ("HR@10",), n_resamples=300)
    low, high = result.ci["HR@10"]
    assert result.values["HR@10"] == pytest.approx(60.0)
    assert low <= 60.0 <= high
    assert 40 < low and high < 80


def test_auc_counts_ties_as_half_and_matches_scikit_learn():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    from sklearn.metrics import log_loss as sk_log_loss
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    p = np.round(rng.random(500), 2)  # rounded: many ties
    y = (rng.random(500) < p).astype(int)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)))


def test_log_loss_by_hand():
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def test_calibration_bins_and_expected_calibration_error_by_hand():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.1, 0.1, 0.1, 0.9, 0.9, 0.9]
    cal = calibration(y, p, bins=2)
    assert cal.counts == [3, 3]
    assert cal.mean_predicted == pytest.approx([0.1, 0.9])
    assert cal.observed_rate == pytest.approx([1 / 3, 2 / 3])
    assert cal.ece == pytest.approx(0.5 * abs(1 / 3 - 0.1) + 0.5 * abs(2 / 3 - 0.9))
    assert calibration([1], [1.0], bins=4).counts == [0, 0, 0, 1]  # p = 1 falls in the last bin
    assert calibration([0, 1] * 50, [0.5] * 100).ece == pytest.approx(0.0)


def test_propensity_metrics_carry_denominator_base_rate_and_intervals():
    rng = np.random.default_rng(2)
    p = rng.random(400)
    y = (rng.random(400) < p).astype(int)
    result = propensity_metrics(y, p, n_resamples=200)
    assert result.cases == 400 and result.positives == int(y.sum())
    assert result.base_rate == pytest.approx(y.mean())
    for name in ("auc", "log_loss", "brier"):
        low, high = result.ci[name]
        assert low <= getattr(result, name) <= high
    assert result.calibration.ece < 0.1  # p was the true probability
    assert set(result.to_dict()) >= {"auc", "log_loss", "brier", "ece", "calibration", "ci", "base_rate"}
    assert list(result.to_frame()["metric"]) == ["auc", "log_loss", "brier", "ece"]


def test_propensity_inputs_are_checked():
    with pytest.raises(JourneymapError, match="Outcomes must be 0 or 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(JourneymapError, match="Probabilities must be numbers between 0 and 1"):
        log_loss([0, 1], [0.1, 1.2])
    with pytest.raises(JourneymapError, match="same length; got 2 and 1"):
        calibration([0, 1], [0.5])
