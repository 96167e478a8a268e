"""Paths on a hand-built log whose top paths, Sankey links and users are known by construction."""

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
from journeymap.journeys._paths import paths
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

T0 = datetime(2024, 3, 1, 12, 0, 0)
PV, CART, BUY = "product_view", "add_to_cart", "purchase"


def ev(user: str, session: str, seconds: float, event_type: str, device: str = "desktop") -> dict:
    return {"user_id": user, "session_id": session, "ts": (T0 + timedelta(seconds=seconds)).isoformat(sep=" "),
            "event_type": event_type, "device": device}


ROWS = [
    # s1: page -> view, view (a repeat) -> cart -> buy; the path from the first view lasts 70 s.
    ev("u1", "s1", 0, "page_view"), ev("u1", "s1", 10, PV), ev("u1", "s1", 20, PV), ev("u1", "s1", 50, CART),
    ev("u1", "s1", 80, BUY),
    # s2: view -> cart -> buy in 50 s (mobile).
    ev("u2", "s2", 0, PV, "mobile"), ev("u2", "s2", 20, CART, "mobile"), ev("u2", "s2", 50, BUY, "mobile"),
    # s3: view -> page -> view; s4: search -> view -> leave; s5 never views a product.
    ev("u3", "s3", 0, PV), ev("u3", "s3", 5, "page_view"), ev("u3", "s3", 9, PV),
    ev("u4", "s4", 0, "search"), ev("u4", "s4", 7, PV),
    ev("u5", "s5", 0, "page_view"),
]


@pytest.fixture
def shop(tmp_path):
    return make_store(tmp_path, ROWS)


@pytest.fixture
def journeys(shop):
    with Journeys.open(shop, Settings(secret=SECRET)) as j:
        yield j


def counts(result) -> dict[tuple[str, ...], int]:
    return {p.labels: p.sessions for p in result.paths}


def test_top_paths_from_a_start(journeys):
    r = paths(journeys, start=PV, steps=3)
    assert counts(r) == {(PV, CART, BUY): 2, (PV, "page_view", PV): 1, (PV, "session_end"): 1}
    assert r.paths[0].labels == (PV, CART, BUY)
    assert r.paths[0].users == 2
    assert r.paths[0].share == pytest.approx(2 / 4)
    assert r.paths[0].median_seconds == pytest.approx(60.0)  # 70 s and 50 s
    assert r.sessions == 5 and r.anchored_sessions == 4


def test_no_collapse_keeps_repeats(journeys):
    r = paths(journeys, start=PV, steps=3, collapse_repeats=False)
    assert counts(r) == {(PV, PV, CART): 1, (PV, CART, BUY): 1, (PV, "page_view", PV): 1, (PV, "session_end"): 1}


def test_paths_to_an_end_are_right_aligned(journeys):
    r = paths(journeys, end=BUY, steps=4)
    assert counts(r) == {("page_view", PV, CART, BUY): 1, ("session_start", PV, CART, BUY): 1}
    assert {(n.position, n.label) for n in r.sankey_nodes} == {
        (1, "page_view"), (1, "session_start"), (2, PV), (3, CART), (4, BUY)}


def test_rename_merges_labels(journeys):
    r = paths(journeys, start="browse", steps=2, rename={"^(page_view|search)$": "browse"})
    assert counts(r) == {("browse", PV): 3, ("browse", "session_end"): 1}
    assert r.rename == {"^(page_view|search)$": "browse"}
    # Patterns apply in order, each to the previous one's result; the merged labels then collapse.
    r = paths(journeys, start="seen", steps=2, rename={"_view$": "", "^(page|product)$": "seen"})
    assert counts(r) == {("seen", CART): 2, ("seen", "session_end"): 3}


def test_sankey_links_count_every_anchored_session(journeys):
    r = paths(journeys, start=PV, steps=3, top=1)
    assert len(r.paths) == 1  # top limits the table, not the Sankey
    assert {(link.source, link.target): link.sessions for link in r.sankey_links} == {
        (f"1:{PV}", f"2:{CART}"): 2, (f"1:{PV}", "2:page_view"): 1, (f"1:{PV}", "2:session_end"): 1,
        (f"2:{CART}", f"3:{BUY}"): 2, ("2:page_view", f"3:{PV}"): 1,
    }
    assert {n.id: n.sessions for n in r.sankey_nodes}[f"1:{PV}"] == 4
    fig = r.figure()
    assert list(fig.data[0].link.value) == [link.sessions for link in r.sankey_links]


def test_users_behind_a_path(journeys):
    r = paths(journeys, start=PV, steps=3)
    assert r.users((PV, CART, BUY)) == sorted([pseudo("u1"), pseudo("u2")])
    assert r.users(f"{PV} → session_end") == [pseudo("u4")]
    assert r.sessions_of([PV, "page_view", PV]) == [pseudo("u3") + ":s3"]
    assert r.all_users() == sorted(pseudo(u) for u in ("u1", "u2", "u3", "u4"))


def test_filters_apply(shop):
    with Journeys.open(shop, Settings(secret=SECRET), Filters(device=("mobile",))) as j:
        r = paths(j, start=PV, steps=3)
    assert counts(r) == {(PV, CART, BUY): 1}
    assert r.paths[0].share == 1.0


def test_frame_and_dict(journeys):
    r = paths(journeys, start=PV, steps=3)
    frame = r.to_frame()
    assert list(frame.columns) == ["path", "steps", "sessions", "users", "share", "median_seconds"]
    assert frame["path"].iloc[0] == f"{PV} → {CART} → {BUY}"
    data = json.loads(json.dumps(r.to_dict()))
    assert data["paths"][0]["path"] == [PV, CART, BUY]
    assert set(data["sankey"]) == {"nodes", "links"}


def test_errors_say_what_is_expected(journeys):
    with pytest.raises(JourneymapError, match=r"paths\(\) takes exactly one of start or end .*Got both\."):
        paths(journeys, start=PV, end=BUY)
    with pytest.raises(JourneymapError, match=r"Got neither\."):
        paths(journeys)
    with pytest.raises(JourneymapError, match=r"The 'steps' parameter of paths\(\) must be 1 or more. Got 0\."):
        paths(journeys, start=PV, steps=0)
    with pytest.raises(JourneymapError, match=r"A rename pattern must be a regular expression; '\(' is not"):
        paths(journeys, start=PV, rename={"(": "x"})


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JOURNEYMAP_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "journeymap.cli", *args], check=False, env=env,
                          capture_output=True, text=True)


def test_cli_json_with_rename(shop):
    run = cli("paths", "--store", str(shop), "--start", "browse", "--steps", "2", "--json",
              "--rename", "^(page_view|search)$=browse")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert {"paths", "sankey", "sessions", "anchored_sessions"} <= set(data)
    assert data["paths"][0] == {"path": ["browse", PV], "sessions": 3, "users": 3, "share": 0.75,
                                "median_seconds": 7.0}


def test_cli_needs_exactly_one_anchor(shop):
    run = cli("paths", "--store", str(shop), "--steps", "3")
    assert run.returncode == 1
    assert "paths takes exactly one of --start LABEL or --end LABEL. Got neither." in run.stderr
    run = cli("paths", "--store", str(shop), "--start", PV, "--steps", "0")
    assert run.returncode == 1 and "Got 0." in run.stderr
