"""Stores for journey tests: hand-built logs with known answers, and one simulated shop.

``make_store(tmp_path, rows)`` ingests rows given as dicts with canonical field names (user_id,
ts, event_type, and any of session_id, item_id, category, channel, device, price, properties...),
with the test secret. ``simulated_store`` (one simulated shop per test run) lives in tests/conftest.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from journeymap.config import Settings
from journeymap.events import ingest
from tests.conftest import SECRET

COLUMNS = ("user_id", "ts", "event_type", "session_id", "item_id", "category", "brand", "price",
           "quantity", "channel", "device", "query", "text", "rating", "properties")


def make_store(tmp_path: Path, rows: list[dict], name: str = "journeys.duckdb") -> Path:
    """A store holding exactly these events (raw user ids as given, pseudonymized with SECRET)."""
    path = tmp_path / (name + ".csv")
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            unknown = set(row) - set(COLUMNS)
            assert not unknown, f"unknown fields {unknown}"
            values = {**row}
            if isinstance(values.get("properties"), dict):
                values["properties"] = json.dumps(values["properties"])
            writer.writerow(["" if values.get(c) is None else values[c] for c in COLUMNS])
    store = tmp_path / name
    result = ingest(path, store, settings=Settings(secret=SECRET), format="generic")
    assert result.quarantined == 0, result.reasons
    return store


def pseudo(raw: str) -> str:
    from journeymap.privacy import pseudonymize

    return pseudonymize(raw, SECRET)
