"""Malformed input, per adapter: each bad row is quarantined with its exact reason, nothing is lost.

Every file holds one good row and one row per fault, so the right quarantine is known by
construction: read = stored + quarantined + duplicates, with stored == 1.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from journeymap.config import Limits
from journeymap.events import ingest
from journeymap.store import Store

BIG = 1 << 20  # a 1 MB field


@dataclass
class Case:
    format: str
    filename: str
    header: list[str] | None  # None: headerless format
    good: dict[str, str]
    ts: str  # timestamp column
    bad_ts: str
    early_ts: str  # parses, but before 1990
    ts_expected: str
    no_user: dict[str, str]  # changes that leave the row without a user id
    text_col: str  # a free-text column for the non-UTF-8 and 1 MB faults
    event: str | None = None
    price: str | None = None
    delimiter: str = ","
    ts_shown: str | None = None  # the bad time as the reason shows it, when not bad_ts itself

    @property
    def columns(self) -> list[str]:
        return self.header or list(self.good)


CASES = [
    Case("rees46", "events.csv",
         ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"],
         {"event_time": "2019-10-01 00:00:00 UTC", "event_type": "view", "product_id": "44600062",
          "category_id": "2103807459595387724", "category_code": "beauty.skincare", "brand": "shiseido",
          "price": "35.79", "user_id": "541312140", "user_session": "72d76fde-8bb3-4e00-8c23-a032dfed738c"},
         ts="event_time", bad_ts="2019-13-45 00:00:00 UTC", early_ts="1970-01-01 00:00:00 UTC",
         ts_expected="'YYYY-MM-DD HH:MM:SS UTC'", no_user={"user_id": ""}, text_col="brand",
         event="event_type", price="price"),
    Case("taobao", "UserBehavior.csv", None,
         {"user_id": "1", "item_id": "2268318", "category_id": "2520377", "behavior_type": "pv", "timestamp": "1511544070"},
         ts="timestamp", bad_ts="15115x4070", early_ts="86400", ts_expected="Unix seconds",
         no_user={"user_id": ""}, text_col="item_id", event="behavior_type"),
    Case("diginetica", "train-item-views.csv", ["session_id", "user_id", "item_id", "timeframe", "eventdate"],
         {"session_id": "1", "user_id": "NA", "item_id": "81766", "timeframe": "526309", "eventdate": "2016-05-09"},
         ts="eventdate", bad_ts="2016-05-32", early_ts="1970-05-09",
         ts_expected="eventdate 'YYYY-MM-DD' plus timeframe milliseconds",
         no_user={"session_id": "", "user_id": "NA"}, text_col="item_id", delimiter=";",
         ts_shown="2016-05-32 +526309ms"),
    Case("yoochoose", "yoochoose-buys.dat", None,
         {"session_id": "420374", "timestamp": "2014-04-06T18:44:58.314Z", "item_id": "214537888", "price": "12462", "quantity": "1"},
         ts="timestamp", bad_ts="2014-04-06T25:44:58.314Z", early_ts="1970-04-06T18:44:58.314Z",
         ts_expected="ISO time like 2014-04-07T10:51:09.277Z (Unix seconds in prepared files)",
         no_user={"session_id": ""}, text_col="item_id", price="price"),
    Case("retailrocket", "events.csv", ["timestamp", "visitorid", "event", "itemid", "transactionid"],
         {"timestamp": "1433221332117", "visitorid": "257597", "event": "view", "itemid": "355908", "transactionid": ""},
         ts="timestamp", bad_ts="14332213x2117", early_ts="1000", ts_expected="Unix milliseconds",
         no_user={"visitorid": ""}, text_col="itemid", event="event"),
    Case("online_retail", "online_retail.csv",
         ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"],
         {"InvoiceNo": "536365", "StockCode": "85123A", "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
          "Quantity": "6", "InvoiceDate": "2010-12-01 08:26:00", "UnitPrice": "2.55", "CustomerID": "17850.0",
          "Country": "United Kingdom"},
         ts="InvoiceDate", bad_ts="2010-12-01 8h26", early_ts="1970-12-01 08:26:00",
         ts_expected="'YYYY-MM-DD HH:MM:SS' or 'MM/DD/YYYY HH:MM'", no_user={"CustomerID": ""},
         text_col="Description", price="UnitPrice"),
    Case("ga4", "ga4.csv",
         ["event_date", "event_timestamp", "event_name", "user_pseudo_id", "items", "device.category"],
         {"event_date": "20210131", "event_timestamp": "1612069510766593", "event_name": "view_item",
          "user_pseudo_id": "1026454.4271112504",
          "items": '[{"item_id": "9196", "item_name": "Google Tee", "price": 20.0, "quantity": 1}]',
          "device.category": "mobile"},
         ts="event_timestamp", bad_ts="16120695x0766593", early_ts="1000000", ts_expected="Unix microseconds",
         no_user={"user_pseudo_id": ""}, text_col="device.category", event="event_name"),
    Case("generic", "shop.csv", ["customer", "time", "action", "sku", "amount"],
         {"customer": "c-1", "time": "2024-03-01 10:00:00", "action": "click", "sku": "A1", "amount": "9.99"},
         ts="time", bad_ts="yesterday", early_ts="1900-01-01 00:00:00",
         ts_expected="an ISO-8601 timestamp like 2024-01-31 13:45:00", no_user={"customer": ""},
         text_col="sku", event="action", price="amount"),
]
GENERIC_MAP = {"columns": {"user_id": "customer", "ts": "time", "event_type": "action", "item_id": "sku", "price": "amount"},
               "event_types": {"click": "product_view"}}


def _line(case: Case, values: dict[str, str] | list[str]) -> bytes:
    fields = [values[c] for c in case.columns] if isinstance(values, dict) else values
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=case.delimiter, lineterminator="\n").writerow(fields)
    return buffer.getvalue().encode()


def _unknown_event(format: str) -> str:
    """The reason for event type 'wave' (in full where the format's names are few)."""
    names = {"rees46": "cart, purchase, remove_from_cart, view", "taobao": "buy, cart, fav, pv",
             "retailrocket": "addtocart, transaction, view"}
    if format not in names:
        return "unknown event type 'wave'; expected one of "
    return (f"unknown event type 'wave'; expected one of {names[format]}, "
            "or map it under [event_types.aliases] in journeymap.toml")


def _build(case: Case) -> tuple[bytes, list[tuple[int, str, str]]]:
    """The file's bytes and the expected (line, field, reason) quarantine rows."""
    n = len(case.columns)
    rows: list[tuple[bytes, str | None, str | None]] = []  # bytes, field, reason (None: good)

    def variant(**changes: str) -> dict[str, str]:
        return {**case.good, **changes}

    rows.append((_line(case, case.good), None, None))
    good_fields = [case.good[c] for c in case.columns]
    rows.append((_line(case, good_fields[:2]), "row",
                 f"row has 2 of the {n} columns (truncated line or missing delimiter)"))
    rows.append((_line(case, good_fields + ["surplus"]), "row", f"row has {n + 1} columns, expected {n}"))
    rows.append((_line(case, variant(**{case.ts: case.bad_ts})), "ts",
                 f"timestamp '{case.ts_shown or case.bad_ts}' is not {case.ts_expected}"))
    rows.append((_line(case, variant(**{case.ts: case.early_ts})), "ts", "timestamp 19"))
    rows.append((_line(case, variant(**case.no_user)), "user_id", "user id is missing"))
    if case.event:
        rows.append((_line(case, variant(**{case.event: "wave"})), "event_type", _unknown_event(case.format)))
    if case.price:
        rows.append((_line(case, variant(**{case.price: "abc"})), "price", "price 'abc' is not a number"))
        rows.append((_line(case, variant(**{case.price: "-5.00"})), "price", "price '-5.00' is negative"))
    if case.format == "ga4":
        rows.append((_line(case, variant(items='[{"item_id": "1", "price": "abc"}]')), "price",
                     "price 'abc' is not a number"))
        rows.append((_line(case, variant(items="{not json")), "items", "items is not a JSON array of item objects"))
    bad_utf8 = _line(case, variant(**{case.text_col: "MARKER"})).replace(b"MARKER", b"caf\xe9 \xff")
    rows.append((bad_utf8, case.text_col, f"field '{case.text_col}' is not valid UTF-8 text"))
    rows.append((_line(case, variant(**{case.text_col: "x" * BIG})), case.text_col,
                 f"field '{case.text_col}' is {BIG} bytes, over the limit of 65536 bytes"))

    header = _line(case, case.header) if case.header else b""
    first = 2 if case.header else 1
    expected = [(first + i, f, r) for i, (_, f, r) in enumerate(rows) if f is not None]
    return header + b"".join(r[0] for r in rows), expected


def _mapping():
    from journeymap.events.adapters.generic import Mapping_

    return Mapping_(columns=dict(GENERIC_MAP["columns"]), event_types=dict(GENERIC_MAP["event_types"]))


@pytest.mark.parametrize("case", CASES, ids=[c.format for c in CASES])
def test_each_fault_is_quarantined_with_its_reason(case: Case, tmp_path: Path, store: Path, settings) -> None:
    data, expected = _build(case)
    path = tmp_path / case.filename
    path.write_bytes(data)
    kw = {"mapping": _mapping()} if case.format == "generic" else {"format": case.format}
    result = ingest(path, store, settings=settings, **kw)
    assert result.read == result.stored + result.quarantined + result.duplicates
    assert (result.stored, result.quarantined, result.duplicates) == (1, len(expected), 0)
    with Store(store, read_only=True) as st:
        got = st.con.execute("SELECT line, field, reason FROM quarantine ORDER BY line").fetchall()
    assert [(line, f) for line, f, _ in got] == [(line, f) for line, f, _ in expected]
    for (line, _, reason), (_, _, want) in zip(got, expected):
        assert reason.startswith(want), f"line {line}: {reason!r} does not start with {want!r}"
    # Detection agrees with the format the test named (headerless and generic files aside).
    if case.header and case.format != "generic":
        assert ingest(path, tmp_path / "auto.duckdb", settings=settings).format == case.format


def test_out_of_range_reason_names_the_allowed_range(tmp_path, store, settings):
    case = CASES[0]
    path = tmp_path / "e.csv"
    path.write_bytes(_line(case, case.header) + _line(case, {**case.good, "event_time": "2999-01-01 00:00:00 UTC"}))
    ingest(path, store, settings=settings)
    with Store(store, read_only=True) as st:
        reason = st.con.execute("SELECT reason FROM quarantine").fetchall()[0][0]
    latest = Limits().latest().strftime("%Y-%m-%d")
    assert reason.startswith("timestamp 2999-01-01 00:00:00 is out of range; expected 1990-01-01 00:00:00 to " + latest)


@pytest.mark.parametrize("case", CASES, ids=[c.format for c in CASES])
def test_empty_and_header_only_files_read_nothing(case: Case, tmp_path: Path, store: Path, settings) -> None:
    kw = {"mapping": _mapping()} if case.format == "generic" else {"format": case.format}
    empty = tmp_path / ("empty-" + case.filename)
    empty.write_bytes(b"")
    result = ingest(empty, store, settings=settings, **kw)
    assert (result.read, result.stored, result.quarantined, result.duplicates) == (0, 0, 0, 0)
    assert result.warnings == [f"{empty} is empty: nothing to read."]
    if case.header:
        header_only = tmp_path / case.filename
        header_only.write_bytes(_line(case, case.header))
        result = ingest(header_only, store, settings=settings, **kw)
        assert (result.read, result.stored, result.quarantined) == (0, 0, 0)


def test_empty_file_without_a_format_cannot_be_detected(tmp_path, store, settings):
    from journeymap.exceptions import FormatError

    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="Every input file is empty, so their format cannot be detected; pass --format"):
        ingest(empty, store, settings=settings)


def test_numbers_out_of_range(tmp_path, store, settings):
    path = tmp_path / "s.csv"
    path.write_text(
        "user_id,ts,event_type,price,quantity,rating\n"
        "u1,2024-01-01 00:00:00,purchase,1e12,1,\n"
        "u1,2024-01-01 00:00:01,purchase,1,1.5,\n"
        "u1,2024-01-01 00:00:02,purchase,1,-2,\n"
        "u1,2024-01-01 00:00:03,review,,,7\n"
        "u1,2024-01-01 00:00:04,purchase,inf,1,\n"
        "u1,2024-01-01 00:00:05,review,,,4.5\n"
    )
    result = ingest(path, store, settings=settings)
    assert (result.format, result.stored, result.quarantined) == ("generic", 1, 5)
    with Store(store, read_only=True) as st:
        got = st.con.execute("SELECT line, field, reason FROM quarantine ORDER BY line").fetchall()
    assert got == [
        (2, "price", "price '1e12' is out of range; expected 0 to 10,000,000"),
        (3, "quantity", "quantity '1.5' is not a whole number"),
        (4, "quantity", "quantity '-2' is negative"),
        (5, "rating", "rating '7' is out of range; expected 0 to 5"),
        (6, "price", "price 'inf' is not a finite number"),
    ]


def test_instacart_order_lines(tmp_path, store, settings):
    (tmp_path / "orders.csv").write_text(
        "order_id,user_id,eval_set,order_number,order_dow,order_hour_of_day,days_since_prior_order\n"
        "1,7,prior,1,2,8,\n2,7,prior,2,4,9,3.0\n")
    (tmp_path / "order_products__prior.csv").write_bytes(
        b"order_id,product_id,add_to_cart_order,reordered\n"
        b"1,100,1,0\n"            # good
        b"2,100,1,1\n"            # good: 3 days after order 1, at 9:00
        b"2,101\n"                # truncated
        b"9,100,1,0\n"            # order missing from orders.csv
        b"2,1\xff02,2,0\n"        # non-UTF-8
        + b"2," + b"7" * BIG + b",3,0\n")  # 1 MB field
    result = ingest(tmp_path, store, settings=settings)
    assert (result.format, result.read, result.stored, result.quarantined) == ("instacart", 6, 2, 4)
    with Store(store, read_only=True) as st:
        got = st.con.execute("SELECT line, field, reason FROM quarantine ORDER BY line").fetchall()
        times = [str(r[0]) for r in st.con.execute("SELECT ts FROM events ORDER BY ts").fetchall()]
    assert got == [
        (4, "row", "row has 2 of the 4 columns (truncated line or missing delimiter)"),
        (5, "order_id", "order 9 is not in orders.csv, so its user and time are unknown"),
        (6, "product_id", "field 'product_id' is not valid UTF-8 text"),
        (7, "product_id", f"field 'product_id' is {BIG} bytes, over the limit of 65536 bytes"),
    ]
    # First order on its weekday (2 = Tuesday 2017-01-03) at 8:00; the next 3 days later at 9:00.
    assert times == ["2017-01-03 08:00:00", "2017-01-06 09:00:00"]


def test_instacart_lines_without_orders_say_what_is_missing(tmp_path, store, settings):
    from journeymap.exceptions import FormatError

    (tmp_path / "order_products__prior.csv").write_text("order_id,product_id,add_to_cart_order,reordered\n1,100,1,0\n")
    with pytest.raises(FormatError, match="Instacart order_products files need orders.csv for their users and times; pass orders.csv too"):
        ingest(tmp_path, store, settings=settings)
