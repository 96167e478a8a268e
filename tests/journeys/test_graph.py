"""The journey map on hand-built logs whose edges, probabilities and times are known by construction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.journeys import Filters, Journeys
from journeymap.journeys._graph import step_matrix, transition_graph
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

T0 = datetime(2024, 3, 1, 12, 0, 0)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(sep=" ")


def ev(user: str, session: str | None, seconds: float, event_type: str, device: str = "desktop", **extra) -> dict:
    return {"user_id": user, "session_id": session, "ts": at(seconds), "event_type": event_type,
            "device": device, **extra}


# s1, s2: view -> cart (+10 s, +20 s) -> purchase (+30 s, +60 s); s3: view -> cart (+30 s) -> leave;
# s4: view -> view (+6 s) -> leave. u3 has two sessions; s2 is the only mobile one.
ROWS = [
    ev("u1", "s1", 0, "product_view", properties={"page": "pdp"}), ev("u1", "s1", 10, "add_to_cart"),
    ev("u1", "s1", 40, "purchase"),
    ev("u2", "s2", 0, "product_view", "mobile"), ev("u2", "s2", 20, "add_to_cart", "mobile"),
    ev("u2", "s2", 80, "purchase", "mobile"),
    ev("u3", "s3", 0, "product_view"), ev("u3", "s3", 30, "add_to_cart"),
    ev("u3", "s4", 3600, "product_view"), ev("u3", "s4", 3606, "product_view"),
]


@pytest.fixture
def shop(tmp_path):
    return make_store(tmp_path, ROWS)


@pytest.fixture
def journeys(shop):
    with Journeys.open(shop, Settings(secret=SECRET)) as j:
        yield j


def edges(graph) -> dict[tuple[str, str], object]:
    return {(e.source, e.target): e for e in graph.edges}


def test_edges_counts_users_and_probabilities(journeys):
    g = transition_graph(journeys)
    e = edges(g)
    assert {k: v.count for k, v in e.items()} == {
        ("session_start", "product_view"): 4, ("product_view", "add_to_cart"): 3,
        ("add_to_cart", "purchase"): 2, ("add_to_cart", "session_end"): 1, ("purchase", "session_end"): 2,
        ("product_view", "product_view"): 1, ("product_view", "session_end"): 1,
    }
    assert e["session_start", "product_view"].users == 3
    # product_view leaves 5 times: 3 to the cart, 1 to itself, 1 to the end.
    assert e["product_view", "add_to_cart"].probability == pytest.approx(3 / 5)
    assert e["add_to_cart", "purchase"].probability == pytest.approx(2 / 3)
    assert e["add_to_cart", "session_end"].probability == pytest.approx(1 / 3)
    # product_view is entered 5 times: 4 from session_start, 1 from itself.
    assert e["session_start", "product_view"].probability_in == pytest.approx(4 / 5)
    assert e["purchase", "session_end"].probability_in == pytest.approx(2 / 4)
    assert g.sessions == 4


def test_median_and_p95_seconds_are_exact(journeys):
    e = edges(transition_graph(journeys))
    cart = e["product_view", "add_to_cart"]  # 10, 20, 30 s
    assert cart.median_seconds == pytest.approx(20.0)
    assert cart.p95_seconds == pytest.approx(29.0)  # 20 + 0.9 * (30 - 20)
    buy = e["add_to_cart", "purchase"]  # 30, 60 s
    assert buy.median_seconds == pytest.approx(45.0)
    assert buy.p95_seconds == pytest.approx(58.5)
    assert e["product_view", "product_view"].median_seconds == pytest.approx(6.0)
    for end in (e["session_start", "product_view"], e["purchase", "session_end"]):
        assert end.median_seconds is None and end.p95_seconds is None


def test_nodes_count_events_and_users(journeys):
    g = transition_graph(journeys)
    nodes = {n.name: (n.count, n.users) for n in g.nodes}
    assert nodes == {"session_start": (4, 3), "product_view": (5, 3), "add_to_cart": (3, 3),
                     "purchase": (2, 2), "session_end": (4, 3)}
    assert g.nodes[0].name == "session_start"
    assert g.nodes[-1].name == "session_end"


def test_users_behind_an_edge_and_a_node(journeys):
    g = transition_graph(journeys)
    assert g.users("add_to_cart", "purchase") == sorted([pseudo("u1"), pseudo("u2")])
    assert g.users("product_view", "product_view") == [pseudo("u3")]
    assert g.users("purchase") == sorted([pseudo("u1"), pseudo("u2")])
    assert g.users("session_end") == sorted([pseudo("u1"), pseudo("u2"), pseudo("u3")])
    assert g.sessions_of("add_to_cart", "session_end") == [pseudo("u3") + ":s3"]


def test_by_stage(journeys):
    e = edges(transition_graph(journeys, by="stage"))
    assert e["consider", "intend"].count == 3
    assert e["intend", "convert"].count == 2
    assert e["intend", "convert"].probability == pytest.approx(2 / 3)
    assert e["consider", "consider"].count == 1


def test_by_property_labels_missing_values(journeys):
    e = edges(transition_graph(journeys, by="properties.page"))
    assert e["session_start", "pdp"].count == 1
    assert e["session_start", "(none)"].count == 3
    assert e["pdp", "(none)"].count == 1


def test_collapse_repeats_merges_consecutive_labels(journeys):
    g = transition_graph(journeys, collapse_repeats=True)
    e = edges(g)
    assert ("product_view", "product_view") not in e
    assert e["product_view", "session_end"].count == 1
    assert e["product_view", "add_to_cart"].probability == pytest.approx(3 / 4)
    assert {n.name: n.count for n in g.nodes}["product_view"] == 4


def test_collapsed_time_runs_from_the_end_of_a_repeat(tmp_path):
    rows = [ev("u1", "s1", 0, "product_view"), ev("u1", "s1", 100, "product_view"), ev("u1", "s1", 130, "add_to_cart")]
    with Journeys.open(make_store(tmp_path, rows), Settings(secret=SECRET)) as j:
        e = edges(transition_graph(j, collapse_repeats=True))
    assert e["product_view", "add_to_cart"].median_seconds == pytest.approx(30.0)


def test_min_edge_count_drops_edges_but_keeps_probabilities(journeys):
    e = edges(transition_graph(journeys, min_edge_count=2))
    assert set(e) == {("session_start", "product_view"), ("product_view", "add_to_cart"),
                      ("add_to_cart", "purchase"), ("purchase", "session_end")}
    assert e["product_view", "add_to_cart"].probability == pytest.approx(3 / 5)


def test_sessions_from_gaps_when_there_is_no_session_id(tmp_path):
    rows = [ev("u9", None, 0, "product_view"), ev("u9", None, 45 * 60, "add_to_cart")]
    with Journeys.open(make_store(tmp_path, rows), Settings(secret=SECRET)) as j:
        g = transition_graph(j)
    e = edges(g)
    assert g.sessions == 2
    assert ("product_view", "add_to_cart") not in e
    assert e["session_start", "product_view"].count == e["session_start", "add_to_cart"].count == 1
    assert e["product_view", "session_end"].count == 1


def test_device_filter_changes_counts(shop):
    with Journeys.open(shop, Settings(secret=SECRET), Filters(device=("desktop",))) as j:
        g = transition_graph(j)
        assert g.users("add_to_cart", "purchase") == [pseudo("u1")]
    e = edges(g)
    assert g.sessions == 3
    assert e["product_view", "add_to_cart"].count == 2
    assert e["add_to_cart", "purchase"].probability == pytest.approx(1 / 2)
    with pytest.raises(JourneymapError, match=r"store behind this graph is closed"):
        g.users("add_to_cart", "purchase")


def test_frame_dict_and_figure(journeys):
    g = transition_graph(journeys)
    frame = g.to_frame()
    assert list(frame.columns) == ["source", "target", "count", "users", "probability", "probability_in",
                                   "median_seconds", "p95_seconds"]
    assert len(frame) == 7 and frame["count"].iloc[0] == 4
    data = json.loads(json.dumps(g.to_dict()))
    assert data["by"] == "event_type" and data["sessions"] == 4
    assert data["edges"][0]["median_seconds"] is None
    fig = g.figure()
    assert "4 sessions" in fig.layout.title.text
    assert any("add_to_cart → purchase" in t for trace in fig.data for t in (trace.hovertext or ()))


def test_step_matrix_shares(journeys):
    m = step_matrix(journeys, max_steps=3)
    cells = {(c.step, c.label): c.share for c in m.cells}
    assert cells == {(1, "product_view"): 1.0, (2, "add_to_cart"): 0.75, (2, "product_view"): 0.25,
                     (3, "purchase"): 0.5, (3, "session_end"): 0.5}
    assert m.users(3, "session_end") == [pseudo("u3")]
    assert m.users(2, "add_to_cart") == sorted([pseudo("u1"), pseudo("u2"), pseudo("u3")])
    assert m.to_frame().loc["purchase", 3] == 0.5
    assert transition_graph(journeys).step_matrix(3).cells == m.cells
    m.figure()


def test_unknown_by_says_what_is_expected(journeys):
    with pytest.raises(JourneymapError, match=r"The 'by' parameter of transition_graph\(\) must be one of "
                                              r"event_type, stage, category, device, channel or properties.KEY "
                                              r".*Got 'price'\."):
        transition_graph(journeys, by="price")
    with pytest.raises(JourneymapError, match=r"must be 1 or more. Got 0\."):
        transition_graph(journeys, min_edge_count=0)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JOURNEYMAP_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "journeymap.cli", *args], check=False, env=env,
                          capture_output=True, text=True)


def test_cli_json(shop):
    run = cli("graph", "--store", str(shop), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert {"nodes", "edges", "by", "sessions"} <= set(data)
    assert set(data["nodes"][0]) >= {"name", "count", "users"}
    assert set(data["edges"][0]) >= {"source", "target", "count", "users", "probability", "probability_in",
                                     "median_seconds", "p95_seconds"}
    run = cli("graph", "--store", str(shop), "--json", "--device", "mobile", "--by", "stage")
    data = json.loads(run.stdout)
    assert data["sessions"] == 1 and data["by"] == "stage"


def test_cli_saves_the_users_behind_an_edge(shop):
    run = cli("graph", "--store", str(shop), "--json", "--save-segment", "buyers", "--edge", "add_to_cart,purchase")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["segment"] == {"name": "buyers", "users": 2}
    with Journeys.open(shop, Settings(secret=SECRET), Filters(segment="buyers")) as j:
        assert transition_graph(j).sessions == 2


def test_cli_unknown_by_is_one_line(shop):
    run = cli("graph", "--store", str(shop), "--by", "colour")
    assert run.returncode == 1
    assert "Got 'colour'." in run.stderr and "Traceback" not in run.stderr


def test_simulated_shop(simulated_store):
    with Journeys.open(simulated_store.store, Settings(secret=SECRET)) as j:
        g = transition_graph(j)
        sessions = j.query("SELECT count(DISTINCT session_key) FROM journey_events").fetchall()[0][0]
    assert 0.4 <= g.edge("begin_checkout", "purchase").probability <= 0.8
    assert g.node("session_start").count == sessions == g.sessions
