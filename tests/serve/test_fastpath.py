"""The live fast path computes exactly the rows batch ingest's validation query gives, or steps aside."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeymap.events.adapters.generic import REQUIRED, Generic
from journeymap.events.readers import _jsonl_batch
from journeymap.events.validate import (
    EVENT_COLUMNS,
    PSEUDONYM,
    event_map_table,
    register_pseudonymizer,
    user_sql,
    validation_sql,
)
from journeymap.privacy.pseudonymize import Pseudonymizer
from journeymap.serve._events import run
from journeymap.serve._fastpath import FastPath
from journeymap.simulator._live import ACTIONS, LiveShop
from journeymap.store import Store
from tests.conftest import SECRET
from tests.serve.conftest import SETTINGS, auth

ADAPTER = Generic()
PSEUDONYMIZER = Pseudonymizer(SECRET)
MAPPING = event_map_table(ADAPTER, SETTINGS).to_pydict()
FAST = FastPath(SETTINGS, dict(zip(MAPPING["raw"], MAPPING["canonical"])), PSEUDONYMIZER)


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    register_pseudonymizer(con, PSEUDONYMIZER)
    con.register("__event_map", event_map_table(ADAPTER, SETTINGS))
    yield con
    con.close()


def query_row(con, event: dict) -> dict:
    """What the validation query makes of ``event`` alone (the live writer's slow path, step for step)."""
    names = list(dict.fromkeys([*event, *REQUIRED]))
    table = _jsonl_batch(Path("POST /v1/events"), [event], [1], names, []).table
    raw = run(con, "__batch", table, user_sql(ADAPTER, table.column_names))
    table = table.append_column(PSEUDONYM, PSEUDONYMIZER.array(pa.array([u for u, in raw], pa.string())))
    con.register("__batch", table)
    try:
        result = con.execute(validation_sql(ADAPTER, tuple(table.column_names), SETTINGS))
        header = [d[0] for d in result.description]
        return dict(zip(header, result.fetchall()[0]))
    finally:
        con.unregister("__batch")


TIMES = ["2024-01-05 10:00:00", "2024-01-05T10:00:00", "2024-01-05 10:00:00.5", "2024-01-05 10:00:00.123456",
         "2024-01-05 10:00:00Z", "2024-01-05 10:00:00 UTC", "2024-01-05 10:00:00+02:00", "2024-01-05 10:00",
         "2024-01-05", "2024-02-30 10:00:00", "2024-01-05 10:00:00.1234567", " 2024-01-05 10:00:00",
         "1850-01-01 00:00:00", "2999-01-01 00:00:00", "yesterday", "", "2024-1-5 10:00:00", "2024-01-05 24:00:00"]
TYPES = ["product_view", "purchase", "add_to_cart", "view", "cart", " purchase", "purchase\t", "teleport", "",
         "PRODUCT_VIEW", "page_view"]
TEXTS = ["a", "sku-1", "électronique", "手机", "a b", " a", "a ", "a\u00a0", "\u3000a", "\ta", "a\n", "", "null",
         "0", "x" * 70]
NUMBERS = [0, 1, 2, 19.9, 1e-05, 1e16, 2.5, -3, 1.5, "3", "3.0", " 3", "1e3", "1_000", "nan", "inf", "-0",
           "+1", "1.", ".5", 10_000_001, 1_000_001, True, 5, 5.5, None]


def values(name: str, clean: bool):
    """A clean value (the fast path's), or anything from the lists."""
    if name == "ts":
        return st.sampled_from(TIMES[:6] if clean else TIMES)
    if name == "event_type":
        return st.sampled_from(TYPES[:5] if clean else TYPES)
    if name in ("price", "quantity", "rating"):
        return st.sampled_from([0, 1, 2, 3.0, 4.5, "2", None] if clean else NUMBERS)
    if clean:
        return st.one_of(st.sampled_from(TEXTS[:5]), st.integers(0, 10**6), st.none())
    return st.one_of(st.sampled_from(TEXTS), st.integers(-5, 10**6), st.none(), st.just([1, 2]))


FIELD_NAMES = ["session_id", "item_id", "category", "brand", "price", "quantity", "channel", "device", "query",
               "text", "rating", "item_name", "properties", "coupon"]


@st.composite
def events(draw):
    """Half clean events, half with anything in them."""
    clean = draw(st.booleans())
    users = st.sampled_from(["u1", "7"]) if clean else st.one_of(st.sampled_from(["u1", " u3", "", "a\t"]),
                                                                 st.integers(0, 99))
    event = {"user_id": draw(users), "ts": draw(values("ts", clean)), "event_type": draw(values("event_type", clean))}
    names = FIELD_NAMES[:-2] if clean else FIELD_NAMES
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=6)):
        event[name] = draw(st.just({"a": 1}) if name == "properties" else values(name, clean))
    if not clean and draw(st.integers(0, 4)) == 0:
        del event[draw(st.sampled_from(list(REQUIRED)))]
    return event


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events())
def test_a_fast_row_is_exactly_the_query_row(con, event):
    latest = SETTINGS.limits.latest()
    fast = FAST.row(event, latest)
    sql = query_row(con, event)
    if fast is None:
        return  # the query decides; the writer sends this event its way
    assert sql["problem_field"] is None, (event, sql["problem_reason"])
    assert fast == {c: sql[c] for c in (*EVENT_COLUMNS, "item_name")}


def test_the_fast_path_takes_clean_events_and_leaves_the_rest(con):
    clean = {"user_id": "u1", "ts": "2024-01-05 10:00:00.25", "event_type": "add_to_cart", "item_id": "sku-9",
             "category": "shoes.running", "brand": "acme", "price": 59.5, "quantity": 2, "session_id": "s1",
             "channel": "email", "device": "mobile", "item_name": "Trail runner"}
    row = FAST.row(clean, SETTINGS.limits.latest())
    assert row is not None and row == {c: query_row(con, clean)[c] for c in row}
    assert row["ts"] == datetime(2024, 1, 5, 10, 0, 0, 250000) and row["quantity"] == 2
    # Each of these is for the query: a problem to report, or a value only its parsing may judge.
    for change in ({"price": -3}, {"ts": "2024-01-05 10:00:00+02:00"}, {"event_type": "teleport"},
                   {"coupon": "SPRING"}, {"properties": {"a": 1}}, {"brand": " acme"}, {"quantity": 1.5},
                   {"price": "1_000"}, {"user_id": ""}):
        assert FAST.row({**clean, **change}, SETTINGS.limits.latest()) is None, change


def test_simulated_live_traffic_takes_the_fast_path():
    shop = LiveShop(seed=3)
    sent = []
    for n in range(300):
        session = shop.next_session()
        sent += session.opening
        if session.decides:
            sent += shop.finish(session, ACTIONS[n % 4])[0]
    latest = SETTINGS.limits.latest()
    assert len(sent) > 1000
    assert sum(FAST.row(e, latest) is None for e in sent) == 0


def test_plain_events_are_stored_as_batch_ingest_stores_them(client, store, tmp_path):
    from journeymap.events import ingest

    plain = [{"user_id": f"plain-{i % 3}", "ts": f"2024-01-06 10:0{i}:00", "event_type": t, "item_id": f"sku-{i}",
              "price": 10.0 + i, "category": "toys", "brand": "b", "item_name": f"Toy {i}", "device": "desktop"}
             for i, t in enumerate(["product_view", "add_to_cart", "purchase", "product_view"])]
    body = client.post("/v1/events", json={"events": plain}, headers=auth("ingest")).json()
    assert body["accepted"] == 4
    again = client.post("/v1/events", json=plain[0], headers=auth("ingest")).json()
    assert again["duplicates"] == 1 and again["results"][0]["event_id"] == body["results"][0]["event_id"]
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in plain))
    ingest(path, tmp_path / "batch.duckdb", settings=SETTINGS, format="generic")
    cols = ", ".join(EVENT_COLUMNS)
    with Store(tmp_path / "batch.duckdb", read_only=True) as st_:
        batch = st_.con.execute(f"SELECT {cols} FROM events ORDER BY ts").fetchall()
        batch_items = st_.con.execute("SELECT item_id, name, category, brand, price FROM items ORDER BY 1").fetchall()
    with client.app.state.service.reader() as live_con:
        ids = [str(r["event_id"]) for r in body["results"]]
        live = live_con.execute(f"SELECT {cols} FROM events WHERE event_id::VARCHAR IN ({', '.join('?' * 4)}) "
                               "ORDER BY ts", ids).fetchall()
        live_items = live_con.execute("SELECT item_id, name, category, brand, price FROM items WHERE item_id IN "
                                     "('sku-0', 'sku-1', 'sku-2', 'sku-3') ORDER BY 1").fetchall()
    assert live == batch
    assert live_items == batch_items


def test_duplicates_are_found_in_memory_and_late_ones_in_the_store(store):
    from fastapi.testclient import TestClient

    from tests.serve.conftest import make_app

    def event(minute: int, ts: str = "2024-01-02 08:{:02d}:00") -> dict:
        return {"user_id": "dedupe-user", "ts": ts.format(minute), "event_type": "product_view", "item_id": "sku-1"}

    statuses = lambda body: [r["status"] for r in body["results"]]  # noqa: E731
    with TestClient(make_app(store, update_profiles=False)) as client:
        first = client.post("/v1/events", json={"events": [event(1), event(2)]}, headers=auth("ingest")).json()
        writer = client.app.state.service.writer
        assert statuses(first) == ["accepted", "accepted"]
        # Late events (before the store's latest at start): looked up in the store, not remembered.
        assert not writer._recent
        again = client.post("/v1/events", json={"events": [event(1), event(3), event(3)]}, headers=auth("ingest")).json()
        assert statuses(again) == ["duplicate", "accepted", "duplicate"]
        new = client.post("/v1/events", json=event(0, "2024-01-20 00:00:00"), headers=auth("ingest")).json()
        assert statuses(new) == ["accepted"] and len(writer._recent) == 1  # after the store's latest: remembered
        assert statuses(client.post("/v1/events", json=event(0, "2024-01-20 00:00:00"), headers=auth("ingest")).json()) \
            == ["duplicate"]
    with TestClient(make_app(store, update_profiles=False)) as client:  # a new writer remembers nothing
        body = client.post("/v1/events", json={"events": [event(2), event(0, "2024-01-20 00:00:00")]},
                           headers=auth("ingest")).json()
        assert statuses(body) == ["duplicate", "duplicate"]
        with client.app.state.service.reader() as con:
            assert con.execute("SELECT count(*) FROM events WHERE item_id = 'sku-1' AND user_id = ?",
                               [client.app.state.service.pseudonymize("dedupe-user")]).fetchall()[0][0] == 4


def test_the_catalog_takes_a_changed_item_and_skips_an_unchanged_one(client):
    service = client.app.state.service
    with service.reader() as con:
        item, name, price = con.execute("SELECT item_id, name, price FROM items WHERE price IS NOT NULL "
                                        "ORDER BY item_id LIMIT 1").fetchall()[0]
    event = {"user_id": "catalog-user", "ts": "2024-01-06 12:00:00", "event_type": "product_view", "item_id": item}
    same = client.post("/v1/events", json={**event, "price": price}, headers=auth("ingest")).json()
    changed = client.post("/v1/events", json={**event, "ts": "2024-01-06 12:01:00", "price": price + 1.5},
                          headers=auth("ingest")).json()
    assert same["accepted"] == changed["accepted"] == 1
    with service.reader() as con:
        assert con.execute("SELECT name, price FROM items WHERE item_id = ?", [item]).fetchall() == [(name, price + 1.5)]


def test_items_the_writer_does_not_hold_are_upserted_and_new_ones_inserted(store, monkeypatch):
    """With the whole catalog in memory a missing item is new and goes in by a plain insert; when
    the catalog is larger than the memory, an item missing from it may be stored, so it is upserted."""
    from fastapi.testclient import TestClient

    import journeymap.serve._events as events_module
    from tests.serve.conftest import make_app

    with Store(store, read_only=True) as st_:
        stored = st_.con.execute("SELECT count(*) FROM items").fetchall()[0][0]
    monkeypatch.setattr(events_module, "MAX_CACHED_ITEMS", stored - 1)  # one stored item is not held
    event = {"user_id": "catalog-user-2", "event_type": "product_view", "category": "kites", "price": 4.25}
    with TestClient(make_app(store, update_profiles=False)) as client:
        writer = client.app.state.service.writer
        assert not writer._items_complete and len(writer._items) == stored - 1
        with client.app.state.service.reader() as con:
            held = set(writer._items)
            missing = [i for i, in con.execute("SELECT item_id FROM items").fetchall() if i not in held]
        assert len(missing) == 1
        # One event a request: a failed write is then the request's error, not retried one by one.
        for i, item in enumerate([missing[0], "brand-new-kite"]):
            body = client.post("/v1/events", json={**event, "ts": f"2024-01-07 10:0{i}:00", "item_id": item},
                               headers=auth("ingest"))
            assert body.status_code == 200 and body.json()["accepted"] == 1, body.text
    monkeypatch.setattr(events_module, "MAX_CACHED_ITEMS", stored + 10)
    with TestClient(make_app(store, update_profiles=False)) as client:
        writer = client.app.state.service.writer
        assert writer._items_complete and len(writer._items) == stored + 1
        body = client.post("/v1/events", json={**event, "ts": "2024-01-07 10:05:00", "item_id": "newer-kite"},
                           headers=auth("ingest"))
        assert body.status_code == 200 and body.json()["accepted"] == 1, body.text
        with client.app.state.service.reader() as con:
            rows = con.execute("SELECT item_id, category, price FROM items WHERE item_id IN (?, ?, ?) ORDER BY 1",
                               [missing[0], "brand-new-kite", "newer-kite"]).fetchall()
    assert rows == sorted([(missing[0], "kites", 4.25), ("brand-new-kite", "kites", 4.25), ("newer-kite", "kites", 4.25)])
