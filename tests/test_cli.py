"""The CLI as a user runs it: JSON shapes, one-line errors, read-only SQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from tests.conftest import SECRET, shared

ROWS = "user_id,ts,event_type,item_id\nu1,2024-03-01 10:00:00,product_view,A\nu1,2024-03-01 10:02:00,purchase,A\nu2,bad,product_view,A\n"


def jm(*args: str, secret: str | None = SECRET, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYMAP_")}
    if secret:
        env["JOURNEYMAP_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "journeymap.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_ingest_and_info_json(tmp_path):
    src = tmp_path / "shop.csv"
    src.write_text(ROWS)
    store = tmp_path / "s.duckdb"
    done = jm("ingest", str(src), "--store", str(store), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ("read", "stored", "quarantined", "duplicates", "format")} == {
        "read": 3, "stored": 2, "quarantined": 1, "duplicates": 0, "format": "generic"}
    info = json.loads(jm("info", "--store", str(store), "--json").stdout)
    assert {k: info[k] for k in ("events", "users", "sessions", "event_types", "first_ts", "last_ts", "quarantined")} == {
        "events": 2, "users": 1, "sessions": 1, "event_types": {"product_view": 1, "purchase": 1},
        "first_ts": "2024-03-01 10:00:00", "last_ts": "2024-03-01 10:02:00", "quarantined": 1}


def test_errors_are_one_sentence_without_traceback(tmp_path):
    src = tmp_path / "shop.csv"
    src.write_text(ROWS)
    done = jm("ingest", str(src), "--store", str(tmp_path / "s.duckdb"), secret=None)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: No pseudonymization secret is set. Set one with: export JOURNEYMAP_SECRET=")
    done = jm("info", "--store", str(tmp_path / "missing.duckdb"))
    assert done.returncode == 1 and "No store at" in done.stderr and "Traceback" not in done.stderr


def test_sql_is_read_only(tmp_path):
    src = tmp_path / "shop.csv"
    src.write_text(ROWS)
    store = tmp_path / "s.duckdb"
    jm("ingest", str(src), "--store", str(store))
    done = jm("sql", "--store", str(store), "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 1", "--json")
    assert json.loads(done.stdout) == [{"event_type": "product_view", "n": 1}, {"event_type": "purchase", "n": 1}]
    done = jm("sql", "--store", str(store), "DROP TABLE events")
    assert done.returncode == 1 and "journeymap sql is read-only" in done.stderr
    assert json.loads(jm("info", "--store", str(store), "--json").stdout)["events"] == 2


def test_pseudonym_lookup_finds_the_users_events(tmp_path):
    from journeymap.privacy import pseudonymize

    src = tmp_path / "shop.csv"
    src.write_text(ROWS)
    store = tmp_path / "s.duckdb"
    jm("ingest", str(src), "--store", str(store))
    done = jm("pseudonym", "u1", "--store", str(store), "--json")
    assert json.loads(done.stdout) == {"user": pseudonymize("u1", SECRET), "events": 2}


def test_ingest_with_map_options(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("who,when,what\nc1,1700000000,click\n")
    done = jm("ingest", str(src), "--store", str(tmp_path / "s.duckdb"), "--map", "user_id=who", "--map", "ts=when",
              "--map", "event_type=what", "--event-map", "click=product_view", "--ts-unit", "s", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 1
    done = jm("ingest", str(src), "--store", str(tmp_path / "s.duckdb"), "--map", "user_id")
    assert done.returncode == 1 and "The --map option takes NAME=VALUE, like user_id=customer. Got 'user_id'." in done.stderr


def test_formats_lists_every_adapter():
    names = [f["name"] for f in json.loads(jm("formats", "--json").stdout)]
    assert names == ["rees46", "taobao", "diginetica", "yoochoose", "retailrocket", "online_retail",
                     "instacart", "ga4", "generic"]


def test_real_sample_through_the_cli(tmp_path):
    path = shared("taobao-userbehavior-sample/UserBehavior.csv")
    done = jm("ingest", str(path), "--store", str(tmp_path / "s.duckdb"), "--json")
    assert json.loads(done.stdout)["stored"] == 4321


def test_demo_writes_store_report_and_persona_recovery(tmp_path):
    done = jm("demo", "--out", str(tmp_path / "demo"), "--users", "3000", "--days", "14", "--json", secret=None)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    ingest = data["ingest"]
    assert ingest["read"] == ingest["stored"] > 20_000 and ingest["quarantined"] == 0
    assert data["info"]["users"] == 3000 and data["info"]["demo"] is True
    assert (tmp_path / "demo" / "report.html").stat().st_size > 3_000_000
    assert [s["title"] for s in data["report"]["sections"]][-1] == "Personas"
    assert 0.0 < data["personas_adjusted_rand"] <= 1.0
