"""Item vectors of real product names (../shared/data) give sensible nearest neighbours.

Each check would fail on random vectors: there a product's nearest neighbour shares its kind only
as often as that kind occurs in the catalog (a few percent), not for most products of the kind.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from journeymap.config import Settings
from journeymap.events import ingest
from journeymap.items import load_item_vectors, search_items, similar_items
from tests.conftest import SECRET, shared


@pytest.fixture(scope="module")
def settings_module() -> Settings:
    return Settings(secret=SECRET)


@pytest.fixture(scope="module")
def online_retail(tmp_path_factory, settings_module):
    store = tmp_path_factory.mktemp("retail") / "retail.duckdb"
    ingest(shared("uci-online-retail-sample/online_retail_sample.csv"), store, settings=settings_module)
    return store, load_item_vectors(store)


@pytest.fixture(scope="module")
def instacart(tmp_path_factory, settings_module):
    # The first 2,000 order lines of the 3,220-order subset (about 1,400 products) keep this quick;
    # lines of orders outside orders.csv are quarantined as in the full sample.
    source = shared("instacart-samples/billyrohh-subset")
    folder = tmp_path_factory.mktemp("instacart")
    for name in ("aisles.csv", "departments.csv", "orders.csv", "products.csv"):
        shutil.copy(source / name, folder / name)
    with (source / "order_products__prior.csv").open() as lines:
        (folder / "order_products__prior.csv").write_text("".join(next(lines) for _ in range(2001)))
    store = folder / "instacart.duckdb"
    ingest(folder, store, settings=settings_module)
    return store, load_item_vectors(store)


def nearest_names(vectors) -> list[str]:
    similarity = vectors.matrix @ vectors.matrix.T
    np.fill_diagonal(similarity, -np.inf)
    return [vectors.names[j] for j in similarity.argmax(axis=1)]


def test_online_retail_mugs_neighbour_mugs_and_cups(online_retail):
    store, vectors = online_retail
    assert len(vectors) == 1822
    nearest = nearest_names(vectors)
    mugs = [i for i, name in enumerate(vectors.names) if " MUG" in name]
    kin = [i for i in mugs if "MUG" in nearest[i] or "CUP" in nearest[i]]
    assert len(mugs) == 49 and len(kin) >= 35  # 39 when written; random vectors: about 2
    result = similar_items(store, "85123A", k=3)
    assert result.name == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert all("T-LIGHT HOLDER" in m.name for m in result.items), result.to_dict()


def test_instacart_products_neighbour_their_kind_and_are_found_in_other_languages(instacart):
    store, vectors = instacart
    nearest = nearest_names(vectors)
    for word, share in (("yogurt", 0.85), ("cheese", 0.75)):
        kind = [i for i, name in enumerate(vectors.names) if word in name.lower()]
        kin = [i for i in kind if word in nearest[i].lower()]
        assert len(kind) >= 50 and len(kin) >= share * len(kind), (word, len(kin), len(kind))
    assert "Banana" in search_items(store, "香蕉", k=1).items[0].name  # Chinese: banana
    assert all("Milk" in m.name for m in search_items(store, "Milch", k=3).items)  # German: milk
