"""``journeymap similar-items`` and ``journeymap search-items`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from journeymap.cli import app
from tests.items.conftest import SHOP, catalog_store


def jm(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYMAP_")}
    return subprocess.run([sys.executable, "-m", "journeymap.cli", *args], check=False, capture_output=True,
                          text=True, env=env, timeout=300)


def test_similar_items_json(tmp_path):
    store = catalog_store(tmp_path, SHOP)
    done = jm("similar-items", "--store", str(store), "--item", "shoe-red", "--k", "2", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["item"] == {"item_id": "shoe-red", "name": "Red running shoes"}
    assert data["items"][0]["item_id"] == "shoe-blue" and len(data["items"]) == 2
    assert {"item_id", "name", "score"} <= set(data["items"][0])


def test_an_unknown_item_is_one_line_without_encoding_anything(tmp_path):
    store = catalog_store(tmp_path, SHOP)
    done = jm("similar-items", "--store", str(store), "--item", "sku-404")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: Item 'sku-404' is not in the catalog of")
    assert done.stdout == ""


def test_search_items_table_and_json(tmp_path):
    store = catalog_store(tmp_path, SHOP)
    runner = CliRunner()
    table = runner.invoke(app, ["search-items", "--store", str(store), "红色跑鞋", "--k", "3"])
    assert table.exit_code == 0, table.output
    assert "Items matching '红色跑鞋'" in table.output and "Red running shoes" in table.output
    done = runner.invoke(app, ["search-items", "--store", str(store), "green tea", "--k", "1", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["query"] == "green tea" and [m["item_id"] for m in data["items"]] == ["tea"]
