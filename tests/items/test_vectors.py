"""Item text and the vector cache: what is encoded, when it is encoded again, what is stored."""

from __future__ import annotations

import numpy as np
import pytest

from journeymap.exceptions import JourneymapError, StoreError
from journeymap.items import item_texts, load_item_vectors, refresh_item_vectors
from journeymap.store import Store
from tests.items.conftest import (
    SHOP,
    WordsEncoder,
    add_rows,
    catalog_rows,
    catalog_store,
)

SHOP_TEXTS = {  # in item id order, the order they are encoded in
    "case": "Silicone case for iPhone 15. electronics > smartphone > accessories. spigen",
    "phone": "Apple iPhone 15 smartphone, 128 GB. electronics > smartphone. apple",
    "shoe-blue": "Asics Gel-Nimbus running shoe, Blue. apparel > shoes > running. asics",
    "shoe-red": "Red running shoes. apparel > shoes > running. nike",
    "tea": "Organic green tea, 100 bags. grocery > tea. twinings",
}


def test_item_text_is_name_category_path_brand_and_description(tmp_path):
    store = catalog_store(tmp_path, [
        {"item_id": "A", "name": "Pegasus 40  Running Shoe", "category": "apparel.shoes.trail_running",
         "brand": "nike", "description": "Light and   fast."},
        {"item_id": "B", "name": "WHITE HANGING HEART T-LIGHT HOLDER"},  # capitals read as lower case
        {"item_id": "C", "category": "4756105"},  # a numeric category id says nothing: no text
        {"item_id": "D", "category": "grocery.tea", "brand": "twinings"},
    ])
    texts = item_texts(store)
    assert texts[["item_id", "text"]].values.tolist() == [
        ["A", "Pegasus 40 Running Shoe. apparel > shoes > trail running. nike. Light and fast."],
        ["B", "white hanging heart t-light holder"],
        ["D", "grocery > tea. twinings"],
    ]


def test_vectors_are_cached_and_only_new_or_changed_text_is_encoded(tmp_path):
    store = catalog_store(tmp_path, SHOP)
    encoder = WordsEncoder()

    first = refresh_item_vectors(store, encoder)
    assert (first.items, first.encoded, first.removed) == (5, 5, 0)
    assert encoder.seen == list(SHOP_TEXTS.values())

    second = refresh_item_vectors(store, encoder)
    assert (second.items, second.encoded, second.removed) == (5, 0, 0)
    assert len(encoder.seen) == 5

    # The shop renames one item: a later event carries the new name.
    add_rows(store, catalog_rows([{**SHOP[0], "name": "Red trail running shoes"}], ts="2024-03-02 00:00:00"))
    third = refresh_item_vectors(store, encoder)
    assert (third.items, third.encoded) == (5, 1)
    assert encoder.seen[5:] == ["Red trail running shoes. apparel > shoes > running. nike"]

    # A new item is encoded; the others are not.
    add_rows(store, catalog_rows([{"item_id": "mug", "name": "Tea mug"}]), "mug")
    fourth = refresh_item_vectors(store, encoder)
    assert (fourth.items, fourth.encoded) == (6, 1)
    assert encoder.seen[6:] == ["Tea mug"]

    vectors = load_item_vectors(store, encoder, refresh=False)
    assert vectors.item_ids == ["case", "mug", "phone", "shoe-blue", "shoe-red", "tea"]
    assert vectors.matrix.dtype == np.float32 and vectors.matrix.shape == (6, 64)
    np.testing.assert_allclose(vectors.vector("shoe-red"),
                               encoder.expected("Red trail running shoes. apparel > shoes > running. nike"))
    assert vectors.names[vectors.index["shoe-red"]] == "Red trail running shoes"


def test_a_catalog_edit_in_sql_is_noticed_and_an_item_without_text_loses_its_vector(tmp_path):
    store = catalog_store(tmp_path, SHOP)
    encoder = WordsEncoder()
    refresh_item_vectors(store, encoder)
    with Store(store) as st:
        st.con.execute("UPDATE items SET brand = 'brooks' WHERE item_id = 'shoe-blue'")
        st.con.execute("UPDATE items SET name = NULL, category = NULL, brand = NULL WHERE item_id = 'tea'")
    result = refresh_item_vectors(store, encoder)
    assert (result.items, result.encoded, result.removed) == (4, 1, 1)
    assert encoder.seen[-1] == "Asics Gel-Nimbus running shoe, Blue. apparel > shoes > running. brooks"
    assert "tea" not in load_item_vectors(store, encoder, refresh=False).index


def test_each_encoder_keeps_its_own_vectors(tmp_path):
    store = catalog_store(tmp_path, SHOP)
    one, other = WordsEncoder("words-a"), WordsEncoder("words-b")
    assert refresh_item_vectors(store, one).encoded == 5
    assert refresh_item_vectors(store, other).encoded == 5
    assert refresh_item_vectors(store, one).encoded == 0
    with Store(store, read_only=True) as st:
        assert st.con.execute(
            "SELECT encoder, modality, count(*) FROM item_vectors GROUP BY ALL ORDER BY 1").fetchall() == [
            ("words-a", "text", 5), ("words-b", "text", 5)]


def test_batches_commit_one_by_one_so_an_interrupted_refresh_keeps_its_work(tmp_path):
    store = catalog_store(tmp_path, SHOP)

    class FailsOnSecondBatch(WordsEncoder):
        def encode(self, texts):
            if self.seen:
                raise RuntimeError("out of memory")
            return super().encode(texts)

    with pytest.raises(RuntimeError, match="out of memory"):
        refresh_item_vectors(store, FailsOnSecondBatch(), batch_size=2)
    encoder = WordsEncoder()
    calls = []
    result = refresh_item_vectors(store, encoder, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert (result.items, result.encoded) == (5, 3)
    assert calls == [(2, 3), (3, 3)]


def test_identical_titles_are_encoded_once_per_batch(tmp_path):
    store = catalog_store(tmp_path, [{"item_id": str(i), "name": "Columbian candle round"} for i in range(4)])
    encoder = WordsEncoder()
    assert refresh_item_vectors(store, encoder).encoded == 4
    assert encoder.seen == ["Columbian candle round"]
    assert len(load_item_vectors(store, encoder, refresh=False)) == 4


def test_a_read_only_store_with_fresh_vectors_is_enough_and_a_stale_one_says_what_to_do(tmp_path):
    store = catalog_store(tmp_path, SHOP)
    encoder = WordsEncoder()
    refresh_item_vectors(store, encoder)
    with Store(store, read_only=True) as st:
        assert len(load_item_vectors(st, encoder)) == 5
    add_rows(store, catalog_rows([{"item_id": "mug", "name": "Tea mug"}]), "mug")
    with Store(store, read_only=True) as st, pytest.raises(StoreError, match=(
            "The item vectors in .* need computing, but the store is open read-only; pass a read-write Store")):
        load_item_vectors(st, encoder)


def test_an_encoder_returning_the_wrong_shape_is_named(tmp_path):
    store = catalog_store(tmp_path, SHOP)

    class Broken(WordsEncoder):
        def encode(self, texts):
            return super().encode(texts)[:, :10]

    with pytest.raises(JourneymapError, match=(
            r"The encoder 'broken' returned an array of shape \(5, 10\) for 5 inputs; its encode\(\) must "
            "return one row of 64 numbers per input.")):
        refresh_item_vectors(store, Broken("broken"))
    with pytest.raises(StoreError, match="No store at"):
        refresh_item_vectors(tmp_path / "absent.duckdb", WordsEncoder())
