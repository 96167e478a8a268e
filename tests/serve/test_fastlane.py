"""The fast lane answers ordinary event and decision requests without FastAPI's machinery: the
replies must be FastAPI's, byte for byte where they are deterministic, and anything unusual must
still reach FastAPI."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from tests.serve.conftest import auth, make_app

EVENT = {"user_id": "lane-1", "ts": "2024-03-01 10:00:00", "event_type": "product_view", "item_id": "sku-1",
         "category": "shoes", "price": 19.5}

# (name, path, body as bytes, headers): each sent to both apps in this order
REQUESTS = [
    ("one event", "/v1/events", json.dumps(EVENT).encode(), auth("ingest")),
    ("the same again: a duplicate", "/v1/events", json.dumps(EVENT).encode(), auth("ingest")),
    ("a batch, one bad", "/v1/events", json.dumps({"events": [
        {**EVENT, "ts": "2024-03-01 10:00:05", "event_type": "add_to_cart"},
        {**EVENT, "ts": "not a time"}]}).encode(), auth("ingest")),
    ("every event rejected", "/v1/events", json.dumps({**EVENT, "price": -3}).encode(), auth("ingest")),
    ("an event the SQL path checks", "/v1/events", json.dumps({**EVENT, "ts": "2024-03-01T10:00:09Z",
                                                               "colour": "red"}).encode(), auth("ingest")),
    ("not JSON", "/v1/events", b"{nope", auth("ingest")),
    ("a JSON list", "/v1/events", b"[1, 2]", auth("ingest")),
    ("an empty batch", "/v1/events", b'{"events": []}', auth("ingest")),
    ("no key", "/v1/events", json.dumps(EVENT).encode(), {}),
    ("a wrong key", "/v1/events", json.dumps(EVENT).encode(), {"Authorization": "Bearer nope-nope-nope-nope"}),
    ("a key without the scope", "/v1/events", json.dumps(EVENT).encode(), auth("read")),
    ("a decision", "/v1/decisions", json.dumps({"user_id": "lane-1", "actions": [
        {"id": "coupon", "features": {"value": 5}}, "none"], "context": {"device": "mobile"},
        "ts": "2024-03-01T10:01:00Z"}).encode(), auth("decide")),
    ("a decision for an unknown user", "/v1/decisions", json.dumps({"user_id": "nobody", "actions": ["a", "b"],
                                                                     "ts": "2024-03-01T10:02:00Z"}).encode(),
     auth("decide")),
    ("a decision without actions", "/v1/decisions", b'{"user_id": "lane-1"}', auth("decide")),
    ("a decision with a bad time", "/v1/decisions", json.dumps({"user_id": "x", "actions": ["a"], "ts": "soon"}).encode(),
     auth("decide")),
    ("a decision that is not JSON", "/v1/decisions", b"{", auth("decide")),
    ("a decision with an ingest key", "/v1/decisions", b'{"actions": ["a"]}', auth("ingest")),
]


def _run(store, fast_lane: bool) -> tuple[list[tuple[int, dict, dict]], str]:
    with TestClient(make_app(store, fast_lane=fast_lane, update_profiles=False)) as client:
        replies = []
        for _, path, body, headers in REQUESTS:
            r = client.post(path, content=body, headers={"Content-Type": "application/json", **headers})
            content = r.json()
            if "decision_id" in content:  # random by design; checked for shape below
                assert len(content.pop("decision_id")) == 32
            replies.append((r.status_code, content, {k: v for k, v in r.headers.items()
                                                     if k in ("www-authenticate", "content-type")}))
        metrics = client.get("/metrics", headers=auth("read")).text
    return replies, metrics


def test_the_fast_lane_replies_as_fastapi_does(store, tmp_path):
    other = tmp_path / "other.duckdb"
    shutil.copy(store, other)
    lane, metrics = _run(store, fast_lane=True)
    plain, plain_metrics = _run(other, fast_lane=False)
    for (name, *_), got, expected in zip(REQUESTS, lane, plain):
        assert got == expected, name
    statuses = [status for status, _, _ in lane]
    assert statuses == [200, 200, 200, 422, 200, 400, 422, 422, 401, 401, 403, 200, 200, 422, 422, 422, 403]
    assert lane[1][1]["duplicates"] == 1 and lane[2][1]["accepted"] == 1 and lane[2][1]["rejected"] == 1
    # The lane answered the ordinary requests and the body errors it finds itself (its HTTPExceptions);
    # FastAPI the rest, before any work: keys, and bodies its request model refuses.
    assert 'journeymap_fast_lane_requests_total{answered_by="lane",route="/v1/events"} 8' in metrics
    assert 'journeymap_fast_lane_requests_total{answered_by="fastapi",route="/v1/events"} 3' in metrics
    assert 'journeymap_fast_lane_requests_total{answered_by="lane",route="/v1/decisions"} 3' in metrics
    assert 'journeymap_fast_lane_requests_total{answered_by="fastapi",route="/v1/decisions"} 3' in metrics
    assert "journeymap_fast_lane_requests_total{" not in plain_metrics
    # Every request is counted by route either way.
    assert 'journeymap_http_requests_total{method="POST",route="/v1/events",status="200"} 4' in metrics


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_go_to_fastapi(store, content_type):
    with TestClient(make_app(store, update_profiles=False)) as client:
        decision = client.post("/v1/decisions", content=b'{"actions": ["a"]}',
                               headers={"Content-Type": content_type, **auth("decide")})
        event = client.post("/v1/events", content=json.dumps(EVENT).encode(),
                            headers={"Content-Type": content_type, **auth("ingest")})
        metrics = client.get("/metrics", headers=auth("read")).text
    assert decision.status_code == 422  # FastAPI reads a model body only from JSON
    assert event.status_code == 200  # the events route reads the raw body whatever its type
    assert 'journeymap_fast_lane_requests_total{answered_by="fastapi",route="/v1/decisions"} 1' in metrics
    assert 'journeymap_fast_lane_requests_total{answered_by="fastapi",route="/v1/events"} 1' in metrics


def test_a_library_error_gets_the_apps_own_reply_through_the_lane(store, tmp_path):
    """A damaged decision log makes the first decision fail with the library's FormatError: the
    app's handler for it answers (400 and its sentence), lane or not."""
    other = tmp_path / "other.duckdb"
    shutil.copy(store, other)
    replies = []
    for path, fast_lane in ((store, True), (other, False)):
        path.with_suffix(".decisions.jsonl").write_text('not json\n{"decision_id": "b"}\n')
        with TestClient(make_app(path, fast_lane=fast_lane, update_profiles=False)) as client:
            r = client.post("/v1/decisions", json={"user_id": "u", "actions": ["a", "b"]}, headers=auth("decide"))
            replies.append((r.status_code, r.json()["detail"].replace(path.stem, "STORE")))
            metrics = client.get("/metrics", headers=auth("read")).text
        if fast_lane:
            assert 'journeymap_fast_lane_requests_total{answered_by="lane",route="/v1/decisions"} 1' in metrics
    assert replies[0] == replies[1]
    assert replies[0][0] == 400 and replies[0][1].endswith("STORE.decisions.jsonl, line 1: not valid JSON; the decision "
                                                          "log is damaged.")
