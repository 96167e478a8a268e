"""The journey report: one offline HTML file whose sentences state the analyses' own numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from journeymap.config import Settings
from journeymap.journeys._report import build_report
from tests.conftest import SECRET


def test_report_on_the_simulated_shop_finds_the_planted_effects(simulated_store, tmp_path):
    out = tmp_path / "report.html"
    report = build_report(simulated_store.store, out, Settings())
    titles = [s.title for s in report.sections]
    assert titles == ["Overview", "Journey map", "Main funnel", "Top paths", "Drop-off drivers",
                      "Attribution", "Retention", "Personas"]
    by_title = {s.title: s for s in report.sections}
    assert all(s.figure is not None for s in report.sections[1:]), [s.sentence for s in report.sections]
    assert "The strongest driver of dropping is device=mobile" in by_title["Drop-off drivers"].sentence
    assert re.search(r"by channel: email \d", by_title["Attribution"].sentence)
    events = by_title["Overview"].data["events"]
    assert by_title["Overview"].sentence.startswith(f"{events:,} events from 20,000 users")

    page = out.read_text(encoding="utf-8")
    # Offline: plotly.js is embedded, no script is fetched (the library's source merely names its
    # CDN as the default for geographic maps, which the report does not draw).
    assert "<script src=" not in page and 'src="http' not in page
    assert len(page) > 3_000_000 and page.count('class="plotly-graph-div"') == 7
    for section in report.sections:
        assert section.title in page


def test_report_says_what_a_log_cannot_support(tmp_path):
    from tests.journeys.conftest import make_store

    rows = [{"user_id": f"u{i}", "ts": f"2024-01-0{1 + i % 3} 10:00:00", "event_type": "product_view",
             "session_id": f"s{i}"} for i in range(6)]
    store = make_store(tmp_path, rows)
    report = build_report(store, tmp_path / "r.html", Settings())
    by_title = {s.title: s.sentence for s in report.sections}
    assert by_title["Overview"].startswith("6 events from 6 users in 6 sessions")
    assert by_title["Main funnel"] == ("Not available for this data: fewer than two of product_view, add_to_cart, "
                                       "begin_checkout, purchase occur in the store.")
    assert by_title["Attribution"].startswith("Not available for this data:")


def test_report_command(tmp_path):
    from tests.journeys.conftest import make_store

    rows = []
    for i in range(12):
        rows += [{"user_id": f"u{i}", "ts": "2024-01-01 10:00:00", "event_type": "product_view", "session_id": f"s{i}",
                  "channel": "email" if i % 2 else "social", "device": "mobile"},
                 {"user_id": f"u{i}", "ts": "2024-01-01 10:01:00", "event_type": "add_to_cart", "session_id": f"s{i}",
                  "channel": "email" if i % 2 else "social", "device": "mobile"}]
        if i % 3 == 0:
            rows.append({"user_id": f"u{i}", "ts": "2024-01-01 10:05:00", "event_type": "purchase",
                         "session_id": f"s{i}", "channel": "email" if i % 2 else "social", "device": "mobile"})
    store = make_store(tmp_path, rows)
    env = {**os.environ, "JOURNEYMAP_SECRET": SECRET}
    done = subprocess.run([sys.executable, "-m", "journeymap.cli", "report", "--store", str(store),
                           "--out", str(tmp_path / "r.html"), "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    funnel = next(s for s in data["sections"] if s["title"] == "Main funnel")
    assert funnel["sentence"].startswith("Of 12 users who did product_view, within a day: add_to_cart 12 (100.0%), "
                                         "purchase 4 (33.3%)")
    assert (tmp_path / "r.html").exists()
