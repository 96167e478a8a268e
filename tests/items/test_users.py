"""User content vectors: exact weighted means on hand-built users."""

from __future__ import annotations

import numpy as np
import pytest

from journeymap.exceptions import JourneymapError
from journeymap.items import load_item_vectors, user_content_vectors
from journeymap.privacy import pseudonymize
from tests.conftest import SECRET
from tests.items.conftest import SHOP, WordsEncoder, catalog_store

EVENTS = [
    # u1 viewed a shoe 30 days before the store's last event, and bought tea at that last event.
    {"user_id": "u1", "ts": "2024-03-01 12:00:00", "event_type": "product_view", "item_id": "shoe-red"},
    {"user_id": "u1", "ts": "2024-03-31 12:00:00", "event_type": "purchase", "item_id": "tea"},
    # u2 carted a phone; its page view has no item and counts for nothing.
    {"user_id": "u2", "ts": "2024-03-16 12:00:00", "event_type": "page_view"},
    {"user_id": "u2", "ts": "2024-03-16 12:01:00", "event_type": "add_to_cart", "item_id": "phone"},
    {"user_id": "u3", "ts": "2024-03-20 12:00:00", "event_type": "page_view"},  # no item: no vector
]


def pseudo(raw: str) -> str:
    return pseudonymize(raw, SECRET)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    store = catalog_store(tmp_path_factory.mktemp("users"), SHOP, EVENTS)
    vectors = load_item_vectors(store, WordsEncoder())
    return store, {item: vectors.vector(item) for item in vectors.item_ids}


def test_a_users_vector_is_the_recency_and_event_weighted_mean(shop):
    store, v = shop
    users, matrix = user_content_vectors(store, half_life_days=30, encoder=WordsEncoder())
    assert users == sorted([pseudo("u1"), pseudo("u2"), pseudo("catalog")])
    assert matrix.shape == (3, 64) and matrix.dtype == np.float32
    row = dict(zip(users, matrix))
    # u1: the view is one half-life old (1 x 0.5), the purchase is new (5 x 1).
    np.testing.assert_allclose(row[pseudo("u1")], (0.5 * v["shoe-red"] + 5 * v["tea"]) / 5.5, atol=1e-6)
    np.testing.assert_allclose(row[pseudo("u2")], v["phone"], atol=1e-6)
    # The catalog user viewed all five items at the same moment: a plain mean.
    np.testing.assert_allclose(row[pseudo("catalog")], np.mean([v[i] for i in sorted(v)], axis=0), atol=1e-6)

    _, (u1,) = user_content_vectors(store, [pseudo("u1")], half_life_days=10, encoder=WordsEncoder())
    weight = np.exp(-np.log(2) * 30 / 10)  # 0.125
    np.testing.assert_allclose(u1, (weight * v["shoe-red"] + 5 * v["tea"]) / (weight + 5), atol=1e-6)


def test_users_as_of_and_event_weights_narrow_it_down(shop):
    store, v = shop
    users, matrix = user_content_vectors(store, [pseudo("u2"), pseudo("u3"), "nobody"], encoder=WordsEncoder())
    assert users == [pseudo("u2")]
    np.testing.assert_allclose(matrix[0], v["phone"], atol=1e-6)
    # As of mid-March u1 had not bought the tea yet: later events are left out.
    users, matrix = user_content_vectors(store, [pseudo("u1")], as_of="2024-03-16 12:00:00", encoder=WordsEncoder())
    np.testing.assert_allclose(matrix[0], v["shoe-red"], atol=1e-6)
    # A purchase that weighs nothing leaves only the view.
    _, matrix = user_content_vectors(store, [pseudo("u1")], encoder=WordsEncoder(), event_weights={"purchase": 0})
    np.testing.assert_allclose(matrix[0], v["shoe-red"], atol=1e-6)
    assert user_content_vectors(store, [], encoder=WordsEncoder())[1].shape == (0, 64)


def test_the_default_encoder_gives_512_d_user_vectors(shop):
    store, _ = shop
    users, matrix = user_content_vectors(store, [pseudo("u1")])
    assert users == [pseudo("u1")] and matrix.shape == (1, 512)


def test_a_half_life_must_be_positive(shop):
    store, _ = shop
    with pytest.raises(JourneymapError, match="half_life_days must be a positive number of days, like 30. Got 0."):
        user_content_vectors(store, half_life_days=0)
