"""Live traffic: shoppers respond to interventions with the planted effects of the truth file, the
loop drives a policy in process and over HTTP, and the command refuses what it cannot run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from journeymap.cli import app as cli_app
from journeymap.config import Settings
from journeymap.events.vocabulary import EVENT_TYPES
from journeymap.policy import OnlinePolicy, read_log
from journeymap.simulator._live import (
    ACTION_REQUEST,
    ACTIONS,
    BEST_ACTION,
    UPLIFT,
    FixedTarget,
    HttpTarget,
    InProcessTarget,
    live_truth,
    run_live,
)
from journeymap.simulator._personas import PERSONAS

SECRET = "test-secret-0123456789abcdef"


def _uniform(seed: int = 0):
    rng = random.Random(seed)
    return FixedTarget(lambda context, actions: rng.choice(actions)["id"])


@pytest.fixture(scope="module")
def uniform_run():
    return run_live(_uniform(), sessions=8000, seed=11)


def test_the_truth_names_one_best_action_per_persona_and_its_effects():
    truth = live_truth()
    assert truth["best_action_by_persona"] == {p: max(e, key=e.get) for p, e in UPLIFT.items()} == BEST_ACTION
    for p in PERSONAS:
        effects = UPLIFT[p.name]
        assert effects["nothing"] == 0.0 and effects["coupon"] == p.coupon_uplift  # the batch simulator's coupon
        ranked = sorted(effects.values(), reverse=True)
        assert ranked[0] - ranked[1] >= 0.06
    # where nothing is capped, the expected purchase rate moves by exactly the planted uplift
    rates = truth["expected_purchase_rate"]["window_shopper"]["visit_1"]
    for action in ACTIONS:
        assert rates[action] - rates["nothing"] == pytest.approx(UPLIFT["window_shopper"][action], abs=1e-6)
    assert set(truth["expected_purchase_rate"]["bargain_hunter"]["visit_1"].values()) == {0.0}  # cannot buy yet


def test_shoppers_respond_with_the_planted_effects(uniform_run):
    """Under a uniform policy, each action's purchase rate is the mean of the true expected rates
    the run recorded, and those match the truth file's persona averages."""
    frame = uniform_run.to_frame()
    assert len(frame) > 5000
    for action, rows in frame.groupby("action"):
        expected = rows[f"expected_{action}"]
        se = np.sqrt((expected * (1 - expected)).sum()) / len(rows)
        assert abs(rows["purchased"].mean() - expected.mean()) < 4 * se, action
    truth = uniform_run.truth["expected_purchase_rate"]
    first = frame[(frame.persona == "window_shopper") & (frame.visit == 1)]
    for action in ACTIONS:  # the device and channel mix averages out to the truth's number
        assert first[f"expected_{action}"].mean() == pytest.approx(truth["window_shopper"]["visit_1"][action], abs=0.006)


def test_a_persona_buys_more_under_its_best_action(uniform_run):
    frame = uniform_run.to_frame()
    mission = frame[frame.persona == "mission_buyer"]
    rate = mission.groupby("action")["purchased"].mean()
    assert rate["free_shipping"] - rate["nothing"] == pytest.approx(UPLIFT["mission_buyer"]["free_shipping"], abs=0.06)
    assert rate.idxmax() == "free_shipping"


def test_the_same_seed_sends_the_same_traffic():
    sent = []
    for _ in range(2):
        target = FixedTarget(lambda context, actions: "coupon")
        events = []
        target.send = events.extend
        run = run_live(target, sessions=300, seed=5)
        sent.append((events, run.decisions))
    assert sent[0] == sent[1]


def test_events_are_canonical_and_each_session_runs_forward(uniform_run):
    target = FixedTarget(lambda context, actions: "coupon")
    batches = []
    target.send = batches.append
    run_live(target, sessions=500, seed=2)
    events = [e for batch in batches for e in batch]
    assert {e["event_type"] for e in events} <= set(EVENT_TYPES)
    assert all({"user_id", "ts", "event_type", "session_id"} <= set(e) for e in events)
    by_session: dict[str, list[str]] = {}
    for e in events:
        by_session.setdefault(e["session_id"], []).append(e["ts"])
    assert all(ts == sorted(ts) for ts in by_session.values())
    assert any(e["event_type"] == "purchase" and e["price"] > 0 for e in events)


def test_an_online_policy_learns_in_process_and_logs_every_decision(tmp_path):
    with OnlinePolicy(tmp_path / "live.decisions.jsonl", secret=SECRET) as policy:
        run = run_live(InProcessTarget(policy), sessions=1500, seed=3)
        assert policy.pending == 0  # closing the run settled the last decisions at their horizon
    log = read_log(tmp_path / "live.decisions.jsonl")
    assert len(log) == len(run.decisions) == policy.bandit.n_learned_
    assert set(log.decisions["decision_id"]) == {d["decision_id"] for d in run.decisions}
    purchased = {d["decision_id"]: float(d["purchased"]) for d in run.decisions}
    assert log.decisions.set_index("decision_id")["reward"].to_dict() == purchased
    assert {"device", "channel", "category", "visit", "sessions"} <= set(log.context.columns)


def test_the_loop_drives_the_service_over_http(tmp_path):
    """The HTTP target against an app with the decision routes and an events route that hands
    its events to the reward join, as the service does."""
    from journeymap.serve._decisions import on_events, router

    app = FastAPI()
    app.include_router(router)
    app.state.store_path = tmp_path / "shop.duckdb"
    app.state.settings = Settings(secret=SECRET)
    app.state.keys = _keys()

    @app.post("/v1/events")
    def events(body: dict) -> dict:
        on_events(app.state, body["events"])
        return {"accepted": len(body["events"]), "rejected": []}

    with TestClient(app) as client:
        target = HttpTarget("http://testserver", api_key="decide-key-0123456789", client=client)
        run = run_live(target, sessions=200, seed=4)
    assert run.errors == [] and len(run.decisions) > 100
    log = app.state.policy.log()
    assert len(log) == len(run.decisions)
    assert log.summary()["rewarded"] > 0


def _keys():
    try:
        from journeymap.serve._auth import KeyRing
    except ImportError:
        return None
    return KeyRing({"decide-key-0123456789": frozenset({"decide"})})


def test_the_live_command_says_what_it_needs(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli_app, ["simulate", "--live", "--out", str(tmp_path / "run.jsonl")])
    assert result.exit_code != 0
    assert "--live needs --target, the service's address, like http://127.0.0.1:8000." in str(result.exception)
    result = runner.invoke(cli_app, ["simulate", "--live", "--target", "http://127.0.0.1:9", "--duration", "2s",
                                     "--out", str(tmp_path / "run.jsonl")])
    assert "Cannot reach http://127.0.0.1:9/v1/events" in str(result.exception)


def test_a_run_writes_its_decisions_and_truth(tmp_path, uniform_run):
    path, truth = uniform_run.write(tmp_path / "run.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(uniform_run.decisions) and set(rows[0]["expected"]) == set(ACTIONS)
    data = json.loads(truth.read_text())
    assert data["best_action_by_persona"] == BEST_ACTION
    assert data["user_personas"][rows[0]["user_id"]] == rows[0]["persona"]
    regret = uniform_run.regret([1000, len(rows)])
    # a uniform policy's regret is uniform random's, in expectation
    assert regret["regret_policy"].iloc[-1] == pytest.approx(regret["regret_uniform"].iloc[-1], rel=0.1)
    assert ACTION_REQUEST[0] == {"id": "nothing", "features": {"kind": "none", "discount": 0.0}}
