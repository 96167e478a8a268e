"""An update after new events equals a full rebuild, exactly, table for table."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from journeymap.config import Settings
from journeymap.events import ingest
from journeymap.profiles import build_profiles, update_profiles
from journeymap.simulator import simulate
from journeymap.store import Store
from tests.conftest import SECRET

SETTINGS = Settings(secret=SECRET)
SPLIT = pd.Timestamp("2024-01-10")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A 14-day simulated log cut at day 10, with 2% of the early events arriving late (in part b)."""
    folder = tmp_path_factory.mktemp("incremental")
    sim = simulate(users=1500, days=14, seed=3, out=folder / "shop.csv")
    log = pd.read_csv(sim.path, dtype=str, keep_default_na=False)
    early = pd.to_datetime(log["event_time"].str.removesuffix(" UTC")) < SPLIT
    late = early & (np.random.default_rng(0).random(len(log)) < 0.02)
    a, b = folder / "a.csv", folder / "b.csv"
    log[early & ~late].to_csv(a, index=False)
    log[~early | late].to_csv(b, index=False)
    return a, b


def _store(path, *logs):
    for log in logs:
        ingest(log, path, settings=SETTINGS)
    return path


def _tables(path) -> dict[str, list]:
    with Store(path, read_only=True) as st:
        return {t: st.con.execute(f"SELECT * FROM {t} ORDER BY user_id").fetchall()
                for t in ("profiles", "profile_state")}


def test_update_after_new_events_equals_a_full_rebuild(parts, tmp_path):
    a, b = parts
    store = _store(tmp_path / "updated.duckdb", a)
    first = build_profiles(store, settings=SETTINGS)
    assert first.mode == "full" and first.as_of < datetime(2024, 1, 10)
    _store(store, b)
    updated = update_profiles(store, settings=SETTINGS)

    fresh = _store(tmp_path / "fresh.duckdb", a, b)
    rebuilt = build_profiles(fresh, settings=SETTINGS)
    assert updated.mode == "incremental" and updated.reason == ""
    # Only users with events in the new ingest were recomputed; everyone moved to the new as_of.
    with Store(store, read_only=True) as st:
        touched = st.con.execute("SELECT count(DISTINCT user_id) FROM events WHERE ingest_id = 2").fetchall()[0][0]
    assert updated.recomputed == touched < rebuilt.user_count
    assert updated.as_of == rebuilt.as_of and updated.user_count == rebuilt.user_count
    assert _tables(store) == _tables(fresh)
    assert updated.to_frame().equals(rebuilt.to_frame())

    # Nothing new: nobody is recomputed and the table stays equal.
    again = update_profiles(store, settings=SETTINGS)
    assert (again.mode, again.recomputed, again.removed) == ("incremental", 0, 0)
    assert _tables(store) == _tables(fresh)


def test_update_to_a_later_as_of_equals_a_rebuild_there(parts, tmp_path):
    a, b = parts
    store = _store(tmp_path / "moved.duckdb", a, b)
    early = build_profiles(store, as_of="2024-01-08", settings=SETTINGS)
    later = update_profiles(store, settings=SETTINGS)  # default as_of: the store's last event
    fresh = build_profiles(_store(tmp_path / "fresh.duckdb", a, b), settings=SETTINGS)
    assert later.mode == "incremental" and later.as_of == fresh.as_of
    assert 0 < later.recomputed < fresh.user_count and later.user_count > early.user_count
    assert _tables(store) == _tables(tmp_path / "fresh.duckdb")

    # And back again: users whose every event is after the earlier as_of are removed.
    back = update_profiles(store, as_of="2024-01-08", settings=SETTINGS)
    assert back.removed == later.user_count - early.user_count
    assert back.to_frame().equals(early.to_frame())


def test_a_changed_half_life_means_a_full_build(parts, tmp_path):
    a, _ = parts
    store = _store(tmp_path / "s.duckdb", a)
    build_profiles(store, settings=SETTINGS)
    same = update_profiles(store, settings=SETTINGS)
    assert same.mode == "incremental"
    changed = update_profiles(store, half_life_days=7, settings=SETTINGS)
    assert (changed.mode, changed.reason) == ("full", "the half-life, session gap or profile version changed")
    assert update_profiles(store, settings=SETTINGS).mode == "incremental"  # keeps the last build's half-life
