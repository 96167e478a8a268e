"""The same analyses on DuckDB and on Spark give the same answers.

A hand-built log (known answers, sessions from ids and from gaps, sub-second times, properties)
and a small simulated shop are analysed on both engines; every result's JSON must match, floats
to 1e-9 relative (Spark's exact percentile interpolates in a different order of operations).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict

import pytest

from journeymap.config import Settings
from journeymap.events import ingest
from journeymap.journeys import Filters, Journeys
from journeymap.journeys._attribution import MODELS, _attribute, attribution, journey_paths
from journeymap.journeys._funnel import funnel
from journeymap.journeys._graph import step_matrix, transition_graph
from journeymap.store import Store
from tests.conftest import SECRET
from tests.journeys.conftest import make_store

pytest.importorskip("pyspark", reason="the Spark engine needs pyspark (pip install 'journeymap[spark]')")
if not shutil.which("java"):
    pytest.skip("the Spark engine needs Java 17+ on PATH (apt-get install openjdk-17-jre-headless)",
                allow_module_level=True)


def ev(user, ts, event_type, session=None, channel=None, device="desktop", **more):
    return {"user_id": user, "ts": ts, "event_type": event_type, "session_id": session, "channel": channel,
            "device": device, **more}


HAND = [
    # u1: one gap-built session, view -> cart -> purchase, with fractions of a second
    ev("u1", "2024-03-01 10:00:00.250", "product_view", channel="email", properties={"page": "home"}),
    ev("u1", "2024-03-01 10:01:30.750", "add_to_cart", channel="email"),
    ev("u1", "2024-03-01 10:05:00", "purchase", channel="email"),
    # u1 again after 2 hours: a new session that only views
    ev("u1", "2024-03-01 12:05:00", "product_view", channel="social"),
    # u2: a source session id; views twice, carts, drops
    ev("u2", "2024-03-02 09:00:00", "product_view", "s9", channel="social", device="mobile"),
    ev("u2", "2024-03-02 09:00:10", "product_view", "s9", channel="social", device="mobile"),
    ev("u2", "2024-03-02 09:03:00", "add_to_cart", "s9", channel="social", device="mobile"),
    # u3: social first, email a week later converts
    ev("u3", "2024-03-01 08:00:00", "product_view", channel="social", device="mobile", properties={"page": "home"}),
    ev("u3", "2024-03-08 08:00:00", "product_view", channel="email"),
    ev("u3", "2024-03-08 08:02:00", "add_to_cart", channel="email"),
    ev("u3", "2024-03-08 08:02:00", "purchase", channel="email"),
]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("journeymap-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    folder = tmp_path_factory.mktemp("engines")
    store = make_store(folder, HAND)
    with Store(store) as st:
        st.export(folder / "events.parquet")
    return store, folder / "events.parquet"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    from journeymap.simulator import simulate

    folder = tmp_path_factory.mktemp("engines-shop")
    result = simulate(users=400, days=10, seed=11, out=folder / "shop.csv")
    store = folder / "shop.duckdb"
    ingest(result.path, store, settings=Settings(secret=SECRET))
    with Store(store) as st:
        st.export(folder / "events.parquet")
    return store, folder / "events.parquet"


def same(a, b, where="result"):
    """Equal JSON, floats to 1e-9 relative; says where they differ."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), \
            f"{where}: duckdb {a!r} != spark {b!r}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: duckdb {a!r} != spark {b!r}"


def both(paths, spark, analysis, filters=None):
    store, parquet = paths
    settings = Settings(secret=SECRET)
    with Journeys.open(store, settings, filters) as journeys:
        expected = analysis(journeys).to_dict()
    got = analysis(Journeys.on_spark(str(parquet), spark, settings, filters)).to_dict()
    same(expected, got)
    return expected


GRAPHS = {
    "event_type": lambda j: transition_graph(j),
    "stage, collapsed": lambda j: transition_graph(j, by="stage", collapse_repeats=True),
    "channel": lambda j: transition_graph(j, by="channel", min_edge_count=2),
    "step matrix": lambda j: step_matrix(j, max_steps=4),
}
STEPS = ["product_view", "add_to_cart", "purchase"]
FUNNELS = {
    "ordered": lambda j: funnel(j, STEPS, window="1d", breakdown="device", over_time="day"),
    "strict per session": lambda j: funnel(j, STEPS, order="strict", per="session"),
    "any, 8 days": lambda j: funnel(j, STEPS, order="any", window="8d", over_time="week"),
    "optional cart": lambda j: funnel(j, STEPS, optional=["add_to_cart"], step_windows={"purchase": "30m"}),
    "exclusion": lambda j: funnel(j, STEPS, exclude=["remove_from_cart"], breakdown="channel"),
}
@pytest.mark.parametrize("name", GRAPHS)
def test_graph_same_on_spark(hand, shop, spark, name):
    both(hand, spark, GRAPHS[name])
    both(shop, spark, GRAPHS[name])


def test_hand_graph_numbers_on_spark(hand, spark):
    result = both(hand, spark, GRAPHS["event_type"])
    edges = {(e["source"], e["target"]): e for e in result["edges"]}
    # u1's view -> cart took 90.5 s, u2's second view -> cart 170 s; u2's views are 10 s apart.
    # u3's cart and purchase share a timestamp: the event id breaks the tie (here purchase first),
    # on both engines alike.
    assert edges[("product_view", "add_to_cart")]["count"] == 2
    assert edges[("product_view", "add_to_cart")]["median_seconds"] == 130.25
    assert edges[("product_view", "product_view")]["median_seconds"] == 10.0
    assert edges[("purchase", "add_to_cart")]["median_seconds"] == 0.0
    assert result["sessions"] == 5


@pytest.mark.parametrize("name", FUNNELS)
def test_funnel_same_on_spark(hand, shop, spark, name):
    both(hand, spark, FUNNELS[name])
    both(shop, spark, FUNNELS[name])


def test_hand_funnel_numbers_on_spark(hand, spark):
    result = both(hand, spark, FUNNELS["ordered"])
    assert [s["count"] for s in result["steps"]] == [3, 2, 1]  # u3 carts a week after entering: outside 1d
    # u1 carted 90.5 s after viewing, u2 180 s
    assert result["steps"][1]["median_seconds_from_previous"] == 135.25


def test_attribution_same_on_spark(hand, shop, spark):
    """The engine builds the paths; every model is then the same Python over them."""
    settings = Settings(secret=SECRET)
    for store, parquet in (hand, shop):
        with Journeys.open(store, settings) as journeys:
            expected = journey_paths(journeys)
        got = journey_paths(Journeys.on_spark(str(parquet), spark, settings))
        same(asdict(expected), asdict(got))
        for model in MODELS:
            for order in (1, 2) if model == "markov" else (1,):
                same(_attribute(expected, model, order).to_dict(), _attribute(got, model, order).to_dict(), model)
    # the hand log's credits: u1 and u3 convert by email, u3 after a social session 7 days before
    with Journeys.open(hand[0], settings) as journeys:
        credits = attribution(journeys, model="first").to_dict()["credits"]
    assert credits == {"email": 1.0, "social": 1.0}


def test_filters_same_on_spark(hand, shop, spark):
    where = Filters.parse(start="2024-03-01", end="2024-03-05", where=["page=home"])
    result = both(hand, spark, GRAPHS["event_type"], where)
    assert result["sessions"] == 2  # u1's and u3's first sessions hold a page=home event
    both(shop, spark, FUNNELS["ordered"], Filters.parse(device="mobile"))


def test_spark_refuses_segments(hand, spark):
    from journeymap.exceptions import JourneymapError

    with pytest.raises(JourneymapError, match="filter the events DataFrame"):
        Journeys.on_spark(str(hand[1]), spark, Settings(secret=SECRET), Filters(segment="vip"))


def test_cli_engine_spark(hand, spark):
    """`--engine spark` on a DuckDB store exports its events and prints the same JSON."""
    import json

    from typer.testing import CliRunner

    from journeymap.cli import app

    runner = CliRunner()
    args = ["graph", "--store", str(hand[0]), "--json"]
    duck = runner.invoke(app, args, env={"JOURNEYMAP_SECRET": SECRET})
    sparked = runner.invoke(app, [*args, "--engine", "spark"], env={"JOURNEYMAP_SECRET": SECRET})
    assert duck.exit_code == 0 and sparked.exit_code == 0, sparked.output
    same(json.loads(duck.stdout), json.loads(sparked.stdout))
    refused = runner.invoke(app, [*args, "--engine", "spark", "--save-segment", "x"])
    assert refused.exit_code != 0 and "without --engine spark" in str(refused.exception)
