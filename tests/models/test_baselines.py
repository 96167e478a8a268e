"""Baselines on logs whose right answer is known by construction or by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from journeymap.evaluation import TestCases, evaluate
from journeymap.exceptions import JourneymapError
from journeymap.models import ItemKNN, Markov, Popularity, SessionKNN


def scores_of(model, prefix) -> dict:
    return dict(zip(model.vocab_.items.tolist(), model.score_items([prefix])[0].tolist()))


def test_popularity_ranks_by_training_counts_ties_to_first_seen():
    model = Popularity().fit([["a", "b", "c"], ["c", "b", "c"], ["d"]])
    items, scores = model.predict_next([["a"]], k=4)
    assert items[0].tolist() == ["c", "b", "a", "d"]  # a and d both once: a was seen first
    np.testing.assert_allclose(scores[0], [3 / 7, 2 / 7, 1 / 7, 1 / 7])


def test_markov_on_a_cyclic_log_is_always_right():
    cycle = ["p1", "p2", "p3", "p4", "p5"]
    train = [[cycle[(start + i) % 5] for i in range(7)] for start in range(5)]
    test = [[cycle[(start + i) % 5] for i in range(4)] for start in (0, 2, 4)]
    result = evaluate(Markov(), train, TestCases.from_sessions(test), metrics=("P@1", "MRR@20"), n_resamples=0)
    assert result["P@1"] == 100.0 and result["MRR@20"] == 100.0
    assert result.test_cases == 9


def test_markov_uses_the_last_item_and_backs_off_to_popularity():
    model = Markov().fit([["a", "b"], ["a", "b"], ["a", "c"], ["c", "c", "c", "d"]])
    s = scores_of(model, ["c", "a"])
    assert s == pytest.approx({"a": 0, "b": 2 / 3, "c": 1 / 3, "d": 0})
    # d was never followed by anything, and z is unknown: both fall back to popularity (counts / 10).
    for prefix in (["a", "d"], ["a", "z"]):
        assert scores_of(model, prefix) == pytest.approx({"a": 0.3, "b": 0.2, "c": 0.4, "d": 0.1})


# V-SKNN by hand. Training sessions, oldest first: s0 = A B, s1 = B C, s2 = A C D.
# Prefix A B: weights A = 1/2, B = 2/2 (linear decay, 1 for the last click); |w| = sqrt(1.25).
# Dot products: s0 = 1.5, s1 = 1.0, s2 = 0.5; cosine divides by |w| and sqrt(session size).
SKNN_TRAIN = [["A", "B"], ["B", "C"], ["A", "C", "D"]]
W = math.sqrt(1.25)
SIM0, SIM1, SIM2 = 1.5 / (W * math.sqrt(2)), 1.0 / (W * math.sqrt(2)), 0.5 / (W * math.sqrt(3))


def test_sknn_scores_are_sums_of_neighbour_similarities():
    model = SessionKNN(neighbors=2).fit(SKNN_TRAIN)  # the two most similar: s0, s1
    assert scores_of(model, ["A", "B"]) == pytest.approx({"A": SIM0, "B": SIM0 + SIM1, "C": SIM1, "D": 0.0})


def test_sknn_samples_the_most_recent_sessions_sharing_an_item():
    model = SessionKNN(neighbors=3, sample_size=2).fit(SKNN_TRAIN)  # candidates: s1, s2 (s0 is older)
    assert scores_of(model, ["A", "B"]) == pytest.approx({"A": SIM2, "B": SIM1, "C": SIM1 + SIM2, "D": SIM2})


def test_sknn_vec_similarity_and_div_score_decay_as_in_session_rec():
    vec = SessionKNN(neighbors=3, similarity="vec").fit(SKNN_TRAIN)  # dot / 2 distinct prefix items
    assert scores_of(vec, ["A", "B"]) == pytest.approx({"A": 0.75 + 0.25, "B": 0.75 + 0.5, "C": 0.5 + 0.25, "D": 0.25})
    # div: a neighbour whose most recent shared item is n clicks back votes 1/n (s2 shares only A: 2 back).
    div = SessionKNN(neighbors=3, score_decay="div").fit(SKNN_TRAIN)
    assert scores_of(div, ["A", "B"]) == pytest.approx(
        {"A": SIM0 + SIM2 / 2, "B": SIM0 + SIM1, "C": SIM1 + SIM2 / 2, "D": SIM2 / 2})


def test_sknn_weights_a_repeated_item_by_its_last_click():
    model = SessionKNN(neighbors=1).fit([["A", "X"], ["B", "Y"]])
    # B A B: B's weight is 3/3 (its last click), A's 2/3: the session holding B is the nearest.
    assert model.predict_next([["B", "A", "B"]], k=1)[0][0, 0] == "B"
    assert scores_of(model, ["B", "A", "B"])["Y"] > 0 and scores_of(model, ["B", "A", "B"])["X"] == 0


def test_iknn_is_regularized_cosine_of_session_vectors():
    train = [["A", "B"], ["A", "B"], ["A", "C"], ["B", "B"]]  # sessions holding A: 3, B: 3, C: 1
    plain = ItemKNN(regularization=0).fit(train)
    assert scores_of(plain, ["C", "B"]) == pytest.approx({"A": 2 / math.sqrt(3 * 3), "B": 0, "C": 0})
    assert scores_of(plain, ["A"]) == pytest.approx({"A": 0, "B": 2 / 3, "C": 1 / math.sqrt(3)})
    shrunk = ItemKNN(regularization=20).fit(train)
    assert scores_of(shrunk, ["A"])["C"] == pytest.approx(1 / math.sqrt(23 * 21))
    assert ItemKNN(neighbors=1, regularization=0).fit(train).similarities_.getnnz(axis=1).max() == 1


@pytest.mark.parametrize(("model", "message"), [
    (SessionKNN(neighbors=0), "SessionKNN's 'neighbors' must be a whole number >= 1. Got 0"),
    (SessionKNN(sample_size=-1), "'sample_size' must be a whole number >= 0"),
    (SessionKNN(similarity="jaccard"), "similarity must be 'cosine' or 'vec'. Got 'jaccard'"),
    (SessionKNN(score_decay="log"), "score_decay must be 'none' or 'div'"),
    (ItemKNN(alpha=2), "alpha must be between 0 and 1. Got 2"),
    (ItemKNN(regularization=-1), "regularization must be a number >= 0"),
])
def test_impossible_hyperparameters_are_refused_at_fit(model, message):
    with pytest.raises(JourneymapError, match=message):
        model.fit(SKNN_TRAIN)
