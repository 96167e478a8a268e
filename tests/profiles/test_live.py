"""A live profile (``profiles._live``, Python) equals the build's SQL in every field of the user's own.

The live path re-implements the build's per-user aggregation, so the build is the reference: for
each user of a store with profiles built at its latest event, the live row must equal the stored
row exactly (the population-fitted fields are copied from it by construction, and left out).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import duckdb

from journeymap.profiles._build import profiles_meta
from journeymap.profiles._live import POPULATION_FIELDS, live_profile_row
from tests.journeys.conftest import make_store
from tests.profiles.conftest import build


def _mismatches(store, users=None) -> tuple[int, list]:
    """(users compared, [(user, field, live, stored)...]) over ``users`` (default all)."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        meta = profiles_meta(con)
        result = con.execute("SELECT * FROM profiles ORDER BY user_id")
        names = [d[0] for d in result.description]
        stored = {row[0]: dict(zip(names, row)) for row in result.fetchall()}
        bad, compared = [], 0
        for user in users if users is not None else stored:
            live, as_of = live_profile_row(con, user, meta)
            assert as_of.isoformat(sep=" ") == meta["as_of"]
            compared += 1
            bad += [(user, k, live[k], v) for k, v in stored[user].items()
                    if k not in POPULATION_FIELDS and k != "summary" and live[k] != v]
            # The summary sentence is made of the own fields and the kept segment: equal too.
            if live["summary"] != stored[user]["summary"]:
                bad.append((user, "summary", live["summary"], stored[user]["summary"]))
        return compared, bad
    finally:
        con.close()


def test_equals_the_build_for_sampled_users_of_the_simulated_shop(profiled_sim):
    users = sorted(profiled_sim.frame.index)
    sample = random.Random(3).sample(users, 1500)
    compared, bad = _mismatches(profiled_sim.store, sample)
    assert compared == 1500
    assert bad == []


def _random_events(seed: int, users: int = 150) -> list[dict]:
    """Events drawn from small pools so that the build's tie-breaks matter: equal session starts
    under given ids and gaps, tied devices, channels, days and hours, repeated searches in mixed
    case and spacing, catalog prices equal to the users' means, purchases without price or quantity,
    reviews with and without ratings, events of types without a weight."""
    rng = random.Random(seed)
    start = datetime(2024, 3, 1)
    types = ["product_view"] * 6 + ["add_to_cart"] * 2 + ["begin_checkout", "purchase", "purchase", "search",
                                                          "search", "review", "add_to_wishlist", "view_cart", "page_view"]
    rows = []
    for u in range(users):
        t = start + timedelta(days=rng.randint(0, 25), hours=rng.randint(0, 23))
        for _ in range(rng.randint(1, 14)):
            t += rng.choice([timedelta(0), timedelta(seconds=30), timedelta(minutes=10), timedelta(minutes=31),
                             timedelta(hours=5), timedelta(days=1), timedelta(days=3)])
            kind = rng.choice(types)
            row = {"user_id": f"r{u}", "ts": t, "event_type": kind,
                   "session_id": rng.choice([None, None, None, "s1", "s2"]),
                   "device": rng.choice([None, "mobile", "desktop", "tablet"]),
                   "channel": rng.choice([None, "email", "search", "direct"])}
            if kind in ("product_view", "add_to_cart", "purchase", "review", "add_to_wishlist", "begin_checkout"):
                item = rng.randint(1, 12)
                row.update(item_id=f"p{item}", category=rng.choice(["home.lamp", "home.sofa", "toys", None]),
                           brand=rng.choice(["acme", "lumo", None]),
                           price=rng.choice([None, 5.0, 10.0, 12.5, 19.99, 0.1 * item, 100.0 / 3]))
            if kind == "purchase":
                row["quantity"] = rng.choice([None, 1, 2, 3])
            if kind == "search":
                # Spaces DuckDB's trim strips (no-break, em) and keeps (tab), and a lower() unlike Python's.
                row["query"] = rng.choice(["Socks", "socks", " socks ", "SOFA", "lamp shade", "   ", "\u00a0Socks\u2003",
                                           "\tsocks", "İstanbul", "ISTANBUL"])
            if kind == "review":
                row["rating"] = rng.choice([None, 1, 3.5, 5])
                row["text"] = "fine"
            rows.append(row)
    return rows


def test_equals_the_build_on_random_users_with_ties_and_gaps(tmp_path):
    for seed in (1, 2):
        store = make_store(tmp_path, _random_events(seed), name=f"random{seed}.duckdb")
        build(store)
        compared, bad = _mismatches(store)
        assert compared >= 140
        assert bad == [], bad[:10]


def test_decimal_casts_equal_duckdbs():
    """``_decimal`` is DuckDB's CAST(x AS DECIMAL(38, s)) (C's round of x * 10^s), where Python's own
    rounding of the exact binary value differs on about half of these."""
    from decimal import ROUND_HALF_EVEN, Decimal

    from journeymap.profiles._live import _decimal

    rng = random.Random(5)
    values = [rng.random() * rng.choice([1, 5, 100, 3000]) * rng.choice([1, -1]) for _ in range(3000)]
    con = duckdb.connect()
    rows = con.execute("SELECT x, CAST(x AS DECIMAL(38, 15)), CAST(x AS DECIMAL(38, 6)) FROM unnest($1::DOUBLE[]) t(x)",
                       [values]).fetchall()
    assert [(_decimal(x, 15), _decimal(x, 6)) for x, _, _ in rows] == [(a, b) for _, a, b in rows]
    naive = sum(Decimal(x).quantize(Decimal(1).scaleb(-15), ROUND_HALF_EVEN) != a for x, a, _ in rows)
    assert naive > 1000  # the test would catch a plain quantize
