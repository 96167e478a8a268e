"""API keys: no or unknown key 401, a key without the route's scope 403, admin everywhere; per route family."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from fastapi.testclient import TestClient

from journeymap.exceptions import ConfigError
from journeymap.serve import create_app, parse_api_keys
from tests.serve.conftest import KEYS, SETTINGS, auth, make_app

EVENT = {"user_id": "auth-user", "ts": "2024-01-05 10:00:00", "event_type": "page_view"}
# (method, path, request arguments, the scope the route needs)
ROUTES = [
    ("POST", "/v1/events", {"json": EVENT}, "ingest"),
    ("GET", "/v1/users/auth-user/profile", {}, "read"),
    ("GET", "/v1/users/auth-user/predictions", {}, "read"),
    ("GET", "/v1/journeys/graph", {}, "read"),
    ("GET", "/v1/journeys/funnel", {"params": {"steps": "product_view,purchase"}}, "read"),
    ("GET", "/v1/journeys/attribution", {}, "read"),
    ("GET", "/v1/journeys/retention", {}, "read"),
    ("GET", "/v1/journeys/paths", {"params": {"start": "product_view"}}, "read"),
    ("GET", "/metrics", {}, "read"),
    ("GET", "/v1/admin/status", {}, "admin"),
]
if importlib.util.find_spec("journeymap.serve._decisions") is not None:
    ROUTES += [
        ("POST", "/v1/decisions", {"json": {"user_id": "auth-user", "actions": ["coupon", "none"]}}, "decide"),
        ("POST", "/v1/rewards", {"json": {"decision_id": "nope", "reward": 1.0}}, "decide"),
    ]
IDS = [f"{m} {p}" for m, p, _, _ in ROUTES]


@pytest.fixture(scope="module")
def client(shop, tmp_path_factory):
    store = tmp_path_factory.mktemp("auth") / "live.duckdb"
    shutil.copy(shop.store, store)
    with TestClient(make_app(store)) as c:
        yield c


@pytest.mark.parametrize(("method", "path", "kwargs", "scope"), ROUTES, ids=IDS)
def test_no_key_or_an_unknown_key_is_401(client, method, path, kwargs, scope):
    missing = client.request(method, path, **kwargs)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["detail"] == "Send an API key as 'Authorization: Bearer KEY'."
    wrong = client.request(method, path, headers={"Authorization": "Bearer not-a-key-at-all"}, **kwargs)
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "The API key is not valid.")
    basic = client.request(method, path, headers={"Authorization": f"Basic {KEYS['admin']}"}, **kwargs)
    assert basic.status_code == 401


@pytest.mark.parametrize(("method", "path", "kwargs", "scope"), ROUTES, ids=IDS)
def test_a_key_without_the_scope_is_403_and_with_it_passes(client, method, path, kwargs, scope):
    for other in ("ingest", "read", "decide"):
        response = client.request(method, path, headers=auth(other), **kwargs)
        if other == scope:
            assert response.status_code not in (401, 403), response.text
        else:
            assert response.status_code == 403
            assert response.json()["detail"] == (f"This API key lacks the '{scope}' scope this route needs "
                                                  f"(it has {other}).")
    assert client.request(method, path, headers=auth("admin"), **kwargs).status_code not in (401, 403)


def test_a_key_may_hold_several_scopes(client):
    assert client.post("/v1/events", json=EVENT, headers=auth("ingest+read")).status_code == 200
    assert client.get("/v1/journeys/graph", headers=auth("ingest+read")).status_code == 200
    assert client.get("/v1/admin/status", headers=auth("ingest+read")).status_code == 403


def test_health_and_docs_need_no_key(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/v1/events" in client.get("/openapi.json").json()["paths"]


def test_keys_from_the_environment(store, monkeypatch):
    monkeypatch.setenv("JOURNEYMAP_API_KEYS", f"{KEYS['ingest']}:ingest, {KEYS['read']}:read")
    with TestClient(create_app(store, SETTINGS)) as c:
        assert c.post("/v1/events", json=EVENT, headers=auth("ingest")).status_code == 200
        assert c.post("/v1/events", json=EVENT, headers=auth("read")).status_code == 403
        assert c.post("/v1/events", json=EVENT, headers=auth("admin")).status_code == 401


def test_key_text_parses_and_bad_entries_say_the_form():
    assert parse_api_keys("aaaaaaaaaaaaaaaa1:ingest+read,bbbbbbbbbbbbbbbb2:admin") == {
        "aaaaaaaaaaaaaaaa1": frozenset({"ingest", "read"}), "bbbbbbbbbbbbbbbb2": frozenset({"admin"})}
    with pytest.raises(ConfigError, match=r"^The API key 'aaaa…' has unknown scope\(s\) write; scopes are ingest, "
                                          r"read, decide, admin \(admin implies all\)\.$"):
        parse_api_keys("aaaaaaaaaaaaaaaa1:write")
    with pytest.raises(ConfigError, match=r"^An API key entry takes KEY:SCOPE\[\+SCOPE\.\.\.\]"):
        parse_api_keys("justakey")
    with pytest.raises(ConfigError, match=r"^The API key 'shor…' is 5 characters; use at least 16"):
        parse_api_keys("short:admin")


def test_no_keys_refuses_to_start(store):
    with pytest.raises(ConfigError, match=r"^No API keys are set, and the service does not run open\. Set some with "
                                          r"JOURNEYMAP_API_KEYS="):
        create_app(store, SETTINGS)
