"""The vocabulary, encoded sequences, and sessions read from a store."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

import journeymap.models
from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.models import Vocabulary, read_sessions
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

T0 = datetime(2024, 3, 1, 12, 0, 0)


def ev(user, session, minutes, item, event_type="product_view"):
    return {"user_id": user, "session_id": session, "ts": (T0 + timedelta(minutes=minutes)).isoformat(sep=" "),
            "event_type": event_type, "item_id": item}


def test_all_is_sorted_and_resolves():
    names = journeymap.models.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert getattr(journeymap.models, name) is not None, name


def test_vocabulary_is_most_popular_first_and_encodes_unknowns_in_place():
    vocab = Vocabulary.build([["b", "a", "c"], ["c", "a"], ["c"]])
    assert vocab.items.tolist() == ["c", "a", "b"]
    assert vocab.counts.tolist() == [3, 2, 1]
    encoded = vocab.encode([["a", "zz", "c"], [], ["b"]])
    assert encoded.indptr.tolist() == [0, 3, 3, 4]
    assert encoded.items.tolist() == [1, -1, 0, 2]
    assert encoded.last().tolist() == [0, -1, 2]
    assert encoded.positions().tolist() == [1, 2, 3, 1]


def test_integer_and_text_ids_never_match_each_other():
    vocab = Vocabulary.build([[1, 2], [2]])
    assert vocab.encode([["1", "2"]]).items.tolist() == [-1, -1]
    assert vocab.index_of([2, 1, 7]).tolist() == [0, 1, -1]


def test_fit_needs_some_items():
    with pytest.raises(JourneymapError, match="training sequences are all empty"):
        journeymap.models.Popularity().fit([[], []])


def test_read_sessions_orders_clicks_and_sessions_by_time(tmp_path):
    rows = [ev("u1", "s1", 5, "B"), ev("u1", "s1", 0, "A"), ev("u1", "s1", 7, None, "page_view"),
            ev("u2", "s2", 1, "C"), ev("u2", "s2", 2, "D", "add_to_cart"),
            ev("u3", None, 0, "E"), ev("u3", None, 90, "F")]  # no session id: a 30 minute gap splits
    store = make_store(tmp_path, rows)
    sessions = read_sessions(store, settings=Settings(secret=SECRET))
    assert [s.items for s in sessions] == [["E"], ["C", "D"], ["A", "B"], ["F"]]  # by last event
    assert sessions[1].event_types == ["product_view", "add_to_cart"]
    assert sessions[2].user_id == pseudo("u1")
    views = read_sessions(store, event_types=["product_view"], settings=Settings(secret=SECRET))
    assert [s.items for s in views] == [["E"], ["C"], ["A", "B"], ["F"]]
    one = read_sessions(store, settings=Settings(secret=SECRET), user_id=pseudo("u3"))
    assert [s.items for s in one] == [["E"], ["F"]]
    assert np.all([s.start <= s.end for s in sessions])
    with pytest.raises(JourneymapError, match="has no events with an item of type purchase"):
        read_sessions(store, event_types=["purchase"], settings=Settings(secret=SECRET))
