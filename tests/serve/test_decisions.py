"""The decision routes on a FastAPI app of their own: the reply's keys, rewards joined from events
and explicitly, scopes, and the decision log beside the store being a log ``read_log`` reads."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from journeymap.config import Settings
from journeymap.policy import read_log
from journeymap.privacy import pseudonymize
from journeymap.serve import _decisions
from journeymap.serve._decisions import ensure_policy, on_events, router

SECRET = "test-secret-0123456789abcdef"
DECIDE_KEY = "decide-key-0123456789"
INGEST_KEY = "ingest-key-0123456789"
ACTIONS = [{"id": "coupon", "features": {"discount": 0.1}}, {"id": "free_shipping", "features": {"kind": "shipping"}},
           {"id": "carousel"}, {"id": "nothing"}]
T0 = "2024-05-01T12:00:00Z"


def _app(store, profiles: dict | None = None) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.state.store_path = store
    app.state.settings = Settings(secret=SECRET)
    if _decisions.AUTH is not None:
        from journeymap.serve._auth import KeyRing

        app.state.keys = KeyRing({DECIDE_KEY: frozenset({"decide"}), INGEST_KEY: frozenset({"ingest"})})
    if profiles is not None:
        app.state.profile_of = profiles.get
    return app


@pytest.fixture
def client(tmp_path):
    app = _app(tmp_path / "shop.duckdb", {"u1": {"sessions": 3, "lifecycle": "active", "preferred_device": "mobile"}})
    with TestClient(app, headers={"Authorization": f"Bearer {DECIDE_KEY}"}) as c:
        yield c


def _decide(client, user="u1", **extra) -> dict:
    reply = client.post("/v1/decisions", json={"user_id": user, "actions": ACTIONS, "ts": T0, **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_decision_replies_with_its_id_action_probability_and_pmf(client):
    body = _decide(client, context={"device": "mobile", "page": "product"})
    assert set(body) == {"decision_id", "action", "probability", "pmf"}
    assert list(body["pmf"]) == ["coupon", "free_shipping", "carousel", "nothing"]
    assert sum(body["pmf"].values()) == pytest.approx(1.0)
    assert body["probability"] == body["pmf"][body["action"]]
    record = client.get(f"/v1/decisions/{body['decision_id']}").json()
    assert record["reward"] is None  # pending
    assert record["user"] == pseudonymize("u1", SECRET)
    # the profile's fields and the request's own context, side by side
    assert record["context"] == {"sessions": 3, "lifecycle": "active", "preferred_device": "mobile",
                                 "device": "mobile", "page": "product"}


def test_rewards_join_from_events_and_the_log_reads_back(client, tmp_path):
    app = client.app
    first, second = _decide(client), _decide(client, user="u2")
    settled = on_events(app.state, [{"user_id": pseudonymize("u1", SECRET), "ts": "2024-05-01 12:10:00",
                                     "event_type": "purchase", "price": 10.0}])
    assert [s.decision_id for s in settled] == [first["decision_id"]]
    settled = on_events(app, [{"user_id": "u9", "ts": "2024-05-01T13:00:00Z", "event_type": "page_view"}])
    assert [(s.decision_id, s.reward) for s in settled] == [(second["decision_id"], 0.0)]
    log = read_log(tmp_path / "shop.decisions.jsonl")
    rows = log.decisions.set_index("decision_id")
    assert rows.loc[first["decision_id"], "reward"] == 1.0 and rows.loc[second["decision_id"], "reward"] == 0.0
    assert rows.loc[first["decision_id"], "propensity"] == pytest.approx(first["probability"])
    assert log.actions == ("coupon", "free_shipping", "carousel", "nothing")


def test_an_explicit_reward_is_joined_once(client):
    decision = _decide(client)
    reply = client.post("/v1/rewards", json={"decision_id": decision["decision_id"], "reward": 1})
    assert reply.status_code == 200
    assert reply.json() == {"decision_id": decision["decision_id"], "reward": 1.0, "joined": True, "source": "explicit"}
    assert client.post("/v1/rewards", json={"decision_id": decision["decision_id"], "reward": 1}).json()["joined"] is False
    conflict = client.post("/v1/rewards", json={"decision_id": decision["decision_id"], "reward": 0})
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == (f"Decision '{decision['decision_id']}' already has reward 1.0; a reward is "
                                         "joined and learned once.")
    missing = client.post("/v1/rewards", json={"decision_id": "nope", "reward": 1})
    assert (missing.status_code, missing.json()["detail"]) == (404, "No decision 'nope' here.")
    assert client.app.state.policy.bandit.n_learned_ == 1


def test_bad_actions_get_a_sentence(client):
    reply = client.post("/v1/decisions", json={"user_id": "u1", "actions": ["coupon", "coupon"]})
    assert (reply.status_code, reply.json()["detail"]) == \
        (422, "Action 'coupon' appears twice in one decision; give each action once.")
    reply = client.post("/v1/decisions", json={"user_id": "u1", "actions": []})
    assert reply.status_code == 422 and reply.json()["detail"].startswith("A decision needs a non-empty list of actions")
    reply = client.post("/v1/decisions", json={"user_id": "u1", "actions": ["a"], "ts": "yesterday"})
    assert (reply.status_code, reply.json()["detail"]) == \
        (422, "A decision's ts must be an ISO 8601 time like 2024-05-01T12:00:00Z. Got 'yesterday'.")


@pytest.mark.skipif(_decisions.AUTH is None, reason="the service's API keys module is not there")
def test_decisions_need_the_decide_scope(tmp_path):
    with TestClient(_app(tmp_path / "shop.duckdb")) as c:
        body = {"user_id": "u1", "actions": ACTIONS}
        assert c.post("/v1/decisions", json=body).status_code == 401
        lacking = c.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {INGEST_KEY}"})
        assert lacking.status_code == 403
        assert c.post("/v1/rewards", json={"decision_id": "x", "reward": 1},
                      headers={"Authorization": f"Bearer {INGEST_KEY}"}).status_code == 403
        assert c.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {DECIDE_KEY}"}).status_code == 200


def test_events_cost_nothing_until_decisions_exist_and_resume_after_a_restart(tmp_path):
    store = tmp_path / "shop.duckdb"
    app = _app(store)
    assert on_events(app.state, [{"user_id": "u1", "ts": T0, "event_type": "purchase"}]) == []
    assert not hasattr(app.state, "policy") and list(tmp_path.iterdir()) == []

    decision = ensure_policy(app.state).decide("u1", ["a", "b"], ts=T0)
    restarted = _app(store)  # a new process: the policy comes back from the files on the first events
    settled = on_events(restarted.state, [{"user_id": "u1", "ts": "2024-05-01T12:01:00Z", "event_type": "purchase"}])
    assert [(s.decision_id, s.reward) for s in settled] == [(decision.decision_id, 1.0)]


def test_the_service_joins_rewards_from_the_events_it_stores(store, shop):
    """Through ``create_app``: a decision, then a purchase posted to /v1/events, whose hook joins
    the reward before the reply; stopping the service checkpoints the bandit."""
    from datetime import UTC, datetime

    from tests.serve.conftest import KEYS, make_app

    user = shop.users[0]
    decide = {"Authorization": f"Bearer {KEYS['decide']}"}
    with TestClient(make_app(store)) as c:
        decision = c.post("/v1/decisions", json={"user_id": user, "actions": ACTIONS}, headers=decide)
        assert decision.status_code == 200, decision.text
        decision_id = decision.json()["decision_id"]
        purchase = {"user_id": user, "ts": datetime.now(UTC).isoformat(), "event_type": "purchase",
                    "item_id": "1000001", "price": 12.5, "quantity": 1}
        stored = c.post("/v1/events", json={"events": [purchase]},
                        headers={"Authorization": f"Bearer {KEYS['ingest']}"})
        assert stored.status_code < 300 and stored.json()["accepted"] == 1, stored.text
        record = c.get(f"/v1/decisions/{decision_id}", headers=decide).json()
        assert (record["reward"], record["reward_source"]) == (1.0, "event")
    assert store.with_suffix(".decisions.bandit.zip").exists()


# -- the [policy] table of journeymap.toml -------------------------------------------------------------
def _configured_app(tmp_path, policy_table: str) -> FastAPI:
    """An app whose settings come from a journeymap.toml with this [policy] table."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "journeymap.toml").write_text(f'secret = "{SECRET}"\n{policy_table}')
    app = _app(tmp_path / "shop.duckdb")
    app.state.settings = Settings.load(tmp_path / "journeymap.toml")
    return app


def _client(app: FastAPI) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {DECIDE_KEY}"})


def _pmf_after_one_reward(c: TestClient) -> dict[str, float]:
    """The pmf of a second decision, once the first one's action has earned 1: that action leads."""
    first = _decide(c)
    assert c.post("/v1/rewards", json={"decision_id": first["decision_id"], "reward": 1}).status_code == 200
    pmf = _decide(c)["pmf"]
    assert max(pmf, key=pmf.get) == first["action"]
    return pmf


def test_the_exploration_comes_from_the_config(tmp_path):
    """Epsilon-greedy: 1 - epsilon + epsilon / 4 on the leading action, epsilon / 4 on each other;
    epsilon 1 is uniform. (The default SquareCB gives 0.2514 and 0.2495 here.)"""
    app = _configured_app(tmp_path, '[policy]\nexploration = "epsilon"\nepsilon = 0.2\n')
    with _client(app) as c:
        assert sorted(_pmf_after_one_reward(c).values()) == pytest.approx([0.05, 0.05, 0.05, 0.85])
    app = _configured_app(tmp_path / "uniform", '[policy]\nexploration = "epsilon"\nepsilon = 1.0\n')
    with _client(app) as c:
        first = _decide(c)
        c.post("/v1/rewards", json={"decision_id": first["decision_id"], "reward": 1})
        assert list(_decide(c)["pmf"].values()) == pytest.approx([0.25] * 4)
    assert app.state.policy.bandit.arguments().startswith("--cb_explore_adf --epsilon 1.0 ")


def test_a_library_callers_policy_config_overrides_the_file_key_by_key(tmp_path):
    app = _configured_app(tmp_path, '[policy]\nexploration = "epsilon"\nepsilon = 0.2\n[policy.reward]\nhorizon = "5m"\n')
    app.state.policy_config = {"epsilon": 0.6}
    with _client(app) as c:
        assert max(_pmf_after_one_reward(c).values()) == pytest.approx(0.4 + 0.6 / 4)
    config = app.state.policy.config
    assert (config.exploration, config.reward.horizon.total_seconds()) == ("epsilon", 300.0)  # the rest from the file


def test_the_reward_horizon_comes_from_the_config(tmp_path):
    """A purchase ten minutes after the decision: outside a 5-minute horizon it earns nothing (the
    default 30 minutes would give 1)."""
    app = _configured_app(tmp_path, '[policy.reward]\nhorizon = "5m"\n')
    with _client(app) as c:
        decision = _decide(c)
        settled = on_events(app.state, [{"user_id": "u1", "ts": "2024-05-01T12:10:00Z", "event_type": "purchase"}])
        assert [(s.decision_id, s.reward, s.source) for s in settled] == [(decision["decision_id"], 0.0, "horizon")]
        assert c.get(f"/v1/decisions/{decision['decision_id']}").json()["rewarded_at"] == "2024-05-01T12:05:00Z"


def test_reward_events_and_values_come_from_the_config(tmp_path):
    """A cart earns its 0.3 once the horizon passes without a purchase; a purchase, worth the
    most, settles at once; a page view is not a rewarded event type."""
    app = _configured_app(tmp_path, '[policy.reward]\nevents = {purchase = 1.0, add_to_cart = 0.3}\n')
    with _client(app) as c:
        carted, bought, browsed = _decide(c), _decide(c, user="u2"), _decide(c, user="u3")
        events = [{"user_id": "u1", "ts": "2024-05-01T12:05:00Z", "event_type": "add_to_cart"},
                  {"user_id": "u3", "ts": "2024-05-01T12:06:00Z", "event_type": "page_view"},
                  {"user_id": "u2", "ts": "2024-05-01T12:07:00Z", "event_type": "purchase"}]
        assert [(s.decision_id, s.reward) for s in on_events(app.state, events)] == [(bought["decision_id"], 1.0)]
        later = on_events(app.state, [{"user_id": "u9", "ts": "2024-05-01T13:00:00Z", "event_type": "page_view"}])
        assert sorted((s.decision_id, s.reward, s.source) for s in later) == sorted(
            [(carted["decision_id"], 0.3, "event"), (browsed["decision_id"], 0.0, "horizon")])


def test_the_decision_log_goes_where_the_config_says_and_resumes_from_there(tmp_path):
    app = _configured_app(tmp_path, '[policy]\nlog = "decisions/live.jsonl"\n')
    with _client(app) as c:
        decision = _decide(c)
    assert (tmp_path / "decisions" / "live.pending.jsonl").exists()
    assert not list(tmp_path.glob("shop.decisions*"))  # nothing beside the store
    restarted = _configured_app(tmp_path, '[policy]\nlog = "decisions/live.jsonl"\n')  # a new process
    settled = on_events(restarted.state, [{"user_id": "u1", "ts": "2024-05-01T12:01:00Z", "event_type": "purchase"}])
    assert [(s.decision_id, s.reward) for s in settled] == [(decision["decision_id"], 1.0)]
    assert read_log(tmp_path / "decisions" / "live.jsonl").decisions["decision_id"].tolist() == [decision["decision_id"]]
