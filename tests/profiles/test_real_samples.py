"""Profiles of the real public samples in ../shared/data (skipped when they are not beside the repo).

Expected figures were counted independently with plain DuckDB SQL over the raw files.
"""

from __future__ import annotations

import duckdb

from journeymap.events import ingest
from journeymap.store import Store
from tests.conftest import shared
from tests.profiles.conftest import build


def _profiles(path, store, settings):
    ingest(path, store, settings=settings)
    frame = build(store).to_frame()
    with Store(store, read_only=True) as st:
        info = st.info()
    return frame, info


def test_rees46_profiles(store, settings):
    raw = shared("rees46-2019oct-sample/2019-Oct-sample.csv")
    frame, info = _profiles(raw, store, settings)
    buyers, spend = duckdb.sql(f"""SELECT count(DISTINCT user_id), round(sum(price), 2) FROM read_csv('{raw}')
                                   WHERE event_type = 'purchase'""").fetchall()[0]
    assert (len(frame), frame["events"].sum(), frame["sessions"].sum()) == (330, 1000, info.sessions) == (330, 1000, 372)
    assert ((frame["purchases"] > 0).sum(), round(frame["monetary"].sum(), 2)) == (buyers, spend) == (9, 2387.84)
    # 17 minutes of log: everyone is new, seen within the last 0.02 days, mostly in one session.
    assert set(frame["lifecycle"]) == {"new"} and frame["recency_days"].max() < 0.02
    assert frame["sessions"].median() == 1 and frame["bounce_rate"].between(0, 1).all()
    assert frame["funnel_stage"].value_counts().to_dict() == {"browsing": 320, "purchased": 9, "carted": 1}
    assert set(frame["price_band"].dropna()) == {"low", "mid", "high"}
    top = frame.sort_values("monetary", ascending=False).iloc[0]
    assert (top["monetary"], top["top_brands"][0]["name"], top["top_categories"][0]["name"]) == (
        804.67, "apple", "electronics.smartphone")
    assert top["summary"].startswith("Shopper, most interested in electronics > smartphone, top brands apple, arena; ")
    assert "1 purchase worth 804.67" in top["summary"]
    assert set(frame.loc[frame["purchases"] > 0, "clv_note"]) == {"too few buyers to fit BG/NBD (9; at least 20 needed)"}


def test_taobao_profiles(store, settings):
    raw = shared("taobao-userbehavior-sample/UserBehavior.csv")
    frame, _ = _profiles(raw, store, settings)
    buyers, buys = duckdb.sql(f"""SELECT count(DISTINCT column0), count(*) FROM read_csv('{raw}', header=false)
                                  WHERE column3 = 'buy'""").fetchall()[0]
    assert (len(frame), frame["events"].sum()) == (43, 4321)
    assert ((frame["purchases"] > 0).sum(), frame["items_bought"].sum()) == (buyers, buys) == (23, 77)
    # No prices, devices or brands in this log: those fields are empty, never made up.
    assert frame["monetary"].isna().all() and frame["price_band"].isna().all()
    assert frame["preferred_device"].isna().all() and (frame["top_brands"].map(len) == 0).all()
    # Categories are bare ids; "mostly" only where one holds at least half the decayed interest.
    mostly = frame["top_categories"].map(lambda c: c[0]["share"] >= 0.5)
    assert mostly.sum() == 7
    assert frame.loc[mostly, "summary"].str.startswith("Shopper, mostly category ").all()
    assert frame.loc[~mostly, "summary"].str.startswith("Shopper, most interested in category ").all()
    assert frame["sessions"].median() == 14 and frame["events"].max() == 466
    assert frame["lifecycle"].value_counts().to_dict() == {"new": 42, "active": 1}
    notes = set(frame.loc[frame["purchases"] > 0, "clv_note"])
    assert notes == {("too short a purchase history to fit BG/NBD (8 days from the first purchase to as_of; "
                     "at least 21 needed)")}
