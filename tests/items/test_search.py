"""Similar items and catalog search with the default multilingual encoder on a hand-made shop."""

from __future__ import annotations

import pytest

from journeymap.exceptions import JourneymapError
from journeymap.items import SearchResult, SimilarItems, search_items, similar_items
from tests.items.conftest import SHOP, catalog_store


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return catalog_store(tmp_path_factory.mktemp("shop"), SHOP + [{"item_id": "taobao-1", "category": "4756105"}])


def test_the_nearest_item_is_the_same_kind_of_product(shop):
    nearest = {item: similar_items(shop, item, k=1).items[0].item_id for item in ("shoe-red", "shoe-blue", "phone", "case")}
    assert nearest == {"shoe-red": "shoe-blue", "shoe-blue": "shoe-red", "phone": "case", "case": "phone"}
    result = similar_items(shop, "shoe-red", k=10)
    assert isinstance(result, SimilarItems)
    ids = [m.item_id for m in result.items]
    assert ids[0] == "shoe-blue" and "shoe-red" not in ids
    assert len(result) == 4  # every other item with text, however large k is
    scores = [m.score for m in result.items]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)


def test_search_matches_across_languages(shop):
    assert search_items(shop, "红色跑鞋", k=1).items[0].item_id == "shoe-red"  # "red running shoes"
    assert search_items(shop, "绿茶", k=1).items[0].item_id == "tea"  # "green tea"
    assert search_items(shop, "Handyhülle", k=1).items[0].item_id == "case"  # German: phone case
    found = search_items(shop, "red running shoes", k=2)
    assert isinstance(found, SearchResult)
    assert [m.item_id for m in found.items] == ["shoe-red", "shoe-blue"]


def test_results_as_json_frame_and_figure(shop):
    result = similar_items(shop, "phone", k=2)
    data = result.to_dict()
    assert data["item"] == {"item_id": "phone", "name": "Apple iPhone 15 smartphone, 128 GB"}
    assert data["encoder"] == "use-multilingual-v3"
    assert [sorted(m) for m in data["items"]] == [["brand", "category", "item_id", "name", "score"]] * 2
    assert data["items"][0] | {"score": None} == {
        "item_id": "case", "name": "Silicone case for iPhone 15", "score": None,
        "category": "electronics.smartphone.accessories", "brand": "spigen"}
    frame = result.to_frame()
    assert frame.columns.tolist() == ["rank", "item_id", "name", "score", "category", "brand"]
    assert frame["item_id"].tolist() == [m["item_id"] for m in data["items"]]
    figure = result.figure()
    (bars,) = figure.data
    assert list(bars.x) == [m["score"] for m in data["items"]][::-1]  # the chart shows the frame's rows
    found = search_items(shop, "tea", k=3).to_dict()
    assert found["query"] == "tea" and len(found["items"]) == 3


def test_mistakes_say_what_to_do(shop, tmp_path):
    with pytest.raises(JourneymapError, match=(
            r"Item 'nope' is not in the catalog of .*items.duckdb \(6 items\). Item ids are the shop's own; "
            r"list some with: journeymap sql --store .* \"SELECT item_id, name FROM items LIMIT 20\"")):
        similar_items(shop, "nope")
    with pytest.raises(JourneymapError, match=(
            "Item 'taobao-1' has no name, category, brand or description in the catalog of .*, so it has no "
            "use-multilingual-v3 vector to compare; ingest a log or catalog that carries it.")):
        similar_items(shop, "taobao-1")
    with pytest.raises(JourneymapError, match="k must be a positive number of items, like 10. Got 0."):
        similar_items(shop, "phone", k=0)
    with pytest.raises(JourneymapError, match="search_items needs some text to search for, like 'red running shoes'."):
        search_items(shop, "  ")
    bare = catalog_store(tmp_path, [{"item_id": "1", "category": "123"}])
    with pytest.raises(JourneymapError, match="No item in the catalog of .* has a name, category, brand or description"):
        search_items(bare, "tea")
