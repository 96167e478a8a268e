"""POST /v1/events: batch ingest's rules, messages and event ids; idempotent; quarantined rejects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from journeymap.events import ingest
from journeymap.store import Store
from tests.serve.conftest import SETTINGS, auth

GOOD = {"user_id": "live-1", "ts": "2024-01-05 10:00:00", "event_type": "product_view", "item_id": "sku-1",
        "price": 19.9, "category": "shoes", "coupon": "SPRING", "device": "mobile"}
# One bad row per rule, each with the message batch ingest gives it.
BAD = [
    {"user_id": "u", "ts": "yesterday", "event_type": "product_view"},
    {"user_id": "u", "ts": "1850-01-01 00:00:00", "event_type": "product_view"},
    {"user_id": "u", "ts": "2024-01-05 10:00:00", "event_type": "teleport"},
    {"user_id": "", "ts": "2024-01-05 10:00:00", "event_type": "product_view"},
    {"user_id": "u", "ts": "", "event_type": "product_view"},
    {"user_id": "u", "ts": "2024-01-05 10:00:00", "event_type": "purchase", "price": -3},
    {"user_id": "u", "ts": "2024-01-05 10:00:00", "event_type": "purchase", "price": "cheap"},
    {"user_id": "u", "ts": "2024-01-05 10:00:00", "event_type": "purchase", "quantity": 1.5},
    {"user_id": "u", "ts": "2024-01-05 10:00:00", "event_type": "review", "rating": 9},
    {"user_id": "u", "ts": "2024-01-05 10:00:00", "event_type": "page_view", "properties": "[1, 2]"},
    ["not", "an", "object"],
]


def _batch_reasons(tmp_path: Path, rows: list) -> tuple[list[tuple], list[str]]:
    """What `journeymap ingest` makes of the same rows as a JSON-lines file: quarantine and event ids."""
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "batch.duckdb"
    ingest(path, store, settings=SETTINGS, format="generic")
    with Store(store, read_only=True) as st:
        quarantine = st.con.execute("SELECT line, field, reason FROM quarantine ORDER BY line").fetchall()
        ids = [str(r[0]) for r in st.con.execute("SELECT event_id FROM events ORDER BY ts").fetchall()]
    return quarantine, ids


def test_every_validation_message_is_the_batch_ingest_message(client, tmp_path):
    response = client.post("/v1/events", json={"events": BAD}, headers=auth("ingest"))
    assert response.status_code == 422  # nothing accepted
    body = response.json()
    assert (body["received"], body["accepted"], body["rejected"]) == (len(BAD), 0, len(BAD))
    got = [(r["index"] + 1, r["field"], r["reason"]) for r in body["results"]]
    expected, _ = _batch_reasons(tmp_path, BAD)
    # The latest valid time is "now + 1 day": it moves between the two runs.
    latest = re.compile(r"to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
    assert [(n, f, latest.sub("to NOW", r)) for n, f, r in got] == [(n, f, latest.sub("to NOW", r)) for n, f, r in expected]
    assert ("ts", "timestamp 'yesterday' is not an ISO-8601 timestamp like 2024-01-31 13:45:00") in \
        [(f, r) for _, f, r in got]
    assert got[-1][1:] == ("row", "line is a JSON list, expected an object")


def test_a_good_event_gets_the_batch_event_id_and_is_stored_pseudonymized(client, store, tmp_path):
    response = client.post("/v1/events", json=GOOD, headers=auth("ingest"))
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1 and body["results"][0]["status"] == "accepted"
    _, batch_ids = _batch_reasons(tmp_path, [GOOD])
    assert body["results"][0]["event_id"] == batch_ids[0]
    with client.app.state.service.reader() as con:
        row = con.execute("SELECT user_id, item_id, price, properties, ingest_id FROM events WHERE event_id = ?",
                          [batch_ids[0]]).fetchall()[0]
        fmt = con.execute("SELECT format FROM ingests WHERE ingest_id = ?", [row[4]]).fetchall()[0][0]
    assert row[0] == client.app.state.service.pseudonymize("live-1") and row[0] != "live-1"
    assert row[1:4] == ("sku-1", 19.9, '{"coupon":"SPRING"}') and fmt == "api"


def test_a_resend_stores_nothing_new_and_says_so(client):
    batch = {"events": [GOOD, {**GOOD, "item_id": "sku-2"}, GOOD]}  # the third repeats the first
    first = client.post("/v1/events", json=batch, headers=auth("ingest")).json()
    assert [r["status"] for r in first["results"]] == ["accepted", "accepted", "duplicate"]
    assert first["results"][0]["event_id"] == first["results"][2]["event_id"]
    with client.app.state.service.reader() as con:
        before = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    again = client.post("/v1/events", json=batch, headers=auth("ingest"))
    assert again.status_code == 200
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 3
    with client.app.state.service.reader() as con:
        assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == before


def test_rejected_events_go_to_quarantine_with_the_user_pseudonymized(client):
    bad = {"user_id": "secret-shopper-42", "ts": "yesterday", "event_type": "product_view"}
    body = client.post("/v1/events", json={"events": [GOOD, bad]}, headers=auth("ingest")).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    with client.app.state.service.reader() as con:
        rows = con.execute("SELECT file, line, field, reason, content FROM quarantine WHERE file = 'POST /v1/events'").fetchall()
    assert [r[1:4] for r in rows] == [(2, "ts", body["results"][1]["reason"])]
    content = json.loads(rows[0][4])
    assert "secret-shopper-42" not in rows[0][4]
    assert content["user_id"] == client.app.state.service.pseudonymize("secret-shopper-42")


def test_a_missing_field_is_rejected_per_event(client):
    body = client.post("/v1/events", json={"events": [{"user_id": "u", "event_type": "search"}]},
                       headers=auth("ingest")).json()
    assert [(r["field"], r["reason"]) for r in body["results"]] == [("ts", "timestamp is missing")]


@pytest.mark.parametrize(("payload", "status", "detail"), [
    (b"{not json", 400, 'The body is not valid JSON (Expecting property name enclosed in double quotes); send one '
                        'event object or {"events": [...]}.'),
    (b"[1, 2]", 422, 'Send one event object or {"events": [...]}. Got a JSON list.'),
    (b'{"events": {}}', 422, '"events" must be a list of event objects. Got a JSON dict.'),
    (b'{"events": []}', 422, 'The batch holds no events; send one event object or {"events": [...]} with at least one.'),
])
def test_malformed_bodies_get_a_short_reason(client, payload, status, detail):
    response = client.post("/v1/events", content=payload, headers=auth("ingest"))
    assert (response.status_code, response.json()["detail"]) == (status, detail)


def test_requests_written_together_keep_their_own_results(client):
    # Many requests at once share writer transactions (group commit); each gets its own answer.
    from concurrent.futures import ThreadPoolExecutor

    def post(i: int) -> dict:
        events = [{**GOOD, "item_id": f"sku-{i}"}, {**GOOD, "ts": "not a time", "item_id": f"x-{i}"}]
        return client.post("/v1/events", json={"events": events}, headers=auth("ingest")).json()

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(post, range(16)))
    assert all([r["status"] for r in b["results"]] == ["accepted", "rejected"] for b in bodies)
    assert len({b["results"][0]["event_id"] for b in bodies}) == 16
    with client.app.state.service.reader() as con:
        stored = con.execute("SELECT count(*) FROM events WHERE item_id LIKE 'sku-%'").fetchall()[0][0]
    assert stored == 16


def test_a_store_written_with_another_secret_is_refused_at_start(store):
    from fastapi.testclient import TestClient

    from journeymap.config import Settings
    from journeymap.exceptions import ConfigError
    from tests.serve.conftest import make_app

    app = make_app(store, settings=Settings(secret="another-secret-0123456789"))
    with pytest.raises(ConfigError, match="was written with a different pseudonymization secret"):
        with TestClient(app):
            pass
    assert app.state.service.store is None  # nothing left open
