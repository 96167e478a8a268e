"""Tests of the storefront simulator: file format, determinism, calibration and planted effects.

Every planted effect is measured from the written file alone (plus the truth's persona map) with
DuckDB, the way an analyst would, and compared with the size the truth JSON claims.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import journeymap.simulator as simulator
from journeymap.simulator import COLUMNS, FORMATS, simulate, users_for_events

HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session,"
    "product_name,quantity,channel,device,query,text,rating,properties"
)
PERSONAS = {"bargain_hunter", "loyal_repeat_buyer", "window_shopper", "mission_buyer", "mobile_impulse_buyer"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[simulator.SimulationResult, duckdb.DuckDBPyConnection]:
    """20,000 users over 30 days, loaded into DuckDB with one row per session in table `s`."""
    result = simulate(users=20_000, days=30, seed=7, out=tmp_path_factory.mktemp("shop") / "shop.csv")
    con = duckdb.connect()
    con.execute(f"CREATE TABLE e AS SELECT * FROM read_csv('{result.path}', all_varchar = true)")
    personas = pa.table({
        "user_id": list(result.truth["user_personas"]),
        "persona": list(result.truth["user_personas"].values()),
    })
    con.register("personas", personas)
    con.execute("""
        CREATE TABLE s AS
        SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY t0, user_session) AS visit
        FROM (
            SELECT user_session, user_id, min(event_time) AS t0,
                   any_value(channel) AS channel, any_value(device) AS device,
                   count(DISTINCT channel) AS n_channels, count(DISTINCT device) AS n_devices,
                   bool_or(event_type = 'purchase') AS bought,
                   bool_or(event_type = 'begin_checkout') AS checkout,
                   bool_or(event_type = 'promotion_view') AS coupon,
                   count(*) FILTER (WHERE event_type = 'search') AS searches,
                   count(*) AS events
            FROM e GROUP BY user_session, user_id
        ) JOIN personas USING (user_id)
    """)
    return result, con


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> simulator.SimulationResult:
    return simulate(users=2_000, days=14, seed=3, out=tmp_path_factory.mktemp("small") / "small.csv")


def rate(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    value = con.execute(sql).fetchone()[0]
    assert value is not None, sql
    return float(value)


# --- files --------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(small: simulator.SimulationResult, tmp_path: Path) -> None:
    again = simulate(users=2_000, days=14, seed=3, out=tmp_path / "again.csv")
    assert again.path.read_bytes() == small.path.read_bytes()
    assert again.truth_path.read_bytes() == small.truth_path.read_bytes()
    other = simulate(users=2_000, days=14, seed=4, out=tmp_path / "other.csv")
    assert other.path.read_bytes() != small.path.read_bytes()


def test_parquet_is_deterministic_and_holds_the_csv_content(small: simulator.SimulationResult, tmp_path: Path) -> None:
    first = simulate(users=2_000, days=14, seed=3, out=tmp_path / "a.parquet", format="parquet")
    second = simulate(users=2_000, days=14, seed=3, out=tmp_path / "b.parquet", format="parquet")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.event_counts == small.event_counts

    table = pq.read_table(first.path)
    assert table.column_names == list(COLUMNS)
    assert table.schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("user_id").type == pa.int64()
    # The literal " UTC" suffix is parsed as text, then the naive UTC times get their zone.
    types = {f.name: f.type for f in table.schema} | {"event_time": pa.timestamp("ms")}
    from_csv = pacsv.read_csv(small.path, convert_options=pacsv.ConvertOptions(
        column_types=types, timestamp_parsers=["%Y-%m-%d %H:%M:%S UTC"], strings_can_be_null=True))
    from_csv = from_csv.set_column(0, "event_time", from_csv["event_time"].cast(pa.timestamp("ms", tz="UTC")))
    assert from_csv.equals(table)


def test_header_columns_and_truth_path(small: simulator.SimulationResult) -> None:
    with small.path.open() as f:
        assert f.readline().rstrip("\n") == HEADER
    assert ",".join(COLUMNS) == HEADER
    assert small.truth_path == small.path.with_name("small.truth.json")
    assert json.loads(small.truth_path.read_text()) == small.truth


def test_rows_are_sorted_by_event_time_and_well_formed(small: simulator.SimulationResult) -> None:
    table = pacsv.read_csv(small.path, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in COLUMNS}, strings_can_be_null=True))
    assert table.num_rows == small.events
    rows = table.to_pylist()
    times = [r["event_time"] for r in rows]
    assert times == sorted(times)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", t) for t in times)
    product_events = {"view", "cart", "remove_from_cart", "begin_checkout", "purchase", "review"}
    for r in rows:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", r["user_session"])
        assert r["user_id"].isdigit() and r["channel"] in simulator._personas.CHANNELS
        has_product = r["event_type"] in product_events
        for column in ("product_id", "category_id", "category_code", "brand", "price", "product_name"):
            assert (r[column] is not None) == has_product, (column, r)
        if has_product:
            assert re.fullmatch(r"\d+\.\d\d", r["price"]) and r["brand"] == r["brand"].lower()
        assert (r["quantity"] is not None) == (r["event_type"] in {"cart", "purchase"})
        assert (r["query"] is not None) == (r["event_type"] == "search")
        assert (r["rating"] in {"1", "2", "3", "4", "5"}) == (r["event_type"] == "review")
        properties = json.loads(r["properties"]) if r["properties"] else None
        if r["event_type"] == "page_view":
            assert properties["page"] in {"home", "category"}
        elif r["event_type"] == "promotion_view":
            assert properties == {"promotion": "coupon10"}
        elif r["event_type"] == "purchase":
            assert set(properties) == {"order_id"}
        else:
            assert properties is None


def test_progress_reports_every_event(tmp_path: Path) -> None:
    seen: list[int] = []
    result = simulate(users=3_000, days=7, seed=1, out=tmp_path / "p.csv", progress=seen.append)
    assert sum(seen) == result.events and all(n > 0 for n in seen)


def test_a_failed_run_leaves_no_file(tmp_path: Path) -> None:
    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(users=30_000, days=7, seed=1, out=tmp_path / "cut.csv", progress=interrupt)
    assert not list(tmp_path.iterdir())


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    formats = r"'format' parameter of simulate\(\) must be one of 'rees46', 'parquet'. Got 'xml'"
    with pytest.raises(ValueError, match=formats):
        simulate(users=10, days=1, seed=1, out=tmp_path / "x.xml", format="xml")
    with pytest.raises(ValueError, match=r"'users' parameter of simulate\(\) must be a positive integer. Got 0"):
        simulate(users=0, days=1, seed=1, out=tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"'days' parameter of simulate\(\) must be a positive integer. Got -2"):
        simulate(users=10, days=-2, seed=1, out=tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"'start' parameter of simulate\(\) must be a date like '2024-01-01'"):
        simulate(users=10, days=1, seed=1, out=tmp_path / "x.csv", start="January")
    with pytest.raises(ValueError, match=r"'seed' parameter of simulate\(\) must be a non-negative integer. Got -1"):
        simulate(users=10, days=1, seed=-1, out=tmp_path / "x.csv")
    assert not list(tmp_path.iterdir())
    assert FORMATS == ("rees46", "parquet")


def test_public_api_is_curated() -> None:
    assert simulator.__all__ == sorted(simulator.__all__)
    assert all(hasattr(simulator, name) for name in simulator.__all__)


def test_users_for_events_sizes_a_run(tmp_path: Path) -> None:
    users = users_for_events(50_000, days=14)
    result = simulate(users=users, days=14, seed=2, out=tmp_path / "sized.csv")
    assert 45_000 <= result.events <= 55_000


# --- shop realism -------------------------------------------------------------------------------


def test_every_persona_is_present_and_mapped(shop) -> None:
    result, con = shop
    assert set(result.truth["personas"]) == PERSONAS
    assert set(result.truth["user_personas"].values()) == PERSONAS
    assert rate(con, "SELECT count(DISTINCT user_id) FROM e") == len(result.truth["user_personas"]) == 20_000
    assert rate(con, "SELECT count(*) FROM s") == result.sessions


def test_event_mix_matches_real_shops(shop) -> None:
    result, con = shop
    counts = dict(con.execute("SELECT event_type, count(*) FROM e GROUP BY 1").fetchall())
    assert counts == {k: v for k, v in result.event_counts.items() if v}
    total = sum(counts.values())
    share = {k: v / total for k, v in counts.items()}
    assert share["view"] + share["page_view"] >= 0.87
    assert share["view"] + share["page_view"] + share["promotion_view"] + share["search"] >= 0.90
    assert 0.02 <= share["cart"] <= 0.04
    assert 0.006 <= share["purchase"] <= 0.015
    # Most users come once, and a typical visit is short.
    assert rate(con, "SELECT avg((n = 1)::int) FROM (SELECT user_id, count(*) AS n FROM s GROUP BY 1)") > 0.6
    assert rate(con, "SELECT median(events) FROM s") <= 5


def test_personas_have_distinct_journeys(shop) -> None:
    _, con = shop
    by = {
        row[0]: row[1:]
        for row in con.execute("""
            SELECT persona, avg((device = 'mobile')::int), avg((searches > 0)::int), avg(events),
                   count(*) / count(DISTINCT user_id), avg(bought::int)
            FROM s GROUP BY 1
        """).fetchall()
    }
    mobile, search, depth, visits, conversion = (dict(zip(by, col)) for col in zip(*by.values()))
    assert mobile["mobile_impulse_buyer"] > 0.7 > max(v for k, v in mobile.items() if k != "mobile_impulse_buyer")
    assert search["mission_buyer"] == max(search.values())
    assert depth["bargain_hunter"] == max(depth.values())
    assert visits["loyal_repeat_buyer"] == max(visits.values())
    assert conversion["window_shopper"] == min(conversion.values()) < 0.01
    # Bargain hunters view cheap items, measured against the typical price of the same category
    # (personas also differ in which categories they browse, so bargain hunters set much of the
    # typical price of their own categories: the margin is 15%, not more).
    relative_price = dict(con.execute("""
        WITH v AS (SELECT user_id, category_code, price::double AS price FROM e WHERE event_type = 'view'),
             m AS (SELECT category_code, median(price) AS typical FROM v GROUP BY 1)
        SELECT persona, avg(price / typical) FROM v JOIN m USING (category_code)
        JOIN personas USING (user_id) GROUP BY 1
    """).fetchall())
    assert relative_price["bargain_hunter"] < 0.85 * min(v for k, v in relative_price.items() if k != "bargain_hunter")
    reviews = dict(con.execute("""
        SELECT persona, count(*) FILTER (WHERE event_type = 'review') / count(DISTINCT user_id)
        FROM e JOIN personas USING (user_id) GROUP BY 1
    """).fetchall())
    assert reviews["loyal_repeat_buyer"] == max(reviews.values())


def test_sessions_keep_one_channel_and_device(shop) -> None:
    _, con = shop
    assert rate(con, "SELECT max(n_channels) FROM s") == 1
    assert rate(con, "SELECT max(n_devices) FROM s") == 1


def test_reviews_come_after_a_purchase_of_that_product(shop) -> None:
    _, con = shop
    orphans = rate(con, """
        SELECT count(*) FROM e AS r WHERE r.event_type = 'review' AND NOT EXISTS (
            SELECT 1 FROM e AS p WHERE p.event_type = 'purchase' AND p.user_id = r.user_id
            AND p.product_id = r.product_id AND p.event_time < r.event_time)
    """)
    assert orphans == 0
    assert rate(con, "SELECT avg(rating::int) FROM e WHERE event_type = 'review'") > 3.5


def test_weekly_seasonality_follows_the_truth(shop) -> None:
    result, con = shop
    rows = con.execute("""
        SELECT dayname(day), avg(n) FROM (
            SELECT t0[:10]::date AS day, count(*) AS n FROM s GROUP BY 1
        ) GROUP BY 1
    """).fetchall()
    mean = sum(n for _, n in rows) / len(rows)
    for day, n in rows:
        assert n / mean == pytest.approx(result.truth["weekly_seasonality"][day.lower()], abs=0.12)


# --- planted effects ----------------------------------------------------------------------------


def test_mobile_loses_users_between_checkout_and_purchase(shop) -> None:
    result, con = shop
    truth = result.truth["mobile_checkout_loss"]
    mobile = rate(con, "SELECT avg(bought::int) FROM s WHERE checkout AND device = 'mobile'")
    other = rate(con, "SELECT avg(bought::int) FROM s WHERE checkout AND device <> 'mobile'")
    assert mobile == pytest.approx(truth["p_complete_mobile"], abs=0.05)
    assert other == pytest.approx(truth["p_complete_other"], abs=0.05)
    assert other - mobile > 0.2


def test_email_sessions_convert_more(shop) -> None:
    result, con = shop
    # Without the coupon, whose uplift is additive and would dilute the ratio.
    email = rate(con, "SELECT avg(bought::int) FROM s WHERE NOT coupon AND channel = 'email'")
    other = rate(con, "SELECT avg(bought::int) FROM s WHERE NOT coupon AND channel <> 'email'")
    multiplier = result.truth["converting_channel"]["conversion_multiplier"]
    assert 1.8 <= email / other <= multiplier + 0.7


def test_bargain_hunters_buy_on_the_second_visit(shop) -> None:
    result, con = shop
    truth = result.truth["second_visit_buyer"]
    by_visit = dict(con.execute("""
        SELECT visit, avg(bought::int) FROM s WHERE persona = 'bargain_hunter' AND visit <= 2 GROUP BY 1
    """).fetchall())
    assert by_visit[1] == truth["p_purchase_visit1"] == 0.0
    assert by_visit[2] == pytest.approx(truth["p_purchase_visit2"], abs=0.04)
    assert truth["p_purchase_visit2"] > 0.25


def test_coupon_uplift_by_persona(shop) -> None:
    result, con = shop
    truth = result.truth["coupon_uplift"]
    assert rate(con, "SELECT avg(coupon::int) FROM s") == pytest.approx(truth["assignment_rate"], abs=0.02)
    uplift = dict(con.execute("""
        SELECT persona, avg(bought::int) FILTER (WHERE coupon) - avg(bought::int) FILTER (WHERE NOT coupon)
        FROM s WHERE NOT (persona = 'bargain_hunter' AND visit = 1) GROUP BY 1
    """).fetchall())
    planted = truth["uplift_by_persona"]
    assert uplift["bargain_hunter"] >= 0.08
    assert uplift["bargain_hunter"] == pytest.approx(planted["bargain_hunter"], abs=0.06)
    assert uplift["mobile_impulse_buyer"] == pytest.approx(planted["mobile_impulse_buyer"], abs=0.04)
    assert uplift["mission_buyer"] == pytest.approx(planted["mission_buyer"], abs=0.03)
    assert planted["mission_buyer"] == 0.0
