"""GET /v1/journeys/...: the JSON of the CLI's --json for the same options, over the live store."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import SECRET
from tests.serve.conftest import auth, make_app

# (API path and query parameters, the same analysis as CLI arguments)
CASES = [
    ("graph", {"by": "stage", "min_count": 2, "device": "mobile"},
     ["graph", "--by", "stage", "--min-count", "2", "--device", "mobile"]),
    ("funnel", {"steps": "product_view,add_to_cart,purchase", "window": "2h", "breakdown": "device",
                "step_window": ["purchase=1h"]},
     ["funnel", "--steps", "product_view,add_to_cart,purchase", "--window", "2h", "--breakdown", "device",
      "--step-window", "purchase=1h"]),
    ("attribution", {"model": "linear", "touchpoint": "channel", "from": "2024-01-02"},
     ["attribution", "--model", "linear", "--touchpoint", "channel", "--from", "2024-01-02"]),
    ("retention", {"period": "day", "periods": 4}, ["retention", "--period", "day", "--periods", "4"]),
    ("retention", {"view": "lifecycle", "period": "day"}, ["retention", "--view", "lifecycle", "--period", "day"]),
    ("paths", {"start": "product_view", "steps": 3, "top": 5, "rename": ["^(page|product)_view$=browse"]},
     ["paths", "--start", "product_view", "--steps", "3", "--top", "5", "--rename", "^(page|product)_view$=browse"]),
]


@pytest.fixture
def served(store):
    """Each case's API answer, after a few live events; the app is stopped before the CLI reads the store."""
    events = [{"user_id": "j-1", "ts": f"2024-01-06 12:0{i}:00", "event_type": t, "item_id": "A", "device": "mobile",
               "channel": "email", "price": 5.0}
              for i, t in enumerate(["product_view", "add_to_cart", "purchase"])]
    with TestClient(make_app(store, update_profiles=False)) as client:
        assert client.post("/v1/events", json={"events": events}, headers=auth("ingest")).status_code == 200
        answers = []
        for analysis, params, _ in CASES:
            response = client.get(f"/v1/journeys/{analysis}", params=params, headers=auth("read"))
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return store, answers


def test_every_analysis_is_the_cli_json(served, monkeypatch):
    from journeymap.cli import app as cli

    store, answers = served
    monkeypatch.setenv("JOURNEYMAP_SECRET", SECRET)
    for (analysis, _, args), answer in zip(CASES, answers):
        printed = CliRunner().invoke(cli, [*args, "--store", str(store), "--json"])
        assert printed.exit_code == 0, printed.output
        assert json.loads(printed.output) == answer, analysis


def test_a_bad_option_is_a_400_with_the_library_sentence(client):
    response = client.get("/v1/journeys/funnel", params={"steps": "product_view"}, headers=auth("read"))
    assert (response.status_code, response.json()["detail"]) == (
        400, "A funnel needs at least 2 steps, like page_view,purchase. Got 1.")
    both = client.get("/v1/journeys/paths", params={"start": "a", "end": "b"}, headers=auth("read"))
    assert (both.status_code, both.json()["detail"]) == (
        400, "paths takes exactly one of --start LABEL or --end LABEL. Got both.")
    segment = client.get("/v1/journeys/graph", params={"segment": "vips"}, headers=auth("read"))
    assert segment.json()["detail"].startswith("No segment named 'vips' in ")
