"""Catalog stores for item tests, and a tiny deterministic encoder.

``catalog_store(tmp_path, items, events)`` ingests one product_view per catalog item (by the user
'catalog', carrying the item's name, category, brand and properties) and then ``events``, all
through the generic adapter with the test secret. ``WordsEncoder`` is a hashed bag of words: instant,
exact, and it records every text it encodes, so cache tests can say what was encoded.
"""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np

from journeymap.config import Settings
from journeymap.events import ingest
from tests.conftest import SECRET

COLUMNS = ("user_id", "ts", "event_type", "item_id", "item_name", "category", "brand", "properties")
CATALOG_TS = "2024-03-01 00:00:00"

# A small shop whose right answers are plain: two running shoes, a phone and its case, a tea.
SHOP = [
    {"item_id": "shoe-red", "name": "Red running shoes", "category": "apparel.shoes.running", "brand": "nike"},
    {"item_id": "shoe-blue", "name": "Asics Gel-Nimbus running shoe, Blue", "category": "apparel.shoes.running",
     "brand": "asics"},
    {"item_id": "phone", "name": "Apple iPhone 15 smartphone, 128 GB", "category": "electronics.smartphone",
     "brand": "apple"},
    {"item_id": "case", "name": "Silicone case for iPhone 15", "category": "electronics.smartphone.accessories",
     "brand": "spigen"},
    {"item_id": "tea", "name": "Organic green tea, 100 bags", "category": "grocery.tea", "brand": "twinings"},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            unknown = set(row) - set(COLUMNS)
            assert not unknown, f"unknown fields {unknown}"
            values = dict(row)
            if isinstance(values.get("properties"), dict):
                values["properties"] = json.dumps(values["properties"])
            writer.writerow(["" if values.get(c) is None else values[c] for c in COLUMNS])
    return path


def catalog_rows(items: list[dict], ts: str = CATALOG_TS) -> list[dict]:
    """One product_view per item, carrying its catalog fields (description/image as properties)."""
    rows = []
    for item in items:
        properties = {k: item[k] for k in ("description", "image") if item.get(k)}
        rows.append({"user_id": "catalog", "ts": ts, "event_type": "product_view", "item_id": item["item_id"],
                     "item_name": item.get("name"), "category": item.get("category"), "brand": item.get("brand"),
                     "properties": properties or None})
    return rows


def add_rows(store: Path, rows: list[dict], name: str = "more") -> None:
    """Ingest more rows into an existing store."""
    result = ingest(write_rows(store.with_name(f"{store.stem}-{name}.csv"), rows), store,
                    settings=Settings(secret=SECRET), format="generic")
    assert result.quarantined == 0, result.reasons


def catalog_store(tmp_path: Path, items: list[dict], events: list[dict] | None = None,
                  name: str = "items.duckdb") -> Path:
    store = tmp_path / name
    add_rows(store, catalog_rows(items) + (events or []), "catalog")
    return store


class WordsEncoder:
    """A hashed bag of lower-cased words, 64-d: plugs in by duck typing, like a shop's own encoder."""

    dim = 64

    def __init__(self, name: str = "test-words") -> None:
        self.name = name
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
        return out  # not normalised: journeymap normalises what an encoder returns

    def expected(self, text: str) -> np.ndarray:
        """The stored vector for one text: this encoder's output, L2-normalised."""
        vector = WordsEncoder.encode(WordsEncoder(), [text])[0]
        return vector / np.linalg.norm(vector)
