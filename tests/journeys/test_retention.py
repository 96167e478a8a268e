"""Retention, lifecycle and stickiness on four users whose active days are chosen so every cell is
known. Weeks start on Monday: 2024-01-01, -08, -15, -22 are weeks 0..3; the data ends in week 3.

    a: Mon 01 (w0), Tue 09 (w1), Tue 23 (w3)
    b: Tue 02 and Wed 03 (w0)
    c: Wed 10 (w1), Wed 17 (w2)
    d: Tue 16 purchase (w2), Wed 24 and Thu 25 (w3)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.journeys import Journeys
from journeymap.journeys._retention import lifecycle, retention, stickiness
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

ACTIVITY = {
    "a": ["2024-01-01", "2024-01-09", "2024-01-23"],
    "b": ["2024-01-02", "2024-01-03"],
    "c": ["2024-01-10", "2024-01-17"],
    "d": ["2024-01-16", "2024-01-24", "2024-01-25"],
}
W = ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"]


def rows() -> list[dict]:
    out = []
    for user, days in ACTIVITY.items():
        for day in days:
            event = "purchase" if (user, day) == ("d", "2024-01-16") else "page_view"
            # two events a day: a day counts once
            out += [{"user_id": user, "ts": f"{day} 10:00:00", "event_type": event},
                    {"user_id": user, "ts": f"{day} 10:05:00", "event_type": "product_view"}]
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("retention"), rows())


@pytest.fixture
def journeys(store):
    with Journeys.open(store, Settings(secret=SECRET)) as j:
        yield j


def users(*names: str) -> list[str]:
    return sorted(pseudo(n) for n in names)


def test_first_time_weekly_cohorts(journeys):
    result = retention(journeys, period="week", kind="first_time", periods=4)
    assert result.to_dict() == {
        "period": "week", "kind": "first_time", "event": None, "return_event": None, "periods": 4,
        "cohorts": [
            {"cohort": W[0], "users": 2, "retained": [2, 1, 0, 1], "rates": [1.0, 0.5, 0.0, 0.5]},
            {"cohort": W[1], "users": 1, "retained": [1, 1, 0, None], "rates": [1.0, 1.0, 0.0, None]},
            {"cohort": W[2], "users": 1, "retained": [1, 1, None, None], "rates": [1.0, 1.0, None, None]},
        ],
    }
    assert result.users(W[0]) == users("a", "b")
    assert result.users(W[0], 3) == users("a")
    assert result.users(date(2024, 1, 8), 1) == users("c")


def test_recurring_weekly_cohorts(journeys):
    cohorts = retention(journeys, period="week", kind="recurring", periods=3).to_dict()["cohorts"]
    assert [(c["cohort"], c["users"], c["retained"]) for c in cohorts] == [
        (W[0], 2, [2, 1, 0]),  # a, b; a back in w1; nobody in w2
        (W[1], 2, [2, 1, 1]),  # a, c; c in w2; a in w3
        (W[2], 2, [2, 1, None]),  # c, d; d in w3
        (W[3], 2, [2, None, None]),  # a, d
    ]


def test_cohort_on_an_event_and_daily_periods(journeys):
    result = retention(journeys, period="day", event="purchase", periods=10)
    (cohort,) = result.to_dict()["cohorts"]
    # d bought on the 16th; active again on the 24th (k=8) and 25th (k=9); data ends on the 25th.
    assert cohort["cohort"] == "2024-01-16" and cohort["users"] == 1
    assert cohort["retained"] == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    # Cohorts on the first product_view (a, b in w0; c in w1; d in w2), coming back = a purchase.
    back = retention(journeys, period="week", event="product_view", return_event="purchase", periods=3)
    assert [c["retained"] for c in back.to_dict()["cohorts"]] == [[0, 0, 0], [0, 0, 0], [1, 0, None]]
    assert back.users(W[2], 0) == users("d")


def test_retention_frame_and_heatmap(journeys):
    result = retention(journeys, periods=4)
    frame = result.to_frame()
    assert len(frame) == 3 * 4 and list(frame.columns) == ["cohort", "users", "k", "retained", "rate"]
    fig = result.figure()
    assert fig.data[0].type == "heatmap" and len(fig.data[0].y) == 3


def test_lifecycle_weekly(journeys):
    result = lifecycle(journeys, period="week")
    assert result.to_dict()["periods"] == [
        {"period": W[0], "new": 2, "returning": 0, "resurrecting": 0, "dormant": 0, "active": 2},
        {"period": W[1], "new": 1, "returning": 1, "resurrecting": 0, "dormant": -1, "active": 2},
        {"period": W[2], "new": 1, "returning": 1, "resurrecting": 0, "dormant": -1, "active": 2},
        {"period": W[3], "new": 0, "returning": 1, "resurrecting": 1, "dormant": -1, "active": 2},
    ]
    assert result.users(W[3], "resurrecting") == users("a")
    assert result.users(W[1], "dormant") == users("b")
    assert result.users(W[2], "new") == users("d")
    fig = result.figure()
    assert fig.layout.barmode == "relative" and [t.name for t in fig.data] == ["new", "returning", "resurrecting", "dormant"]


def test_lifecycle_keeps_a_period_without_activity(tmp_path):
    store = make_store(tmp_path, [{"user_id": "a", "ts": "2024-01-01 10:00:00", "event_type": "page_view"},
                                  {"user_id": "a", "ts": "2024-01-15 10:00:00", "event_type": "page_view"}])
    with Journeys.open(store, Settings(secret=SECRET)) as journeys:
        periods = lifecycle(journeys).to_dict()["periods"]
    assert [(p["period"], p["new"], p["resurrecting"], p["dormant"]) for p in periods] == [
        (W[0], 1, 0, 0), (W[1], 0, 0, -1), (W[2], 0, 1, 0)]


def test_stickiness_weekly(journeys):
    result = stickiness(journeys, period="week")
    data = result.to_dict()
    assert data["days"] == [1, 2, 3, 4, 5, 6, 7]
    # user-weeks: a w0, a w1, a w3, c w1, c w2, d w2 on one day; b w0 and d w3 on two.
    assert data["users"] == [6, 2, 0, 0, 0, 0, 0] and data["user_periods"] == 8
    assert data["share"][:2] == [0.75, 0.25]
    assert data["by_period"][3] == {"period": W[3], "active": 2, "users": [1, 1, 0, 0, 0, 0, 0]}
    assert result.users(2) == users("b", "d")
    assert result.users(2, W[0]) == users("b")
    assert len(result.to_frame()) == 4 * 7
    assert list(result.figure().data[0].y) == [6, 2, 0, 0, 0, 0, 0]


def test_user_mistakes(journeys):
    with pytest.raises(JourneymapError, match=r"The period of retention\(\) must be one of day, week, month. Got 'year'."):
        retention(journeys, period="year")
    with pytest.raises(JourneymapError, match="The retention kind must be 'first_time' or 'recurring'. Got 'first'."):
        retention(journeys, kind="first")
    with pytest.raises(JourneymapError, match="Unknown event type 'buy'"):
        retention(journeys, return_event="buy")
    with pytest.raises(JourneymapError, match="so a day is too short"):
        stickiness(journeys, period="day")
    with pytest.raises(JourneymapError, match=r"lifecycle\(\) must be one of"):
        lifecycle(journeys, period="quarter")
    with pytest.raises(JourneymapError, match="No week cohort starts on 2024-01-02"):
        retention(journeys).users("2024-01-02")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYMAP_")}
    env["JOURNEYMAP_SECRET"] = SECRET
    return subprocess.run([sys.executable, "-m", "journeymap.cli", "retention", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def test_cli_json(store):
    done = _cli("--store", str(store), "--periods", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert [c["retained"] for c in json.loads(done.stdout)["cohorts"]] == [[2, 1], [1, 1], [1, 1]]
    life = json.loads(_cli("--store", str(store), "--view", "lifecycle", "--json").stdout)
    assert [p["dormant"] for p in life["periods"]] == [0, -1, -1, -1]
    done = _cli("--store", str(store), "--view", "stickiness", "--period", "day")
    assert done.returncode == 1 and "so a day is too short" in done.stderr
