"""dropoff(): a checkout log where mobile sessions mostly drop, so every count, odds ratio, interval
and p-value is computed here from the 2x2 table; and the planted mobile loss on the simulated shop."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from scipy import stats

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.journeys import Journeys
from journeymap.journeys._dropoff import dropoff
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

COUPON = {"promotion": "coupon10"}
# user -> (device, converts?, promotion shown?, events after the checkout of a dropped session)
SESSIONS = {
    "m1": ("mobile", True, True, []),
    "m2": ("mobile", False, False, ["page_view"]),
    "m3": ("mobile", False, False, ["product_view"]),
    "m4": ("mobile", False, False, []),
    "m5": ("mobile", False, False, []),
    "d1": ("desktop", True, True, []),
    "d2": ("desktop", True, True, []),
    "d3": ("desktop", True, False, []),
    "d4": ("desktop", True, False, []),
    "d5": ("desktop", False, False, ["begin_checkout", "search"]),  # a second checkout event is skipped
}


def checkout_rows() -> list[dict]:
    rows = []
    for hour, (user, (device, converts, promo, after)) in enumerate(SESSIONS.items()):
        events = [(0, "page_view", None)] + ([(1, "promotion_view", COUPON)] if promo else [])
        events += [(2, "begin_checkout", None)] + ([(5, "purchase", None)] if converts else [])
        events += [(6 + k, event, None) for k, event in enumerate(after)]
        rows += [{"user_id": user, "session_id": f"s-{user}", "ts": f"2024-01-01 {hour:02d}:{minute:02d}:00",
                  "event_type": event, "device": device, "channel": "direct", "properties": props}
                 for minute, event, props in events]
    # A session that never reaches checkout counts nowhere.
    rows.append({"user_id": "x1", "session_id": "s-x1", "ts": "2024-01-01 20:00:00", "event_type": "page_view",
                 "device": "mobile", "channel": "direct"})
    return rows


@pytest.fixture
def checkout(tmp_path):
    store = make_store(tmp_path, checkout_rows())
    with Journeys.open(store, Settings(secret=SECRET)) as journeys:
        result = dropoff(journeys, ["begin_checkout", "purchase"], "begin_checkout", min_support=2)
    return store, result


def expected(a: int, b: int, c: int, d: int, prior: float = 1.0, alpha: float = 0.05) -> dict:
    log_or = math.log((a + prior) * (d + prior) / ((b + prior) * (c + prior)))
    se = math.sqrt(sum(1 / (x + prior) for x in (a, b, c, d)))
    z = stats.norm.ppf(1 - alpha / 2)
    return {"odds_ratio": math.exp(log_or), "ci_low": math.exp(log_or - z * se), "ci_high": math.exp(log_or + z * se),
            "p_value": stats.fisher_exact([[a, b], [c, d]])[1]}


def test_counts_and_rate(checkout):
    _, result = checkout
    data = result.to_dict()
    assert (data["reached"], data["converted"], data["dropped"]) == (10, 5, 5)
    assert data["conversion_rate"] == 0.5
    assert data["steps"] == ["begin_checkout", "purchase"] and data["at"] == "begin_checkout"


def test_next_event_after_dropping(checkout):
    _, result = checkout
    assert result.to_dict()["next"] == [
        {"event": "leave", "count": 2, "share": 0.4},
        {"event": "page_view", "count": 1, "share": 0.2},
        {"event": "product_view", "count": 1, "share": 0.2},
        {"event": "search", "count": 1, "share": 0.2},
    ]


def test_drivers_are_exact_odds_ratios(checkout):
    _, result = checkout
    drivers = result.to_dict()["drivers"]
    by_name = {d["feature"]: d for d in drivers["positive"] + drivers["negative"]}
    # mobile: converted 1, dropped 4; without it: converted 4, dropped 1.
    mobile = by_name["device=mobile"]
    assert (mobile["converted"], mobile["dropped"]) == (1, 4)
    for key, value in expected(1, 4, 4, 1).items():
        assert mobile[key] == pytest.approx(value)
    assert mobile["odds_ratio"] == pytest.approx(0.16)
    assert mobile["conversion_rate"] == pytest.approx(0.2) and mobile["base_rate"] == 0.5
    assert mobile["lift"] == pytest.approx(0.4)
    assert by_name["device=desktop"]["odds_ratio"] == pytest.approx(6.25)
    # The coupon banner: 3 converted sessions saw it, no dropped one.
    coupon = by_name["promotion=coupon10"]
    assert coupon["odds_ratio"] == pytest.approx(expected(3, 0, 2, 5)["odds_ratio"]) == pytest.approx(8.0)
    assert by_name["event=promotion_view"]["converted"] == 3
    # Every session did page_view, begin_checkout and came from 'direct': such features separate no one.
    assert not {"event=page_view", "event=begin_checkout", "channel=direct"} & set(by_name)
    # Nor do features of events after the checkout (purchase, search).
    assert "event=purchase" not in by_name and "event=search" not in by_name
    assert drivers["negative"][0]["feature"] == "device=mobile"
    assert all(d["odds_ratio"] > 1 for d in drivers["positive"])


def test_prior_changes_the_odds_ratio(tmp_path):
    store = make_store(tmp_path, checkout_rows())
    with Journeys.open(store, Settings(secret=SECRET)) as journeys:
        result = dropoff(journeys, "begin_checkout,purchase", "begin_checkout", min_support=2, prior=0.5)
    mobile = next(d for d in result.negative if d.feature == "device=mobile")
    assert mobile.odds_ratio == pytest.approx(expected(1, 4, 4, 1, prior=0.5)["odds_ratio"])


def test_min_support_filters_features(tmp_path):
    store = make_store(tmp_path, checkout_rows())
    with Journeys.open(store, Settings(secret=SECRET)) as journeys:
        result = dropoff(journeys, ["begin_checkout", "purchase"], "begin_checkout", min_support=4)
    # coupon: 3 with it (< 4); device: 5 with, 5 without.
    assert {d.feature for d in result.positive + result.negative} == {"device=mobile", "device=desktop"}


def test_users_behind_each_number(checkout):
    _, result = checkout
    assert result.users("dropped") == sorted(pseudo(u) for u in ("m2", "m3", "m4", "m5", "d5"))
    assert result.users("converted") == sorted(pseudo(u) for u in ("m1", "d1", "d2", "d3", "d4"))
    assert len(result.users("reached")) == 10
    assert result.users("device=mobile", among="dropped") == sorted(pseudo(u) for u in ("m2", "m3", "m4", "m5"))
    assert result.users("promotion=coupon10") == sorted(pseudo(u) for u in ("m1", "d1", "d2"))
    assert result.users("next=leave") == sorted(pseudo(u) for u in ("m4", "m5"))
    with pytest.raises(JourneymapError, match="'device=watch' is not an outcome"):
        result.users("device=watch")


def test_frame_and_figure(checkout):
    _, result = checkout
    frame = result.to_frame()
    assert list(frame["feature"]) == [d.feature for d in result.positive + result.negative]
    assert {"odds_ratio", "ci_low", "ci_high", "p_value", "converted", "dropped"} <= set(frame.columns)
    fig = result.figure()
    assert fig.data[0].orientation == "h" and len(fig.data[0].y) == len(frame)
    assert "10 sessions reached" in fig.layout.title.text


def test_window_per_user(tmp_path):
    rows = [
        {"user_id": "slow", "ts": "2024-01-01 10:00:00", "event_type": "begin_checkout", "device": "desktop"},
        {"user_id": "slow", "ts": "2024-01-03 10:00:00", "event_type": "purchase", "device": "desktop"},
        {"user_id": "fast", "ts": "2024-01-01 11:00:00", "event_type": "begin_checkout", "device": "desktop"},
        {"user_id": "fast", "ts": "2024-01-01 11:10:00", "event_type": "purchase", "device": "desktop"},
        # a purchase before the checkout does not count
        {"user_id": "early", "ts": "2024-01-01 09:00:00", "event_type": "purchase", "device": "desktop"},
        {"user_id": "early", "ts": "2024-01-01 09:05:00", "event_type": "begin_checkout", "device": "desktop"},
    ]
    store = make_store(tmp_path, rows)
    with Journeys.open(store, Settings(secret=SECRET)) as journeys:
        short = dropoff(journeys, ["begin_checkout", "purchase"], "begin_checkout", window="1d", per="user")
        long = dropoff(journeys, ["begin_checkout", "purchase"], "begin_checkout", window="3d", per="user")
    assert short.users("converted") == [pseudo("fast")]
    assert short.users("dropped") == sorted([pseudo("slow"), pseudo("early")])
    assert long.users("converted") == sorted([pseudo("fast"), pseudo("slow")])


@pytest.mark.parametrize("steps, at, per, message", [
    (["begin_checkout", "buy"], "begin_checkout", "session", "Unknown step 'buy'"),
    (["begin_checkout", "purchase"], "add_to_cart", "session", r"The --at step must be one of the steps \(begin_checkout, purchase\). Got 'add_to_cart'."),
    (["begin_checkout", "purchase"], "purchase", "session", "must come before the last step 'purchase'"),
    (["begin_checkout", "purchase"], "begin_checkout", "visit", "must be 'session' or 'user'. Got 'visit'."),
    (["purchase"], "purchase", "session", "needs at least two steps"),
])
def test_user_mistakes(checkout, steps, at, per, message):
    store, _ = checkout
    with Journeys.open(store, Settings(secret=SECRET)) as journeys, pytest.raises(JourneymapError, match=message):
        dropoff(journeys, steps, at, per=per)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYMAP_")}
    env["JOURNEYMAP_SECRET"] = SECRET
    return subprocess.run([sys.executable, "-m", "journeymap.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def test_cli_json_and_segment(checkout):
    store, _ = checkout
    done = _cli("dropoff", "--store", str(store), "--steps", "begin_checkout,purchase", "--at", "begin_checkout",
                "--min-support", "2", "--save-segment", "checkout_drop", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {k: data[k] for k in ("reached", "converted", "dropped")} == {"reached": 10, "converted": 5, "dropped": 5}
    assert data["drivers"]["negative"][0]["feature"] == "device=mobile"
    assert data["segment"] == {"name": "checkout_drop", "users": 5}
    # The saved segment filters a later analysis down to the dropped users.
    again = json.loads(_cli("dropoff", "--store", str(store), "--steps", "begin_checkout,purchase", "--at",
                            "begin_checkout", "--segment", "checkout_drop", "--min-support", "1", "--json").stdout)
    assert (again["reached"], again["converted"]) == (5, 0)


def test_cli_error_is_one_sentence(checkout):
    store, _ = checkout
    done = _cli("dropoff", "--store", str(store), "--steps", "begin_checkout,purchase", "--at", "view", "--json")
    assert done.returncode == 1
    assert "The --at step must be one of the steps" in done.stderr and "Traceback" not in done.stderr


def test_simulated_mobile_checkout_loss_is_the_top_negative_driver(simulated_store):
    truth = simulated_store.truth["mobile_checkout_loss"]
    p_m, p_o = truth["p_complete_mobile"], truth["p_complete_other"]
    implied = (p_m / (1 - p_m)) / (p_o / (1 - p_o))
    with Journeys.open(simulated_store.store, Settings(secret=SECRET)) as journeys:
        result = dropoff(journeys, ["begin_checkout", "purchase"], "begin_checkout")
    top = result.negative[0]
    assert top.feature == "device=mobile" and top.significant
    assert top.odds_ratio == pytest.approx(implied, rel=0.25)
    assert 0.45 < result.conversion_rate < 0.7
