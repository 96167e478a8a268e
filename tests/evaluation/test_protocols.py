"""Protocols cut training and test cases as documented: no future in training, misses kept."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from journeymap.config import Settings
from journeymap.evaluation import (
    TestCases,
    evaluate,
    evaluate_leave_last,
    evaluate_srgnn,
    evaluate_temporal,
    write_srgnn,
)
from journeymap.exceptions import JourneymapError
from journeymap.models import Markov, Popularity
from tests.conftest import SECRET
from tests.journeys.conftest import make_store

T0 = datetime(2024, 3, 1)


class Recorder(Popularity):
    """Popularity that remembers what it was trained on and asked about."""

    def fit(self, sequences, event_types=None):
        self.seen_train = [list(s) for s in sequences]
        self.seen_prefixes = []
        return super().fit(sequences, event_types)

    def score_items(self, prefixes, event_types=None):
        self.seen_prefixes.extend(list(p) for p in prefixes)
        return super().score_items(prefixes, event_types)


def ev(user, session, when, item, event_type="product_view"):
    return {"user_id": user, "session_id": session, "ts": when.isoformat(sep=" "), "event_type": event_type,
            "item_id": item}


def test_srgnn_protocol_trains_on_train_and_ranks_every_test_case(tmp_path):
    cycle = ["1", "2", "3", "4"]
    train = [cycle * 2, cycle[1:] + cycle]
    train_path, test_path = write_srgnn(tmp_path, train, TestCases.from_sessions([cycle, ["3", "4", "1"]]))
    result = evaluate_srgnn(train_path, test_path, "markov", n_resamples=0)
    assert result.to_dict()["P@20"] == 100.0
    assert result["MRR@20"] == 100.0 and result.test_cases == 5 and result.protocol == "srgnn"


def test_labels_never_seen_in_training_count_as_misses():
    result = evaluate(Markov(), [["a", "b"], ["b", "c"]], TestCases([["a"], ["a"], ["b"]], ["b", "new", "c"]),
                      n_resamples=0)
    assert result.test_cases == 3 and result.unknown_labels == 1
    assert result.to_dict()["ci"]["P@20"] is None  # no bootstrap asked for: no interval, not NaN
    assert result["P@20"] == pytest.approx(200 / 3)


def test_result_to_dict_and_to_frame():
    result = evaluate("pop", [["a", "b", "a"]], TestCases([["a"], ["b"]], ["a", "b"]), n_resamples=50)
    data = result.to_dict()
    assert {"P@20", "MRR@20", "HR@10", "NDCG@10", "ci", "test_cases", "unknown_labels", "train_seconds"} <= set(data)
    assert data["MRR@20"] == pytest.approx(75.0) and set(data["ci"]) == {"P@20", "MRR@20", "HR@10", "NDCG@10"}
    frame = result.to_frame()
    assert list(frame["metric"]) == ["P@20", "MRR@20", "HR@10", "NDCG@10"] and set(frame["test_cases"]) == {2}


@pytest.fixture
def ten_days(tmp_path):
    """One three-click session a day at noon (items named by day), and one session across midnight of day 7."""
    rows = [ev(f"u{d}", f"s{d}", T0 + timedelta(days=d, hours=12, minutes=i), f"d{d}-{i}")
            for d in range(10) for i in range(3)]
    rows += [ev("uz", "sz", T0 + timedelta(days=7, minutes=m), f"z{m}") for m in (0, 10)]
    return make_store(tmp_path, rows)


def test_temporal_split_has_no_future_in_training(ten_days):
    model = Recorder()
    # last event: day 9 12:02; 2.5 days earlier is day 7 00:02, between the two clicks of "sz".
    result = evaluate_temporal(ten_days, model, test_days=2.5, settings=Settings(secret=SECRET), n_resamples=0)
    days = lambda seqs: {int(item[1]) for s in seqs for item in s}  # noqa: E731
    assert days(model.seen_train) == set(range(7))
    assert days(model.seen_prefixes) == {7, 8, 9}
    assert not any(item.startswith("z") for s in model.seen_train + model.seen_prefixes for item in s)
    d = result.details
    assert d["train_last_event"] <= d["cutoff"] <= d["test_first_event"]
    assert d["cutoff"] == "2024-03-08 00:02:00"
    assert (d["test_sessions"], d["spanning_sessions"], result.test_cases) == (3, 1, 6)
    assert result.unknown_labels == 6 and result["P@20"] == 0.0  # each day's items are new: all misses


def test_temporal_split_refuses_a_split_with_nothing_to_train(ten_days):
    with pytest.raises(JourneymapError, match="No session ends before the cutoff .* use fewer test days"):
        evaluate_temporal(ten_days, "pop", test_days=30, settings=Settings(secret=SECRET))


def test_leave_last_out_predicts_each_users_last_item_from_their_history(tmp_path):
    rows = [ev("u1", "a", T0, "A"), ev("u1", "a", T0 + timedelta(minutes=1), "B"),
            ev("u1", "b", T0 + timedelta(hours=2), "C"), ev("u1", "b", T0 + timedelta(hours=2, minutes=1), "D"),
            ev("u2", "c", T0 + timedelta(hours=1), "A"), ev("u2", "c", T0 + timedelta(hours=1, minutes=1), "B"),
            ev("u2", "c", T0 + timedelta(hours=1, minutes=2), "C"),
            ev("u3", "d", T0, "E")]
    model = Recorder()
    result = evaluate_leave_last(make_store(tmp_path, rows), model, settings=Settings(secret=SECRET), n_resamples=0)
    assert sorted(model.seen_prefixes) == [["A", "B"], ["A", "B", "C"]]
    assert sorted(model.seen_train) == [["A", "B"], ["A", "B"], ["C"], ["E"]]  # last events held out
    assert result.test_cases == 2
    assert {k: result.details[k] for k in ("users", "users_tested", "users_with_one_event")} == {
        "users": 3, "users_tested": 2, "users_with_one_event": 1}
