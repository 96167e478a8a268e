"""Personas: two planted behaviours split exactly; the simulated shop's personas are recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.journeys import Journeys
from journeymap.journeys._personas import personas
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

T0 = datetime(2024, 3, 1, 9, 0)


def _browser(i: int) -> list[dict]:
    """Views 8-12 products on desktop from organic search and never buys."""
    t = T0 + timedelta(hours=i)
    rows = [dict(user_id=f"b{i}", ts=t, event_type="page_view", device="desktop", channel="organic_search",
                 session_id=f"b{i}s")]
    for n in range(8 + i % 5):
        rows.append(dict(user_id=f"b{i}", ts=t + timedelta(minutes=n + 1), event_type="product_view",
                         item_id=f"p{n}", category="home.lamp", price=10.0 + n, device="desktop",
                         channel="organic_search", session_id=f"b{i}s"))
    return rows


def _buyer(i: int) -> list[dict]:
    """Searches, views one product and buys it, on mobile from social."""
    t = T0 + timedelta(hours=i, minutes=30)
    common = dict(user_id=f"m{i}", device="mobile", channel="social", session_id=f"m{i}s")
    item = dict(item_id=f"p{i % 3}", category="home.lamp", price=10.0 + i % 3)
    return [
        dict(ts=t, event_type="search", query="lamp", **common),
        dict(ts=t + timedelta(minutes=1), event_type="product_view", **item, **common),
        dict(ts=t + timedelta(minutes=2), event_type="add_to_cart", quantity=1, **item, **common),
        dict(ts=t + timedelta(minutes=3), event_type="purchase", quantity=1, **item, **common),
    ]


BROWSERS = [f"b{i}" for i in range(20)]
BUYERS = [f"m{i}" for i in range(20)]


@pytest.fixture
def two_groups(tmp_path):
    rows = [r for i in range(20) for r in _browser(i) + _buyer(i)]
    return make_store(tmp_path, rows)


def _open(store):
    return Journeys.open(store, Settings(secret=SECRET))


def test_two_planted_behaviours_split_exactly(two_groups):
    with _open(two_groups) as j:
        result = personas(j, k_range=(2, 5))
    assert result.k == 2
    assert result.criterion == "silhouette"
    assert set(result.scores) == {2, 3, 4, 5}
    assert max(result.scores, key=result.scores.get) == 2
    truth = {pseudo(u): "browser" for u in BROWSERS} | {pseudo(u): "buyer" for u in BUYERS}
    assert result.adjusted_rand(truth) == 1.0
    assert result.excluded == 0 and len(result.assignments()) == 40

    by_rate = {p["conversion_rate"]: p for p in result.personas}
    assert set(by_rate) == {0.0, 1.0}
    browsers, buyers = by_rate[0.0], by_rate[1.0]
    assert browsers["size"] == buyers["size"] == 20
    assert browsers["share"] == buyers["share"] == 0.5
    assert result.users(browsers["id"]) == sorted(pseudo(u) for u in BROWSERS)
    assert result.users(buyers["id"]) == sorted(pseudo(u) for u in BUYERS)
    # Every planted difference splits the groups perfectly (all |z| = 1), so any three may be named.
    planted = ("mobile", "social", "search", "buy", "cart", "few products")
    assert sum(word in buyers["description"] for word in planted) >= 3, buyers["description"]
    planted = ("desktop", "organic search", "many products", "long sessions", "rarely")
    assert sum(word in browsers["description"] for word in planted) >= 3, browsers["description"]
    assert "(100% of sessions vs 50% of sessions overall)" in buyers["description"]
    assert buyers["features"]["device_mobile"] == 1.0
    assert browsers["mean_sessions"] == 1.0


def test_result_shapes(two_groups):
    with _open(two_groups) as j:
        result = personas(j, k=2)
    data = result.to_dict()
    assert data["k"] == 2 and data["criterion"] == "fixed k" and data["scores"] == {}
    assert [p["id"] for p in data["personas"]] == [0, 1]
    assert {"id", "name", "description", "size", "share", "conversion_rate", "features"} <= set(data["personas"][0])
    json.dumps(data)
    frame = result.to_frame()
    assert list(frame["size"]) == [20, 20]
    assert set(result.assignments().columns) == {"user_id", "persona", "name"}
    fig = result.figure()
    assert fig.data[0].type == "heatmap"
    assert list(fig.data[0].y) == [f"{p['id']}: {p['name']}" for p in result.personas]


def test_same_seed_same_personas(two_groups):
    with _open(two_groups) as j:
        a = personas(j, k=3, random_state=5)
        b = personas(j, k=3, random_state=5)
    assert a.to_dict() == b.to_dict()
    assert a.assignments().equals(b.assignments())


def test_users_with_one_event_are_assigned(tmp_path):
    rows = [r for i in range(20) for r in _browser(i) + _buyer(i)]
    rows.append(dict(user_id="lone", ts=T0, event_type="page_view", device="tablet"))
    with _open(make_store(tmp_path, rows)) as j:
        result = personas(j, k_range=(2, 4))
    assert pseudo("lone") in set(result.assignments()["user_id"])
    assert result.to_dict()["users"] == 41 and result.excluded == 0


def test_mistakes_are_explained(two_groups):
    with _open(two_groups) as j:
        with pytest.raises(JourneymapError, match="needs k of at least 2 to split users into groups. Got 1."):
            personas(j, k=1)
        with pytest.raises(JourneymapError, match=r"must run from at least 2 upwards, like \(3, 10\). Got \(5, 3\)."):
            personas(j, k_range=(5, 3))
        with pytest.raises(JourneymapError, match="Unknown persona feature"):
            personas(j, features=["nope"])
        result = personas(j, k=2)
        with pytest.raises(JourneymapError, match="There is no persona 7; the ids run from 0 to 1."):
            result.users(7)


def _cli(*args):
    env = {**os.environ, "JOURNEYMAP_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "journeymap.cli", "personas", *args],
                          check=False, capture_output=True, text=True, env=env)


def test_cli_json_and_segment(two_groups):
    run = _cli("--store", str(two_groups), "--k-min", "2", "--k-max", "4", "--json",
               "--save-segment", "buyers", "--persona", "1")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["k"] == 2 and data["criterion"] == "silhouette"
    assert sorted(p["size"] for p in data["personas"]) == [20, 20]
    assert data["segment"] == {"name": "buyers", "persona": 1, "size": 20}
    with _open(two_groups) as j:
        saved = sorted(r[0] for r in j.con.execute("SELECT user_id FROM segments WHERE name = 'buyers'").fetchall())
        assert saved == personas(j, k=2).users(1)

    table = _cli("--store", str(two_groups), "--k", "2")
    assert table.returncode == 0, table.stderr
    assert "2 personas among 40 users" in table.stdout

    bad = _cli("--store", str(two_groups), "--k", "2", "--save-segment", "x")
    assert bad.returncode == 1
    assert "--save-segment on personas needs --persona ID" in bad.stderr


def test_simulated_personas_are_recovered(simulated_store):
    with _open(simulated_store.store) as j:
        result = personas(j, k_range=(4, 7), max_users=10_000)
    truth = {pseudo(raw): persona for raw, persona in simulated_store.truth["user_personas"].items()}
    ari = result.adjusted_rand(truth)
    print(f"simulated shop: k={result.k} scores={result.scores} ARI={ari:.3f}")
    # Five planted personas with distinct journeys: k by silhouette finds five and ARI is about 0.53.
    assert ari >= 0.45
    assert result.to_dict()["users"] == len(truth)
    # The buying personas stand apart from the browsing ones.
    rates = sorted(p["conversion_rate"] for p in result.personas)
    assert rates[0] < 0.02 and rates[-1] > 0.25
