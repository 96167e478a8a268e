"""Ingest guarantees: idempotent, atomic, pseudonymized, and clear about what it cannot read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from journeymap.config import Settings
from journeymap.events import ingest
from journeymap.events.adapters.generic import Mapping_
from journeymap.exceptions import ConfigError, FormatError
from journeymap.privacy import pseudonymize
from journeymap.store import Store
from tests.conftest import SECRET

ROWS = """user_id,ts,event_type,item_id,price,session_id
alice@example.com,2024-03-01 10:00:00,product_view,A1,9.99,s-1
alice@example.com,2024-03-01 10:01:00,add_to_cart,A1,9.99,s-1
CUST-000123-XYZ,2024-03-01 11:00:00,product_view,B2,,s-2
CUST-000123-XYZ,2024-03-01 11:05:00,purchase,B2,19.50,s-2
"""


def _counts(store: Path) -> tuple[int, int, int, int]:
    with Store(store, read_only=True) as st:
        return tuple(st.con.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM quarantine), "
            "(SELECT count(*) FROM items), (SELECT count(*) FROM ingests)").fetchall()[0])


def test_reingesting_a_file_stores_nothing_new(tmp_path, store, settings):
    path = tmp_path / "shop.csv"
    path.write_text(ROWS + "bob,not-a-time,product_view,A1,1,s-3\n")
    first = ingest(path, store, settings=settings)
    assert (first.read, first.stored, first.quarantined, first.duplicates) == (5, 4, 1, 0)
    before = _counts(store)
    again = ingest(path, store, settings=settings)
    assert (again.read, again.stored, again.quarantined, again.duplicates) == (5, 0, 1, 4)
    events, quarantined, items, ingests = _counts(store)
    assert (events, quarantined, items) == before[:3]
    assert ingests == before[3] + 1


def test_the_same_event_twice_in_one_file_is_stored_once(tmp_path, store, settings):
    path = tmp_path / "shop.csv"
    lines = ROWS.splitlines(keepends=True)
    path.write_text("".join(lines + lines[1:2]))
    result = ingest(path, store, settings=settings)
    assert (result.read, result.stored, result.duplicates) == (5, 4, 1)


def test_event_id_is_deterministic_across_stores(tmp_path, settings):
    path = tmp_path / "shop.csv"
    path.write_text(ROWS)
    ids = []
    for name in ("a.duckdb", "b.duckdb"):
        ingest(path, tmp_path / name, settings=settings)
        with Store(tmp_path / name, read_only=True) as st:
            ids.append(st.con.execute("SELECT list(event_id ORDER BY ts) FROM events").fetchall()[0][0])
    assert ids[0] == ids[1] and len(set(ids[0])) == 4


def test_user_ids_are_pseudonymized_and_never_written(tmp_path, store, settings):
    path = tmp_path / "shop.csv"
    # The last row is truncated and one has a bad time: raw ids must not reach quarantine either.
    path.write_text(ROWS + "CUST-000123-XYZ,yesterday,product_view,A1,1,s-9\nalice@example.com,2024-03-01\n")
    result = ingest(path, store, settings=settings)
    assert (result.stored, result.quarantined) == (4, 2)
    with Store(store, read_only=True) as st:
        users = {r[0] for r in st.con.execute("SELECT DISTINCT user_id FROM events").fetchall()}
        contents = [r[0] for r in st.con.execute("SELECT content FROM quarantine ORDER BY line").fetchall()]
    assert users == {pseudonymize("alice@example.com", SECRET), pseudonymize("CUST-000123-XYZ", SECRET)}
    assert json.loads(contents[0])["user_id"] == pseudonymize("CUST-000123-XYZ", SECRET)
    assert json.loads(contents[1])[0] == pseudonymize("alice@example.com", SECRET)
    data = store.read_bytes() + (store.with_name(store.name + ".wal").read_bytes()
                                 if store.with_name(store.name + ".wal").exists() else b"")
    for raw in (b"alice@example.com", b"CUST-000123-XYZ"):
        assert raw not in data
    # The byte search can see stored strings: the session ids are there in plain text.
    assert b"s-1" in data or b"s-2" in data


def test_raw_ids_of_a_real_sample_appear_nowhere_in_the_store_file(store, settings):
    from tests.conftest import shared

    path = shared("rees46-2019oct-sample/2019-Oct-sample.csv")
    ingest(path, store, settings=settings)
    raw_ids = {line.split(",")[7].encode() for line in path.read_text().splitlines()[1:]}
    data = store.read_bytes()
    assert len(raw_ids) == 330
    assert [r for r in raw_ids if r in data] == []


def test_no_secret_refuses_with_how_to_set_one(tmp_path, store):
    path = tmp_path / "shop.csv"
    path.write_text(ROWS)
    with pytest.raises(ConfigError, match="No pseudonymization secret is set. Set one with: export JOURNEYMAP_SECRET="):
        ingest(path, store, settings=Settings())
    assert not store.exists()


def test_a_store_refuses_a_different_secret(tmp_path, store, settings):
    path = tmp_path / "shop.csv"
    path.write_text(ROWS)
    ingest(path, store, settings=settings)
    with pytest.raises(ConfigError, match="was written with a different pseudonymization secret"):
        ingest(path, store, settings=Settings(secret="another-secret-0123456789"))
    assert _counts(store)[0] == 4


KILLER = textwrap.dedent("""
    import sys
    from journeymap.config import Settings
    from journeymap.events import ingest
    from journeymap.events import _ingest, readers
    readers.CSV_BLOCK_BYTES = 1 << 16  # many small batches, so the kill lands mid-ingest
    _ingest.BATCH_ROWS = 1000
    def progress(n):
        print("batch", flush=True)
    ingest(sys.argv[1], sys.argv[2], settings=Settings(secret="test-secret-0123456789abcdef"), progress=progress)
    print("done", flush=True)
""")


def test_a_killed_ingest_leaves_the_store_unchanged(tmp_path, store, settings):
    small = tmp_path / "small.csv"
    small.write_text(ROWS)
    ingest(small, store, settings=settings)
    before = _counts(store)
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("user_id,ts,event_type,item_id,price\n")
        for i in range(200_000):
            f.write(f"u{i % 5000},2024-03-01 {i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d},product_view,I{i},1.5\n")
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(big), str(store)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    batches = 0
    for line in proc.stdout:
        batches += line.startswith("batch")
        if batches == 3:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert batches == 3 and proc.returncode == -signal.SIGKILL
    assert _counts(store) == before


def test_a_failing_ingest_rolls_back(tmp_path, store, settings, monkeypatch):
    small = tmp_path / "small.csv"
    small.write_text(ROWS)
    ingest(small, store, settings=settings)
    before = _counts(store)
    from journeymap.events import _ingest

    def boom(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(_ingest._Writer, "finish", boom)
    other = tmp_path / "other.csv"
    other.write_text(ROWS.replace("2024-03-01", "2024-03-02"))
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(other, store, settings=settings)
    assert _counts(store) == before


def test_unknown_header_lists_what_to_do(tmp_path, store, settings):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(FormatError, match=r"Cannot tell the format of .*x.csv from its header \(a, b, c\)\. Give --format \(one of rees46, taobao"):
        ingest(path, store, settings=settings)


def test_ambiguous_header_lists_the_candidates(tmp_path, store, settings):
    # A REES46 file that also has GA4's identifying columns matches both formats.
    path = tmp_path / "x.csv"
    path.write_text("event_time,event_type,product_id,user_id,event_name,event_timestamp,user_pseudo_id\n")
    with pytest.raises(FormatError, match=r"ambiguous: it matches rees46, ga4\. Pass --format NAME"):
        ingest(path, store, settings=settings)


def test_wrong_format_names_expected_and_found_columns(tmp_path, store, settings):
    path = tmp_path / "x.csv"
    path.write_text(ROWS)
    with pytest.raises(FormatError, match=r"is not in retailrocket format: expected columns \(event, itemid, timestamp, visitorid\), found user_id, ts, event_type, item_id, price, session_id\. It looks like generic\."):
        ingest(path, store, settings=settings, format="retailrocket")


def test_generic_mapping_from_toml_with_constant_and_timezone(tmp_path, store, settings):
    path = tmp_path / "orders.csv"
    path.write_text("Kunde;Zeit;Artikel;Betrag;Land\nk1;31/01/2024 13:45;A1;10,5;DE\nk2;01/02/2024 09:00;A2;3;AT\n")
    mapping = tmp_path / "map.toml"
    mapping.write_text(textwrap.dedent("""
        [columns]
        user_id = "Kunde"
        ts = "Zeit"
        event_type = "=purchase"
        item_id = "Artikel"
        [timestamps]
        format = "%d/%m/%Y %H:%M"
        timezone = "Europe/Berlin"
    """))
    result = ingest(path, store, settings=settings, mapping=Mapping_.from_toml(mapping))
    assert (result.format, result.stored) == ("generic", 2)
    with Store(store, read_only=True) as st:
        rows = st.con.execute("SELECT ts, event_type, item_id, properties FROM events ORDER BY ts").fetchall()
    # 13:45 in Berlin (UTC+1 in winter) is 12:45 UTC; unmapped columns land in properties.
    assert str(rows[0][0]) == "2024-01-31 12:45:00"
    assert rows[0][1:3] == ("purchase", "A1")
    assert json.loads(rows[0][3]) == {"Betrag": "10,5", "Land": "DE"}


def test_generic_mapping_names_a_missing_column(tmp_path, store, settings):
    path = tmp_path / "x.csv"
    path.write_text("customer,time\nc,2024-01-01\n")
    with pytest.raises(FormatError, match=r"needs a column for event_type; map it with --map event_type=COLUMN"):
        ingest(path, store, settings=settings, mapping=Mapping_(columns={"user_id": "customer", "ts": "time"}))


def test_jsonl_and_parquet_containers(tmp_path, store, settings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "ga4.jsonl"
    jsonl.write_text(
        '{"event_name": "purchase", "event_timestamp": 1612069510766593, "user_pseudo_id": "u1", '
        '"items": [{"item_id": "A", "price": 2.5, "quantity": 2}, {"item_id": "B", "price": 1}]}\n'
        '{"event_name": "page_view", "event_timestamp": 1612069510000000, "user_pseudo_id": "u1"}\n'
        '{"event_name": "page_view", "event_timestamp": 16120695, "user_pseudo_id": "u1"\n'
    )
    result = ingest(jsonl, store, settings=settings)
    assert (result.format, result.read, result.stored, result.quarantined) == ("ga4", 4, 3, 1)
    with Store(store, read_only=True) as st:
        q = st.con.execute("SELECT line, reason FROM quarantine").fetchall()
        items = st.con.execute("SELECT item_id, price, quantity FROM events WHERE event_type='purchase' ORDER BY 1").fetchall()
    assert q == [(3, "line is not valid JSON (Expecting ',' delimiter)")]
    assert items == [("A", 2.5, 2), ("B", 1.0, None)]

    table = pa.table({"user_id": ["p1", "p2"], "ts": pa.array([1_700_000_000_000_000, 0], pa.timestamp("us")),
                      "event_type": ["search", "search"], "query": ["red shoes", "hat"]})
    parquet = tmp_path / "events.parquet"
    pq.write_table(table, parquet)
    result = ingest(parquet, tmp_path / "p.duckdb", settings=settings)
    assert (result.format, result.stored, result.quarantined) == ("generic", 1, 1)
    with Store(tmp_path / "p.duckdb", read_only=True) as st:
        assert st.con.execute("SELECT line, field FROM quarantine").fetchall() == [(2, "ts")]
        assert st.con.execute("SELECT query FROM events").fetchall() == [("red shoes",)]


def test_line_numbers_count_newlines_inside_quoted_values(tmp_path, store, settings):
    path = tmp_path / "reviews.csv"
    path.write_text('user_id,ts,event_type,text\nu1,2024-01-01,review,"great\nshoes\nreally"\nu2,nope,review,ok\n')
    result = ingest(path, store, settings=settings)
    assert (result.stored, result.quarantined) == (1, 1)
    with Store(store, read_only=True) as st:
        assert st.con.execute("SELECT line FROM quarantine").fetchall() == [(5,)]
        assert st.con.execute("SELECT text FROM events").fetchall() == [("great\nshoes\nreally",)]


def test_sessions_from_gaps_when_the_source_has_none(tmp_path, store, settings):
    path = tmp_path / "x.csv"
    path.write_text("user_id,ts,event_type\n"
                    "a,2024-01-01 10:00,page_view\na,2024-01-01 10:29,page_view\na,2024-01-01 11:00,page_view\n"
                    "b,2024-01-01 10:00,page_view\n")
    ingest(path, store, settings=settings)
    with Store(store, read_only=True) as st:
        assert st.info().sessions == 3  # a: 10:00-10:29, then 31 min idle; b: one
        from datetime import timedelta
        assert st.session_count(timedelta(minutes=20)) == 4


def test_read_only_sql_and_parquet_export(tmp_path, store, settings):
    from journeymap.exceptions import StoreError
    from journeymap.store import read_only_query

    path = tmp_path / "x.csv"
    path.write_text(ROWS)
    ingest(path, store, settings=settings)
    cols, rows = read_only_query(store, "SELECT event_type, count(*) n FROM events GROUP BY 1 ORDER BY 1")
    assert cols == ["event_type", "n"] and rows[0] == ("add_to_cart", 1)
    with pytest.raises(StoreError, match="journeymap sql is read-only"):
        read_only_query(store, "DELETE FROM events")
    with Store(store, read_only=True) as st:
        out = st.export(tmp_path / "out" / "events.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall()[0][0] == 4


def test_a_failed_first_ingest_leaves_no_store_behind(tmp_path, store, settings, monkeypatch):
    from journeymap.events import _ingest

    def boom(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(_ingest._Writer, "finish", boom)
    path = tmp_path / "x.csv"
    path.write_text(ROWS)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(path, store, settings=settings)
    assert not store.exists()


def test_compressed_files_are_read_and_detected(tmp_path, store, settings):
    import gzip

    path = tmp_path / "shop.csv.gz"
    path.write_bytes(gzip.compress(ROWS.encode()))
    result = ingest(path, store, settings=settings)
    assert (result.format, result.read, result.stored) == ("generic", 4, 4)
