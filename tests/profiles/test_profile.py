"""One profile by pseudonym or raw id, and the `profiles`, `profile` and `segments` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pandas as pd
import pytest

from journeymap.config import Settings
from journeymap.exceptions import ConfigError, JourneymapError, StoreError
from journeymap.profiles import UserProfile, profile, pseudonym_of
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo
from tests.profiles.conftest import build

T = datetime(2024, 3, 31)
SETTINGS = Settings(secret=SECRET)
KEYS = {"user", "events", "sessions", "purchases", "monetary", "recency_days", "lifecycle", "top_categories",
        "top_brands", "segment", "summary"}


@pytest.fixture
def shop(tmp_path):
    rows = []
    for i in range(12):
        t = T - timedelta(days=i, hours=3)
        common = {"user_id": f"u{i}", "session_id": f"s{i}", "device": "mobile" if i % 2 else "desktop",
                      "channel": "social"}
        rows.append(dict(ts=t, event_type="product_view", item_id=f"p{i % 4}", category="apparel.shoes.running",
                         brand=("nike", "asics")[i % 2], price=50.0 + 10 * (i % 4), **common))
        if i % 3 == 0:
            rows.append(dict(ts=t + timedelta(minutes=1), event_type="add_to_cart", item_id=f"p{i % 4}",
                             category="apparel.shoes.running", brand="nike", price=50.0 + 10 * (i % 4), quantity=1,
                             **common))
        if i % 6 == 0:
            rows.append(dict(ts=t + timedelta(minutes=2), event_type="purchase", item_id=f"p{i % 4}",
                             category="apparel.shoes.running", brand="nike", price=50.0 + 10 * (i % 4), quantity=1,
                             **common))
    store = make_store(tmp_path, rows)
    build(store)
    return store


def test_profile_by_pseudonym_and_by_raw_id(shop):
    by_pseudonym = profile(shop, pseudo("u0"))
    by_raw = profile(shop, raw_id="u0", settings=SETTINGS)
    assert isinstance(by_raw, UserProfile) and by_raw == by_pseudonym
    assert pseudonym_of("u0", SETTINGS, shop) == by_raw.user == pseudo("u0")
    data = by_raw.to_dict()
    assert KEYS <= set(data)
    json.dumps(data)
    assert (data["events"], data["sessions"], data["purchases"], data["monetary"]) == (3, 1, 1, 50.0)
    assert data["top_categories"][0]["name"] == "apparel.shoes.running" and data["top_categories"][0]["share"] == 1.0
    assert data["as_of"] == "2024-03-30 21:02:00" and data["segment"] is None
    assert data["summary"].startswith("Desktop shopper, mostly apparel > shoes > running, top brands nike;")


def test_unknown_users_and_wrong_secrets_are_explained(shop, tmp_path):
    with pytest.raises(JourneymapError, match=r"No user with raw id 'nobody' \(pseudonym [0-9a-f]{32}\) in "):
        profile(shop, raw_id="nobody", settings=SETTINGS)
    with pytest.raises(JourneymapError, match="If you have the id from the shop's data, look it up by raw id."):
        profile(shop, "u0")  # a raw id passed as a pseudonym
    with pytest.raises(ConfigError, match="not the one .* was written with"):
        profile(shop, raw_id="u0", settings=Settings(secret="another-secret-0123456789"))
    with pytest.raises(ConfigError, match="No pseudonymization secret is set"):
        profile(shop, raw_id="u0", settings=Settings())
    with pytest.raises(JourneymapError, match="either a pseudonym"):
        profile(shop)
    bare = make_store(tmp_path, [{"user_id": "x", "ts": T, "event_type": "page_view"}], name="bare.duckdb")
    with pytest.raises(StoreError, match="has no profiles yet; build them with `journeymap profiles --store"):
        profile(bare, pseudo("x"))


def _cli(*args):
    env = {**os.environ, "JOURNEYMAP_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "journeymap.cli", *args], check=False, capture_output=True,
                          text=True, env=env)


def test_cli_profiles_profile_and_segments(shop, tmp_path):
    run = _cli("profiles", "--store", str(shop), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert (data["mode"], data["users"], data["recomputed"]) == ("incremental", 12, 0)
    run = _cli("profiles", "--store", str(shop), "--full")
    assert run.returncode == 0, run.stderr
    assert "rebuilt profiles of 12 users as of 2024-03-30 21:02:00" in run.stdout

    run = _cli("profile", "--store", str(shop), "--user", "u6", "--json")
    assert run.returncode == 0, run.stderr
    one = json.loads(run.stdout)
    assert KEYS <= set(one) and one["user"] == pseudo("u6")
    assert (one["purchases"], one["lifecycle"]) == (1, "new")
    run = _cli("profile", "--store", str(shop), "--user", "u6")
    assert run.returncode == 0 and "Desktop shopper" in run.stdout

    run = _cli("profile", "--store", str(shop), "--user", "nobody", "--json")
    assert run.returncode == 1 and run.stdout == ""
    assert "No user with raw id 'nobody'" in run.stderr

    out = tmp_path / "members.csv"
    run = _cli("segments", "--store", str(shop), "--k", "2", "--no-content", "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    seg = json.loads(run.stdout)
    assert seg["k"] == 2 and seg["criterion"] == "fixed k" and sum(s["size"] for s in seg["segments"]) == 12
    assert {"id", "name", "description", "size", "conversion_rate", "mean_monetary", "top_categories"} <= set(
        seg["segments"][0])
    members = pd.read_csv(out)
    assert list(members.columns) == ["user_id", "segment_id", "segment"] and len(members) == 12
    # Membership is in the profiles now.
    run = _cli("profile", "--store", str(shop), "--user", "u6", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["segment"] is not None


def test_content_vector_on_request(tmp_path):
    """A profile carries the user's content vector when asked: the same as user_content_vectors."""
    import numpy as np

    from journeymap.items import user_content_vectors
    from tests.items.conftest import SHOP, WordsEncoder, catalog_store

    events = [{"user_id": "ann", "ts": "2024-03-02 10:00:00", "event_type": "product_view", "item_id": "shoe-red"},
              {"user_id": "ann", "ts": "2024-03-02 10:05:00", "event_type": "purchase", "item_id": "tea"}]
    store = catalog_store(tmp_path, SHOP, events)
    build(store)
    encoder = WordsEncoder()
    plain = profile(store, raw_id="ann", settings=Settings(secret=SECRET))
    assert plain.content_vector is None
    rich = profile(store, raw_id="ann", settings=Settings(secret=SECRET), content=True, encoder=encoder)
    ids, matrix = user_content_vectors(store, users=[pseudo("ann")], encoder=encoder, as_of=rich.as_of)
    assert ids == [pseudo("ann")]
    assert np.allclose(rich.content_vector, matrix[0], atol=1e-6)
    # the purchase (weight 5) outweighs the view (weight 1): closer to the tea than to the shoe
    tea, shoe = encoder.expected(SHOP[4]["name"]), encoder.expected(SHOP[0]["name"])
    assert np.dot(rich.content_vector, tea) > np.dot(rich.content_vector, shoe)
