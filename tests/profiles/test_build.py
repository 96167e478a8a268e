"""Profiles of hand-built users, where every right answer is known by construction."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import pytest

from journeymap.exceptions import JourneymapError, StoreError
from journeymap.profiles import COLUMNS, Lifecycle, build_profiles
from journeymap.store import Store
from tests.journeys.conftest import make_store, pseudo
from tests.profiles.conftest import build

T = datetime(2024, 3, 31)  # the as_of of the hand-built stores


def row(frame, raw: str) -> dict:
    """One user's row, nulls as None."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in frame.loc[pseudo(raw)].to_dict().items()}


# -- RFM ---------------------------------------------------------------------------------------

def _buyer(k: int, spend: float) -> list[dict]:
    """Buyer b{k}: k orders on k consecutive days, the last (60 - 10k) days before T, spend in all."""
    rows, last = [], T - timedelta(days=60 - 10 * k)
    for i in range(k):
        t = last - timedelta(days=i)
        common = {"user_id": f"b{k}", "session_id": f"b{k}s{i}", "item_id": "p1", "category": "home.lamp", "brand": "lumo",
                      "price": spend / k}
        rows += [dict(ts=t - timedelta(minutes=2), event_type="product_view", **common),
                 dict(ts=t - timedelta(minutes=1), event_type="add_to_cart", quantity=1, **common),
                 dict(ts=t, event_type="purchase", quantity=1, **common)]
    return rows


SPEND = {1: 10.0, 2: 40.0, 3: 30.0, 4: 100.0, 5: 60.0}


@pytest.fixture
def buyers(tmp_path):
    rows = [r for k, spend in SPEND.items() for r in _buyer(k, spend)]
    rows.append({"user_id": "window", "ts": T - timedelta(days=3), "event_type": "product_view", "item_id": "p1",
                     "category": "home.lamp", "price": 20.0})
    return make_store(tmp_path, rows)


def test_rfm_scores_and_purchase_counts(buyers):
    result = build(buyers, as_of=T)
    frame = result.to_frame()
    # Recency rank: the longest since a purchase scores 1; orders and spend: the fewest / least score 1.
    expected_rfm = {1: "111", 2: "223", 3: "332", 4: "445", 5: "554"}
    for k, spend in SPEND.items():
        p = row(frame, f"b{k}")
        assert (p["purchases"], p["items_bought"], p["monetary"]) == (k, k, spend)
        assert p["frequency"] == k - 1  # BG/NBD: repeat purchase days
        assert p["days_since_purchase"] == p["recency_days"] == 60 - 10 * k
        assert p["avg_order_value"] == pytest.approx(spend / k)
        assert p["rfm"] == expected_rfm[k]
        assert (p["r_score"], p["f_score"], p["m_score"]) == tuple(int(c) for c in expected_rfm[k])
        assert p["sessions"] == p["product_views"] == p["cart_adds"] == k
        assert p["funnel_stage"] == "purchased"
    window = row(frame, "window")
    assert window["purchases"] == 0 and window["rfm"] is None and window["r_score"] is None
    assert window["monetary"] is None  # nothing bought
    assert window["recency_days"] == 3.0


def test_too_few_buyers_leave_clv_null_with_the_reason(buyers):
    result = build(buyers, as_of=T)
    frame = result.to_frame()
    reason = "too few buyers to fit BG/NBD (5; at least 20 needed)"
    assert result.clv["note"] == reason and result.clv["bgnbd"] is None
    for k in SPEND:
        p = row(frame, f"b{k}")
        assert p["clv_note"] == reason
        assert all(p[c] is None for c in ("expected_purchases_90d", "probability_alive", "clv_1y"))
    assert row(frame, "window")["clv_note"] == "no purchase yet"


# -- affinities with decay -----------------------------------------------------------------------

@pytest.fixture
def decayed(tmp_path):
    common = {"user_id": "a", "device": "mobile"}
    rows = [
        dict(ts=T - timedelta(days=60), event_type="product_view", item_id="s1", category="apparel.shoes",
             brand="nike", price=90.0, **common),
        dict(ts=T - timedelta(days=30), event_type="add_to_cart", item_id="g1", category="accessories.bag",
             brand="gucci", price=900.0, quantity=1, **common),
        dict(ts=T - timedelta(days=1), event_type="page_view", **common),  # weight 0: no item
        dict(ts=T, event_type="purchase", item_id="g1", category="accessories.bag", brand="gucci", price=900.0,
             quantity=1, **common),
    ]
    return make_store(tmp_path, rows)


def test_affinities_decay_by_half_life(decayed):
    # Weights: view 1, cart 3, purchase 5; an event one half-life (30 days) old counts half.
    p = row(build(decayed, as_of=T).to_frame(), "a")
    bags, shoes = 3 * 0.5 + 5 * 1.0, 1 * 0.25
    assert [c["name"] for c in p["top_categories"]] == ["accessories.bag", "apparel.shoes"]
    assert p["top_categories"][0]["weight"] == pytest.approx(bags, rel=1e-12)
    assert p["top_categories"][1]["weight"] == pytest.approx(shoes, rel=1e-12)
    assert p["top_categories"][0]["share"] == pytest.approx(bags / (bags + shoes), rel=1e-12)
    assert [(b["name"], b["share"]) for b in p["top_brands"]] == [
        ("gucci", pytest.approx(bags / (bags + shoes))), ("nike", pytest.approx(shoes / (bags + shoes)))]

    # A month later with no new events: every weight halves, the shares stay.
    later = row(build(decayed, as_of=T + timedelta(days=30)).to_frame(), "a")
    assert later["top_categories"][0]["weight"] == pytest.approx(bags / 2, rel=1e-12)
    assert later["top_categories"][1]["weight"] == pytest.approx(shoes / 2, rel=1e-12)
    assert later["top_categories"][0]["share"] == pytest.approx(p["top_categories"][0]["share"], rel=1e-12)

    # A 60-day half-life: the 60-day-old view counts half, the 30-day-old cart 2**-0.5.
    slow = row(build(decayed, as_of=T, half_life_days=60).to_frame(), "a")
    assert slow["top_categories"][0]["weight"] == pytest.approx(3 * 2 ** -0.5 + 5, rel=1e-12)
    assert slow["top_categories"][1]["weight"] == pytest.approx(0.5, rel=1e-12)


def test_events_after_as_of_are_ignored(decayed):
    p = row(build(decayed, as_of=T - timedelta(days=2)).to_frame(), "a")
    assert (p["events"], p["purchases"], p["cart_adds"]) == (2, 0, 1)
    assert p["recency_days"] == 28.0
    assert p["top_categories"][0]["weight"] == pytest.approx(3 * 2 ** (-28 / 30), rel=1e-12)


# -- lifecycle -----------------------------------------------------------------------------------

LIFECYCLE_USERS = {
    # raw id: (days before T of the first event, of the last event), expected stage
    "fresh": ((13.5, 0.5), "new"),
    "tenure_14": ((14, 1), "active"),  # exactly 14 days known: no longer new
    "quiet_under_14": ((20, 14 - 1 / 86400), "active"),  # one second short of two weeks quiet
    "quiet_14": ((20, 14), "at_risk"),  # exactly at the threshold: the later stage
    "quiet_29": ((40, 29.9), "at_risk"),
    "quiet_30": ((40, 30), "dormant"),
    "quiet_89": ((100, 89.99), "dormant"),
    "quiet_90": ((100, 90), "churned"),
    "one_event_14": ((14, 14), "at_risk"),
}


@pytest.fixture
def lifecycle_store(tmp_path):
    rows = []
    for raw, ((first, last), _) in LIFECYCLE_USERS.items():
        rows.append({"user_id": raw, "ts": T - timedelta(days=first), "event_type": "page_view"})
        if last != first:
            rows.append({"user_id": raw, "ts": T - timedelta(days=last), "event_type": "page_view"})
    return make_store(tmp_path, rows)


def test_lifecycle_boundaries_exactly_at_the_thresholds(lifecycle_store):
    frame = build(lifecycle_store, as_of=T).to_frame()
    assert {raw: row(frame, raw)["lifecycle"] for raw in LIFECYCLE_USERS} == {
        raw: stage for raw, (_, stage) in LIFECYCLE_USERS.items()}


def test_lifecycle_thresholds_are_configurable(lifecycle_store):
    frame = build(lifecycle_store, as_of=T, lifecycle=Lifecycle(new_days=30, at_risk_days=20, dormant_days=40,
                                                                churned_days=60)).to_frame()
    got = {raw: row(frame, raw)["lifecycle"] for raw in ("fresh", "tenure_14", "quiet_14", "quiet_29", "quiet_89")}
    assert got == {"fresh": "new", "tenure_14": "new", "quiet_14": "new", "quiet_29": "at_risk",
                   "quiet_89": "churned"}
    with pytest.raises(JourneymapError, match="at_risk_days <= dormant_days <= churned_days"):
        Lifecycle(at_risk_days=40, dormant_days=30)


# -- price band ----------------------------------------------------------------------------------

@pytest.fixture
def priced(tmp_path):
    t = T - timedelta(days=1)
    lamps = {f"p{i}": 10.0 * i for i in range(1, 7)}  # 10 .. 60
    rugs = {"q1": 100.0, "q2": 200.0, "q3": 300.0}

    def view(user, item, minute):
        price = lamps.get(item) or rugs[item]
        return {"user_id": user, "ts": t + timedelta(minutes=minute), "event_type": "product_view", "item_id": item,
                    "category": "home.lamp" if item in lamps else "home.rug", "price": price}

    rows = [view("catalog", item, m) for m, item in enumerate([*lamps, *rugs])]
    rows += [view("cheap", "p1", 0), view("dear", "p6", 0), view("middle", "p3", 0), view("middle", "p4", 1),
             view("mixed", "p1", 0), view("mixed", "q3", 1)]
    return make_store(tmp_path, rows)


def test_price_band_is_the_percentile_within_the_category(priced):
    frame = build(priced, as_of=T).to_frame()
    # Share of the category's items cheaper than the user's mean price there, ties counting half.
    expected = {"cheap": (0.5 / 6, "low"), "dear": (5.5 / 6, "high"), "middle": (3 / 6, "mid"),
                "mixed": ((0.5 / 6 + 2.5 / 3) / 2, "mid"), "catalog": ((6 * 3 / 6 + 3 * 1.5 / 3) / 9, "mid")}
    for raw, (percentile, band) in expected.items():
        p = row(frame, raw)
        assert (p["price_percentile"], p["price_band"]) == (pytest.approx(percentile, abs=1e-12), band), raw


# -- funnel position, sessions, preferences, searches, reviews --------------------------------------

def test_funnel_position_is_the_latest_sessions_furthest_stage(tmp_path):
    t = T - timedelta(days=2)

    def session(user, sid, start, types):
        return [{"user_id": user, "session_id": sid, "ts": start + timedelta(minutes=i), "event_type": e,
                     "item_id": "p1", "category": "home.lamp", "price": 10.0, "quantity": 1} for i, e in enumerate(types)]

    rows = (session("u1", "a", t, ["product_view"])
            + session("u2", "a", t, ["product_view", "add_to_cart"])
            + session("u3", "a", t, ["product_view", "add_to_cart", "begin_checkout"])
            + session("u4", "a", t, ["product_view", "add_to_cart", "begin_checkout", "purchase"])
            + session("u5", "a", t, ["product_view", "add_to_cart", "purchase"])
            + session("u5", "b", t + timedelta(days=1), ["product_view"])
            + session("u6", "a", t, ["product_view"])
            + session("u6", "b", t + timedelta(days=1), ["add_to_cart", "remove_from_cart"]))
    frame = build(make_store(tmp_path, rows), as_of=T).to_frame()
    assert {u: row(frame, u)["funnel_stage"] for u in ("u1", "u2", "u3", "u4", "u5", "u6")} == {
        "u1": "browsing", "u2": "carted", "u3": "checkout", "u4": "purchased", "u5": "browsing", "u6": "carted"}
    assert row(frame, "u5")["purchases"] == 1


def test_sessions_preferences_searches_and_reviews(tmp_path):
    friday = datetime(2024, 3, 1, 9, 0)  # sessions from the 30-minute gap (no session ids)
    rows = [
        {"user_id": "s", "ts": friday, "event_type": "search", "query": "Red Shoes", "device": "mobile", "channel": "social"},
        {"user_id": "s", "ts": friday + timedelta(seconds=60), "event_type": "search", "query": " red shoes ",
             "device": "desktop", "channel": "email"},
        {"user_id": "s", "ts": friday + timedelta(seconds=120), "event_type": "review", "item_id": "p1", "rating": 4,
             "text": "fine", "device": "desktop"},
        {"user_id": "s", "ts": friday + timedelta(days=1, hours=1), "event_type": "search", "query": "lamp",
             "device": "desktop", "channel": "email"},
        {"user_id": "s", "ts": friday + timedelta(days=1, hours=3), "event_type": "review", "item_id": "p2", "rating": 5},
        {"user_id": "s", "ts": friday + timedelta(days=1, hours=5), "event_type": "review", "item_id": "p3"},
    ]
    p = row(build(make_store(tmp_path, rows), as_of=T).to_frame(), "s")
    assert (p["events"], p["sessions"], p["active_days"]) == (6, 4, 2)
    # Lengths 120 s, 0, 0, 0; the last three sessions are one event each.
    assert (p["mean_session_seconds"], p["mean_session_events"], p["bounce_rate"]) == (30.0, 1.5, 0.75)
    # A session's device and channel are its first event's; most sessions win, ties alphabetically.
    assert (p["preferred_device"], p["preferred_channel"]) == ("desktop", "email")
    # 3 of 4 sessions on the Saturday; the hours 9, 10, 12 and 14 tie, so the earliest.
    assert (p["preferred_weekday"], p["preferred_hour"]) == ("saturday", 9)
    assert [dict(s) for s in p["top_searches"]] == [{"query": "red shoes", "count": 2}, {"query": "lamp", "count": 1}]
    assert (p["searches"], p["reviews"], p["mean_rating"]) == (3, 3, 4.5)


# -- the table -----------------------------------------------------------------------------------

def test_table_meta_and_model_columns(buyers):
    result = build(buyers, as_of=T)
    with Store(buyers, read_only=True) as st:
        columns = [r[0] for r in st.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'profiles' "
            "ORDER BY ordinal_position").fetchall()]
        nulls = st.con.execute("SELECT count(*) FROM profiles WHERE embedding IS NULL AND "
                               "purchase_propensity IS NULL AND churn_propensity IS NULL").fetchall()[0][0]
        meta = json.loads(st.meta("profiles"))
    assert columns == list(COLUMNS) and nulls == 6 == result.user_count
    assert meta["as_of"] == "2024-03-31 00:00:00" and meta["last_ingest"] == 1 and meta["users"] == 6
    assert meta["options"]["half_life_days"] == 30.0 and meta["options"]["lifecycle"]["churned_days"] == 90.0
    data = result.to_dict()
    assert data["mode"] == "full" and data["users"] == 6 and data["funnel_stage"] == {"browsing": 1, "purchased": 5}
    assert result.users(lifecycle="dormant") == sorted(pseudo(f"b{k}") for k in (1, 2, 3))
    assert result.figure().data[0].type == "bar"


def test_mistakes_are_explained(tmp_path, buyers):
    with pytest.raises(StoreError, match="No store at"):
        build(tmp_path / "nope.duckdb")
    with pytest.raises(JourneymapError, match="as_of must be a UTC time like 2024-01-31"):
        build(buyers, as_of="last tuesday")
    with pytest.raises(JourneymapError, match="half_life_days must be a positive number of days, like 30. Got -1."):
        build(buyers, half_life_days=-1)
    empty = tmp_path / "empty.duckdb"
    Store(empty).close()
    with pytest.raises(StoreError, match="holds no events yet"):
        build_profiles(empty)
