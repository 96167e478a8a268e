"""Attribution on logs whose credits are worked out by hand, and on the simulated shop."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from fractions import Fraction as F

import numpy as np
import pytest

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.journeys import Filters, Journeys
from journeymap.journeys._attribution import (
    MODELS,
    MarkovChain,
    attribution,
    compare,
    journey_paths,
)
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo


def visit(user, session, day, channel, *types, properties=None):
    """One session's events, all at 10:00 on 2024-03-<day>: the session starts when it converts."""
    return [{"user_id": user, "session_id": session, "ts": f"2024-03-{day:02d} 10:00:00", "event_type": t,
                 "channel": channel, "properties": properties} for t in types]


# Paths (30d lookback): u1 [email] -> buy (two purchase events, one conversion),
# u2 [social, email] -> buy, u3 [social] -> no buy, u4 [direct, social, email] -> buy.
# Ages at conversion: u2 7, 0 days; u4 14, 7, 0 days.
HAND = [
    *visit("u1", "s1", 1, "email", "page_view", "purchase", "purchase"),
    *visit("u2", "s2", 1, "social", "page_view"),
    *visit("u2", "s3", 8, "email", "purchase"),
    *visit("u3", "s4", 1, "social", "page_view"),
    *visit("u4", "s5", 1, "direct", "page_view"),
    *visit("u4", "s6", 8, "social", "page_view"),
    *visit("u4", "s7", 15, "email", "purchase"),
]

EXPECTED = {
    "first": {"email": F(1), "social": F(1), "direct": F(1)},
    "last": {"email": F(3)},
    "linear": {"email": 1 + F(1, 2) + F(1, 3), "social": F(1, 2) + F(1, 3), "direct": F(1, 3)},
    "position": {"email": F(19, 10), "social": F(7, 10), "direct": F(2, 5)},
    # weights 2^(-age/7): u2 (1/2, 1) -> 1/3, 2/3; u4 (1/4, 1/2, 1) -> 1/7, 2/7, 4/7
    "time_decay": {"email": 1 + F(2, 3) + F(4, 7), "social": F(1, 3) + F(2, 7), "direct": F(1, 7)},
    # v(S) = conversions with touch set within S = u{email} + u{social,email} + u{direct,social,email}
    "shapley": {"email": 1 + F(1, 2) + F(1, 3), "social": F(1, 2) + F(1, 3), "direct": F(1, 3)},
    # see test_markov_order1_by_hand: removal effects 1, 2/3, 2/9 scaled to 3 conversions
    "markov": {"email": F(27, 17), "social": F(18, 17), "direct": F(6, 17)},
}


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("attribution"), HAND)


def journeys(path, **filters):
    return Journeys.open(path, Settings(secret=SECRET), Filters(**filters))


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_hand_credits_are_exact(hand_store, model):
    with journeys(hand_store) as j:
        result = attribution(j, model=model)
    assert result.conversions == 3 and result.paths == 3 and result.non_converting_paths == 1
    # every touchpoint on a converting path is listed, with 0 where the model gives it nothing
    assert set(result.credits) == {"email", "social", "direct"}
    for touch in result.credits:
        assert result.credits[touch] == pytest.approx(float(EXPECTED[model].get(touch, 0)), abs=1e-9), touch
    assert sum(result.credits.values()) == pytest.approx(3, abs=1e-9)


def test_markov_order1_by_hand(hand_store):
    # start -> email 1/4, social 2/4, direct 1/4; email -> conv 1; social -> email 2/3, null 1/3;
    # direct -> social 1. P(conv) = 1/4 + 2/4 * 2/3 + 1/4 * 2/3 = 3/4.
    # Without email: 0. Without social: 1/4. Without direct: 1/4 + 1/3 = 7/12.
    with journeys(hand_store) as j:
        result = attribution(j, model="markov")
        paths = journey_paths(j)
    assert result.conversion_probability == pytest.approx(0.75, abs=1e-12)
    expected = {"email": 1.0, "social": 2 / 3, "direct": 2 / 9}
    for touch, effect in expected.items():
        assert result.removal_effects[touch] == pytest.approx(effect, abs=1e-9)
    assert result.to_dict()["removal_effects"] == result.removal_effects
    assert result.to_dict()["order"] == 1

    # Cross-check the linear solve against the limit of matrix powers of the full chain.
    chain = MarkovChain.fit(paths, order=1)
    n = len(chain.states)
    full = np.zeros((n + 2, n + 2))  # transient states, then conversion, null
    full[:n, :n] = chain.Q.toarray()
    full[:n, n] = chain.r
    full[:n, n + 1] = 1.0 - full[:n, :n + 1].sum(axis=1)
    full[n, n] = full[n + 1, n + 1] = 1.0
    limit = np.linalg.matrix_power(full, 200)
    np.testing.assert_allclose(limit[:n, n], chain.absorption(), atol=1e-12)
    social = {i for i, s in enumerate(chain.states) if "social" in s}
    redirected = full.copy()
    for i in social:
        redirected[i] = 0.0
        redirected[i, n + 1] = 1.0
    limit = np.linalg.matrix_power(redirected, 200)
    assert limit[0, n] == pytest.approx(chain.conversion_probability(social), abs=1e-12) == pytest.approx(0.25)


def test_markov_probability_matches_observed_rate_on_simulated(simulated_store):
    # The fitted chain reproduces the observed flows, so P(conv) from start = conversions / paths.
    with journeys(simulated_store.store) as j:
        result = attribution(j, model="markov")
    total = result.paths + result.non_converting_paths
    assert result.conversion_probability == pytest.approx(result.conversions / total, rel=1e-9)


def brute_force_shapley(conversions: list[frozenset[str]]) -> dict[str, float]:
    """Shapley values by averaging marginal contributions over every order of the players."""
    players = sorted(set().union(*conversions))
    v = lambda s: sum(1 for c in conversions if c <= s)
    values = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        seen: set[str] = set()
        for p in order:
            values[p] += v(seen | {p}) - v(seen)
            seen.add(p)
    return {p: x / len(orders) for p, x in values.items()}


def test_shapley_equals_brute_force_over_coalitions(tmp_path):
    rows = [
        *visit("a", "a1", 1, "email", "page_view"), *visit("a", "a2", 2, "social", "purchase"),
        *visit("b", "b1", 1, "social", "page_view"), *visit("b", "b2", 2, "paid", "page_view"),
        *visit("b", "b3", 3, "social", "purchase"),
        *visit("c", "c1", 1, "email", "purchase"),
        *visit("d", "d1", 1, "paid", "page_view"), *visit("d", "d2", 2, "email", "page_view"),
        *visit("d", "d3", 3, "social", "purchase"),
    ]
    with journeys(make_store(tmp_path, rows)) as j:
        result = attribution(j, model="shapley")
    sets = [frozenset(s) for s in ({"email", "social"}, {"social", "paid"}, {"email"}, {"paid", "email", "social"})]
    expected = brute_force_shapley(sets)
    assert expected["email"] == pytest.approx(1 / 2 + 1 + 1 / 3)
    assert result.credits == pytest.approx(expected, abs=1e-12)


def test_credits_sum_to_conversions(simulated_store):
    with journeys(simulated_store.store) as j:
        table = compare(j)  # every model, order 1, from one set of paths
        conversions = attribution(j, model="first").conversions
        higher = [attribution(j, model="markov", order=k) for k in (2, 3)]
    assert conversions > 1000
    for model in MODELS:
        assert table[model].sum() == pytest.approx(conversions, rel=1e-9), model
        assert (table[model] >= 0).all(), model
    for result in higher:
        assert sum(result.credits.values()) == pytest.approx(conversions, rel=1e-9)
        assert sum(result.share.values()) == pytest.approx(1.0)


def test_order2_on_hand_log(hand_store):
    # States are the last two touches. (direct) -> (direct, social) -> (social, email) -> conv, so
    # order 2 remembers that social after direct always converted, while a bare (social) converts
    # half the time. P(conv) = 1/4 + 2/4 * 1/2 + 1/4 = 3/4 as before; without email 0, without social
    # 1/4, without direct 1/4 + 1/4: removal effects 1, 2/3, 1/3 (order 1 gave direct only 2/9).
    with journeys(hand_store) as j:
        result = attribution(j, model="markov", order=2)
    assert result.conversion_probability == pytest.approx(0.75, abs=1e-12)
    assert result.removal_effects == pytest.approx({"email": 1.0, "social": 2 / 3, "direct": 1 / 3}, abs=1e-9)
    assert result.credits == pytest.approx({"email": 1.5, "social": 1.0, "direct": 0.5}, abs=1e-9)
    assert result.order == 2 and result.to_dict()["order"] == 2


def test_one_conversion_per_session_and_paths_restart_after_a_conversion(tmp_path):
    rows = [
        *visit("u1", "s1", 1, "paid", "page_view"),
        *visit("u1", "s2", 2, "email", "purchase", "purchase"),
        *visit("u1", "s3", 3, "social", "page_view"),
        *visit("u1", "s4", 4, "direct", "purchase"),
        *visit("u1", "s5", 5, "organic", "page_view"),
    ]
    with journeys(make_store(tmp_path, rows)) as j:
        paths = journey_paths(j)
        first = attribution(j, model="first")
    assert list(zip(paths.touches, paths.converted)) == [
        (("paid", "email"), True), (("social", "direct"), True), (("organic",), False)]
    assert first.credits == {"paid": 1.0, "social": 1.0, "direct": 0.0, "email": 0.0}


def test_lookback_drops_older_touches(hand_store):
    with journeys(hand_store) as j:
        result = attribution(j, model="first", lookback="10d")
    # u4's direct touch is 14 days before its conversion: its path becomes [social, email].
    assert result.credits == {"social": 2.0, "email": 1.0}
    assert result.to_dict()["lookback"] == "10d"


def test_users_behind_each_touchpoint(hand_store):
    with journeys(hand_store) as j:
        result = attribution(j, model="linear")
    assert result.users("email") == sorted(pseudo(u) for u in ("u1", "u2", "u4"))
    assert result.users("social") == sorted(pseudo(u) for u in ("u2", "u4"))  # u3 never converts
    assert result.users("direct") == [pseudo("u4")]
    assert result.all_users() == sorted(pseudo(u) for u in ("u1", "u2", "u4"))
    with pytest.raises(JourneymapError, match="No touchpoint 'tv' in this attribution"):
        result.users("tv")


def test_property_touchpoint(tmp_path):
    rows = [
        *visit("u1", "s1", 1, "email", "page_view", properties={"campaign": "spring"}),
        *visit("u1", "s2", 2, "email", "purchase", properties={"campaign": "summer"}),
        *visit("u2", "s3", 2, "email", "purchase"),
    ]
    with journeys(make_store(tmp_path, rows)) as j:
        result = attribution(j, model="linear", touchpoint="properties.campaign")
    assert result.credits == {"(none)": 1.0, "spring": 0.5, "summer": 0.5}


def test_frame_figure_and_compare(hand_store):
    with journeys(hand_store) as j:
        result = attribution(j, model="markov")
        table = compare(j)
    frame = result.to_frame()
    assert list(frame["touchpoint"]) == ["email", "social", "direct"]
    assert {"credit", "share", "sessions", "lift", "users", "removal_effect"} <= set(frame.columns)
    assert list(frame["sessions"]) == [3, 3, 1]
    assert frame["lift"].iloc[0] == pytest.approx((27 / 17 / 3) / (3 / 7))
    fig = result.figure()
    assert list(fig.data[0].y) == pytest.approx(list(frame["credit"]))
    assert "3 purchase conversions" in fig.layout.title.text
    assert list(table.columns) == list(MODELS)
    assert table.loc["direct", "first"] == 1.0 and table.loc["direct", "last"] == 0.0
    data = result.to_dict()
    assert {"conversions", "credits", "model", "touchpoint", "paths", "lookback", "share",
            "removal_effects", "conversion_probability"} <= set(data)
    json.dumps(data)


def test_errors_say_what_was_expected(hand_store):
    with journeys(hand_store) as j:
        with pytest.raises(JourneymapError, match="model must be one of first, last, linear, position, "
                                                  "time_decay, markov, shapley. Got 'banana'"):
            attribution(j, model="banana")
        with pytest.raises(JourneymapError, match="touchpoint must be an event column .* Got 'campaign'"):
            attribution(j, touchpoint="campaign")
        with pytest.raises(JourneymapError, match="no 'signup' events are in the store after the filters"):
            attribution(j, conversion="signup")
        with pytest.raises(JourneymapError, match="Markov order must be a whole number from 1 to 4. Got '0'"):
            attribution(j, order=0)
    # filters apply: social sessions never buy
    with journeys(hand_store, channel=("social",)) as j, pytest.raises(JourneymapError, match="no 'purchase' events"):
        attribution(j)


def cli(*args):
    env = {**os.environ, "JOURNEYMAP_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "journeymap.cli", "attribution", *map(str, args)],
                          check=False, capture_output=True, text=True, env=env)


def test_cli_json_and_segment(hand_store, tmp_path):
    store = tmp_path / "copy.duckdb"
    store.write_bytes(hand_store.read_bytes())
    run = cli("--store", store, "--model", "shapley", "--json", "--save-segment", "shapley_buyers")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["conversions"] == 3 and data["model"] == "shapley"
    assert data["credits"]["email"] == pytest.approx(11 / 6)
    assert data["segment"] == {"name": "shapley_buyers", "users": 3}
    with journeys(store, segment="shapley_buyers") as j:
        assert sorted(r[0] for r in j.query("SELECT DISTINCT user_id FROM journey_events").fetchall()) == sorted(
            pseudo(u) for u in ("u1", "u2", "u4"))

    run = cli("--store", store, "--model", "markov", "--order", "2")
    assert run.returncode == 0, run.stderr
    assert "markov (order 2) attribution of 3 purchase conversions" in run.stdout

    run = cli("--store", store, "--model", "banana", "--json")
    assert run.returncode == 1 and run.stdout == ""
    assert "Got 'banana'" in run.stderr


@pytest.mark.parametrize("model", ["markov", "shapley"])
def test_planted_channel_ranks_first_on_simulated(simulated_store, model):
    planted = simulated_store.truth["converting_channel"]["channel"]
    with journeys(simulated_store.store) as j:
        result = attribution(j, model=model)
    # Email converts 2.5x as often per session and brings 20% of sessions: it earns the most
    # credit outright and the most per session (lift).
    assert max(result.credits, key=result.credits.get) == planted
    lift = result.lift
    assert max(lift, key=lift.get) == planted
    assert lift[planted] > 1.4 and all(v < 1.2 for k, v in lift.items() if k != planted)
    assert not math.isnan(result.credits[planted])
