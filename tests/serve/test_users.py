"""Profiles and predictions include an event as soon as its POST returns, and equal a batch rebuild."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from journeymap.models import make_model
from journeymap.profiles import build_profiles, profile
from tests.conftest import SECRET
from tests.serve.conftest import SETTINGS, auth, make_app


def _live_events(user: str) -> list[dict]:
    """A visit that ends in a purchase, after the simulated week (as_of moves with it)."""
    return [
        {"user_id": user, "ts": "2024-01-09 09:00:00", "event_type": "product_view", "item_id": "live-A",
         "category": "apparel.shoes", "brand": "acme", "price": 80.0, "device": "desktop", "channel": "email"},
        {"user_id": user, "ts": "2024-01-09 09:03:00", "event_type": "add_to_cart", "item_id": "live-A",
         "category": "apparel.shoes", "brand": "acme", "price": 80.0, "device": "desktop", "channel": "email"},
        {"user_id": user, "ts": "2024-01-09 09:05:00", "event_type": "purchase", "item_id": "live-A",
         "category": "apparel.shoes", "brand": "acme", "price": 80.0, "quantity": 2, "device": "desktop"},
        {"user_id": user, "ts": "2024-01-09 09:06:00", "event_type": "search", "query": "Socks"},
    ]


def test_profile_after_live_events_equals_a_batch_rebuild(shop, store, tmp_path):
    known, new = shop.users[0], "brand-new-shopper"
    with TestClient(make_app(store)) as client:
        before = client.get(f"/v1/users/{known}/profile", headers=auth("read")).json()
        for user in (known, new):
            assert client.post("/v1/events", json={"events": _live_events(user)}, headers=auth("ingest")).status_code == 200
        live = {}
        # Wait for the background update covering both users' events (RFM ranks and CLV depend on all
        # users): the stored profiles then equal a rebuild in every field.
        updater = client.app.state.service.profiles
        assert updater.wait_for(client.app.state.service.pseudonymize(new), 30)
        for user in (new, known):
            response = client.get(f"/v1/users/{user}/profile", headers=auth("read"))
            assert response.status_code == 200 and response.headers["x-profile-current"] == "true"
            assert response.headers["x-profile-source"] == "stored"
            live[user] = response.json()
    # The rebuild: the same store file, profiles built from scratch.
    copy = tmp_path / "rebuilt.duckdb"
    shutil.copy(store, copy)
    build_profiles(copy, settings=SETTINGS)
    for user in (known, new):
        rebuilt = json.loads(json.dumps(profile(copy, raw_id=user, settings=SETTINGS).to_dict(), default=str))
        assert live[user] == rebuilt
    assert live[known]["events"] == before["events"] + 4 and live[known]["as_of"] == "2024-01-09 09:06:00"
    assert (live[new]["events"], live[new]["purchases"], live[new]["monetary"]) == (4, 1, 160.0)
    assert live[new]["top_searches"] == [{"query": "socks", "count": 1}]


def test_a_profile_reflects_an_event_at_once_and_equals_a_rebuild_in_the_users_own_fields(shop, store, tmp_path):
    from journeymap.profiles._live import POPULATION_FIELDS

    known = shop.users[1]
    with TestClient(make_app(store, profile_refresh_seconds=3600)) as client:  # no background update after the first
        service = client.app.state.service
        assert service.profiles.wait_ready(30)
        before = client.get(f"/v1/users/{known}/profile", headers=auth("read")).json()
        assert client.post("/v1/events", json={"events": _live_events(known)}, headers=auth("ingest")).status_code == 200
        started = time.perf_counter()
        response = client.get(f"/v1/users/{known}/profile", headers=auth("read"))
        seconds = time.perf_counter() - started
        assert response.status_code == 200 and response.headers["x-profile-source"] == "live"
        live = response.json()
        other = client.get(f"/v1/users/{shop.users[2]}/profile", headers=auth("read"))
        assert other.headers["x-profile-source"] == "stored"
    assert seconds < 1.0  # in practice 10-40 ms here; the bound only catches a full update sneaking in
    assert live["events"] == before["events"] + 4 and live["purchases"] == before["purchases"] + 1
    assert live["as_of"] == "2024-01-09 09:06:00" and live["recency_days"] == 0.0
    copy = tmp_path / "rebuilt.duckdb"
    shutil.copy(store, copy)
    build_profiles(copy, settings=SETTINGS)
    rebuilt = json.loads(json.dumps(profile(copy, raw_id=known, settings=SETTINGS).to_dict(), default=str))
    own = [k for k in rebuilt if k not in POPULATION_FIELDS]
    assert len(own) > 40
    assert {k: live[k] for k in own} == {k: rebuilt[k] for k in own}
    # The population-fitted fields are the last update's until the next one.
    assert {k: live[k] for k in POPULATION_FIELDS if k in live} == {k: before[k] for k in POPULATION_FIELDS if k in before}


def test_profile_json_is_the_cli_json(store, monkeypatch):
    from journeymap.cli import app as cli

    with TestClient(make_app(store)) as client:
        client.post("/v1/events", json={"events": _live_events("cli-user")}, headers=auth("ingest"))
        service = client.app.state.service
        assert service.profiles.wait_for(service.pseudonymize("cli-user"), 30)  # stored, as the CLI reads it
        served = client.get("/v1/users/cli-user/profile", headers=auth("read")).json()
    monkeypatch.setenv("JOURNEYMAP_SECRET", SECRET)
    printed = CliRunner().invoke(cli, ["profile", "--store", str(store), "--user", "cli-user", "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == served


def test_unknown_user_is_a_404_naming_the_pseudonym(client):
    response = client.get("/v1/users/nobody-here/profile", headers=auth("read"))
    pseudonym = client.app.state.service.pseudonymize("nobody-here")
    assert response.status_code == 404
    assert response.json()["detail"] == (f"No user with raw id 'nobody-here' (pseudonym {pseudonym}) in "
                                         f"{client.app.state.service.store_path}.")


def test_predictions_follow_the_session_as_events_arrive(store, tmp_path):
    model = make_model("markov").fit([["a", "b", "c"], ["a", "b", "c"], ["a", "d"], ["b", "e"]])
    path = model.save(tmp_path / "markov.npz")
    with TestClient(make_app(store, model_path=path)) as client:
        first = {"user_id": "p-1", "ts": "2024-01-09 10:00:00", "event_type": "product_view", "item_id": "a"}
        client.post("/v1/events", json=first, headers=auth("ingest"))
        after_a = client.get("/v1/users/p-1/predictions", params={"k": 2}, headers=auth("read")).json()
        client.post("/v1/events", json={**first, "ts": "2024-01-09 10:01:00", "item_id": "b"}, headers=auth("ingest"))
        after_b = client.get("/v1/users/p-1/predictions", params={"k": 2}, headers=auth("read")).json()
    expected_a, _ = model.predict_next([["a"]], k=2)
    expected_b, scores_b = model.predict_next([["a", "b"]], k=2)
    assert [p["item"] for p in after_a["next_items"]] == expected_a[0].tolist() == ["b", "d"]
    assert [p["item"] for p in after_b["next_items"]] == expected_b[0].tolist()
    assert np.allclose([p["score"] for p in after_b["next_items"]], scores_b[0])
    assert after_b["session"]["items"] == ["a", "b"] and after_b["session"]["events"] == 2
    assert after_b["model"]["version"] == 1 and after_b["model"]["class"] == "Markov"


def test_predict_user_gets_the_users_whole_history(shop, store, tmp_path, monkeypatch):
    """A model with ``predict_user`` (the behaviour model) gets every stored event of the user, in order."""
    import journeymap.models

    class Echo:
        def predict_user(self, events, k=20, gap=None):
            return {"events": [(e["ts"], e["event_type"], e["item_id"]) for e in events], "k": k}

    monkeypatch.setattr(journeymap.models, "load_model", lambda path: Echo())
    (tmp_path / "echo.npz").write_bytes(b"stub")
    user = shop.users[1]
    with TestClient(make_app(store, model_path=tmp_path / "echo.npz")) as client:
        posted = client.post("/v1/events", json=_live_events(user)[0], headers=auth("ingest"))
        assert posted.status_code == 200, posted.text
        got = client.get(f"/v1/users/{user}/predictions", params={"k": 5}, headers=auth("read")).json()
        with client.app.state.service.reader() as con:
            stored = con.execute("SELECT strftime(ts, '%Y-%m-%d %H:%M:%S.%f'), event_type, item_id FROM events "
                                 "WHERE user_id = ? ORDER BY ts, event_id", [got["user"]]).fetchall()
    assert [tuple(e) for e in got["events"]] == stored and got["k"] == 5
    assert "live-A" in [item for _, _, item in stored] and len(stored) > 1


def test_predictions_without_a_model_say_how_to_get_one(client):
    response = client.get("/v1/users/someone/predictions", headers=auth("read"))
    assert response.status_code == 503
    assert response.json()["detail"] == ("No model is loaded; start the service with --model PATH (train one with "
                                         "`journeymap train`).")


def test_decisions_read_every_stored_profile_from_memory_as_the_store_gives_it(store, shop):
    """After a profile update the decisions' profile fields come from one bulk read, held in memory:
    for known and unknown users alike they equal a read of the user's row."""
    import asyncio

    with TestClient(make_app(store)) as client:
        service = client.app.state.service
        assert service.profiles.wait_ready(30)
        deadline = time.monotonic() + 30
        while service._decision_snapshot() is None:  # loads in the background after the update
            assert time.monotonic() < deadline, "the profiles' decision fields did not load"
            time.sleep(0.05)
        raw_ids = [*shop.users[:25], "no-such-user"]
        from_memory = {raw: asyncio.run(service.profile_of_async(raw)) for raw in raw_ids}
        service._decision_profiles = None  # forget the per-user cache: each call reads the store
        service._snapshot = None
        service._snapshot_loading = service.profiles.covered  # and keep the bulk read from starting again
        from_store = {raw: service.profile_of(raw) for raw in raw_ids}
    assert from_memory == from_store
    assert from_memory["no-such-user"] is None
    known = [p for p in from_memory.values() if p is not None]
    assert len(known) == 25
    assert {p["events"] for p in known} != {None} and all(p["top_categories"] for p in known[:5])


def test_live_profiles_from_memory_equal_a_fresh_read_of_the_store(shop, store):
    """After the first live read of a user, their events, the catalog prices and the kept fields come
    from memory; through new events and a catalog price change the row equals one computed afresh
    from the store."""
    from journeymap.profiles._build import profiles_meta
    from journeymap.profiles._live import live_profile_row

    user = shop.users[3]
    with TestClient(make_app(store, profile_refresh_seconds=3600)) as client:
        service = client.app.state.service
        assert service.profiles.wait_ready(30)
        pseudonym = service.pseudonymize(user)
        rows = []
        for step, events in enumerate([
            _live_events(user)[:2],
            # the same item cheaper (the catalog's price changes) and a second visit
            [{**e, "ts": e["ts"].replace("09:0", "11:0"), "price": 20.0} for e in _live_events(user)],
            [{"user_id": user, "ts": "2024-01-09 12:00:00", "event_type": "review", "item_id": "live-A",
              "rating": 4.5, "text": "good"}],
        ]):
            writes = service.writer.catalog_writes
            assert client.post("/v1/events", json={"events": events}, headers=auth("ingest")).status_code == 200
            if step == 1:
                assert service.writer.catalog_writes == writes + 1
            response = client.get(f"/v1/users/{user}/profile", headers=auth("read"))
            assert response.headers["x-profile-source"] == "live"
            with service.reader() as con:
                meta = profiles_meta(con)
                fresh, as_of = live_profile_row(con, pseudonym, meta)
                stored_events = con.execute("SELECT count(*) FROM events WHERE user_id = ?", [pseudonym]).fetchall()[0][0]
                row, memory_as_of = service.live.row(con, pseudonym, meta, service.profiles.covered)
            assert row == fresh and memory_as_of == as_of
            assert len(service.live._users[pseudonym]) == stored_events  # held in memory, all of them
            rows.append(response.json())
    assert [r["events"] for r in rows] == [rows[0]["events"], rows[0]["events"] + 4, rows[0]["events"] + 5]
    assert rows[2]["mean_rating"] is not None and rows[1]["price_percentile"] != rows[0]["price_percentile"]


def test_events_committed_while_a_user_is_first_read_are_kept(monkeypatch):
    """The first read registers the user before reading the store: a commit landing during the read
    is kept, and one both in the read and in the commit counts once."""
    from datetime import datetime

    import journeymap.serve._live as live_module

    live = live_module.LiveProfiles(lambda: 0)
    stored = ("e1", datetime(2024, 1, 1), "product_view", None, "i", None, None, None, None, None, None, None, None)

    def read(con, user):  # the store read: meanwhile e1 (already in it) and e2 are committed
        live.committed([{"event_id": "e1", "user_id": user, "ts": datetime(2024, 1, 1), "event_type": "product_view",
                         "item_id": "i"},
                        {"event_id": "e2", "user_id": user, "ts": datetime(2024, 1, 2), "event_type": "purchase",
                         "item_id": "i", "price": 3.0}])
        return [stored]

    monkeypatch.setattr(live_module, "user_events", read)
    events = live._events_of(None, "u")
    assert sorted(e[0] for e in events) == ["e1", "e2"] and live._events == 2
    live.committed([{"event_id": "e3", "user_id": "u", "ts": datetime(2024, 1, 3), "event_type": "search",
                     "query": "x"}, {"event_id": "o1", "user_id": "other", "ts": datetime(2024, 1, 4),
                                     "event_type": "search"}])
    assert sorted(e[0] for e in live._events_of(None, "u")) == ["e1", "e2", "e3"]
    assert "other" not in live._users and live._seen_latest == datetime(2024, 1, 4)


def test_the_store_runs_on_every_core_but_one_unless_told(store, monkeypatch):
    """DuckDB's threads (profile updates, journey analyses, store reads) leave a core to the requests."""
    import journeymap.serve._service as service_module

    monkeypatch.setattr(service_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert service_module.default_db_threads() == 3
    monkeypatch.setattr(service_module.os, "sched_getaffinity", lambda pid: {0})
    assert service_module.default_db_threads() == 1
    for asked, expected in ((None, 1), (2, 2)):
        with TestClient(make_app(store, update_profiles=False, db_threads=asked)) as client, \
                client.app.state.service.reader() as con:
            assert con.execute("SELECT current_setting('threads')").fetchall()[0][0] == expected


def test_a_new_users_first_profile_is_live_and_counts_every_event(store):
    """A user the store has never seen: their first read is live (no stored profile to keep fields
    from), and it already counts all four events just posted."""
    from journeymap.profiles._live import POPULATION_FIELDS

    with TestClient(make_app(store, profile_refresh_seconds=3600)) as client:
        assert client.app.state.service.profiles.wait_ready(30)
        assert client.post("/v1/events", json={"events": _live_events("first-timer")},
                           headers=auth("ingest")).status_code == 200
        response = client.get("/v1/users/first-timer/profile", headers=auth("read"))
    assert response.status_code == 200 and response.headers["x-profile-source"] == "live"
    live = response.json()
    assert (live["events"], live["purchases"], live["items_bought"], live["monetary"]) == (4, 1, 2, 160.0)
    assert live["top_searches"] == [{"query": "socks", "count": 1}] and live["funnel_stage"] == "purchased"
    shown = [name for name in POPULATION_FIELDS if name in live]
    assert {"rfm", "segment", "purchase_propensity"} <= set(shown)
    assert all(live[name] is None for name in shown)


def test_live_memory_forgets_the_least_recently_read_users_past_its_bound(monkeypatch):
    """Past ``max_events`` (new commits of held users count too) the least recently read users go;
    their next read reads the store again."""
    from datetime import datetime

    import journeymap.serve._live as live_module

    reads: list[str] = []

    def read(con, user):
        reads.append(user)
        return [(f"{user}-{i}", datetime(2024, 1, 1, 0, i), "product_view", *[None] * 10) for i in range(3)]

    monkeypatch.setattr(live_module, "user_events", read)
    live = live_module.LiveProfiles(lambda: 0, max_events=7)
    for user in ("a", "b"):
        live._events_of(None, user)
    live._events_of(None, "a")  # a is now the most recently read
    live.committed([{"event_id": f"b-new{i}", "user_id": "b", "ts": datetime(2024, 1, 2), "event_type": "search"}
                    for i in range(2)])  # 8 events held: b, the least recently read, goes
    assert list(live._users) == ["a"] and live._events == 3
    assert len(live._events_of(None, "b")) == 3 and reads == ["a", "b", "b"]
