"""The other file kinds of multi-file formats, on small files whose right answer is known."""

from __future__ import annotations

import json

from journeymap.events import ingest
from journeymap.store import Store


def _events(store):
    with Store(store, read_only=True) as st:
        return st.con.execute(
            "SELECT ts::VARCHAR, event_type, session_id, item_id, category, brand, price, quantity, properties "
            "FROM events ORDER BY ts, item_id").fetchall()


def test_yoochoose_original_clicks_and_buys(tmp_path, store, settings):
    (tmp_path / "yoochoose-clicks.dat").write_text(
        "1,2014-04-07T10:51:09.277Z,214536502,0\n"
        "1,2014-04-07T10:54:09.868Z,214536500,S\n"
        "2,2014-04-07T13:56:37.614Z,214662742,7\n"
        "2,2014-04-07T13:57:19.373Z,214825110,2089209876\n")
    (tmp_path / "yoochoose-buys.dat").write_text("2,2014-04-07T14:00:01.000Z,214662742,1046,2\n")
    result = ingest(tmp_path, store, settings=settings)
    assert (result.format, result.read, result.stored) == ("yoochoose", 5, 5)
    rows = _events(store)
    assert [r[:8] for r in rows] == [
        ("2014-04-07 10:51:09.277", "product_view", "1", "214536502", None, None, None, None),
        ("2014-04-07 10:54:09.868", "product_view", "1", "214536500", None, None, None, None),
        ("2014-04-07 13:56:37.614", "product_view", "2", "214662742", "7", None, None, None),
        ("2014-04-07 13:57:19.373", "product_view", "2", "214825110", None, "2089209876", None, None),
        ("2014-04-07 14:00:01", "purchase", "2", "214662742", None, None, 1046.0, 2),
    ]
    assert json.loads(rows[1][8]) == {"special_offer": "true"}


def test_diginetica_purchases(tmp_path, store, settings):
    (tmp_path / "train-purchases.csv").write_text(
        "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n150;NA;2052185;2016-05-03;1;10627\n")
    result = ingest(tmp_path, store, settings=settings)
    assert (result.format, result.stored) == ("diginetica", 1)
    row = _events(store)[0]
    assert row[:4] == ("2016-05-03 00:34:12.185", "purchase", "150", "10627")
    assert json.loads(row[8]) == {"order_number": "1"}


def test_online_retail_ii_with_cancellation_and_timezone(tmp_path, store, settings):
    (tmp_path / "online_retail_II.csv").write_text(
        "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
        "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,12/1/2009 7:45,6.95,13085.0,United Kingdom\n"
        "C489449,22087,PAPER BUNTING WHITE LACE,-12,12/1/2009 10:33,2.95,16321.0,Australia\n"
        "489436,21755,LOVE BUILDING BLOCK WORD,18,6/1/2010 9:06,5.45,13078.0,United Kingdom\n")
    result = ingest(tmp_path, store, settings=settings, timezone="Europe/London")
    assert (result.format, result.stored) == ("online_retail", 3)
    rows = _events(store)
    # December is GMT (UTC+0); June is BST (UTC+1), so 09:06 local is 08:06 UTC.
    assert [(r[0], r[1], r[7]) for r in rows] == [
        ("2009-12-01 07:45:00", "purchase", 12),
        ("2009-12-01 10:33:00", "refund", 12),
        ("2010-06-01 08:06:00", "purchase", 18),
    ]


def test_retailrocket_events(tmp_path, store, settings):
    (tmp_path / "events.csv").write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,257597,addtocart,248676,\n"
        "1433224314164,257597,transaction,248676,4000\n")
    result = ingest(tmp_path, store, settings=settings)
    assert (result.format, result.stored) == ("retailrocket", 3)
    rows = _events(store)
    assert [(r[0], r[1]) for r in rows] == [
        ("2015-06-02 05:02:12.117", "product_view"),
        ("2015-06-02 05:50:14.164", "add_to_cart"),
        ("2015-06-02 05:51:54.164", "purchase"),
    ]
    assert json.loads(rows[2][8]) == {"transaction_id": "4000"}
