"""User content vectors: what a shopper looks at and buys, as one vector in the item space.

Each user's vector is the weighted mean of the vectors of the items they engaged with, so a
profile has a content vector even for a user the sequence models have never seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from numbers import Real
from typing import Any

import numpy as np

from journeymap.exceptions import JourneymapError
from journeymap.items._encoders import resolve_encoder
from journeymap.items._vectors import StoreLike, _lit, _open, load_item_vectors

# A purchase says more about taste than a cart, a cart more than a view; any other event with an
# item (wishlist, review, remove from cart, ...) counts like a view.
EVENT_WEIGHTS: Mapping[str, float] = {"product_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
OTHER_EVENT_WEIGHT = 1.0


def user_content_vectors(
    store_path: StoreLike,
    users: Iterable[str] | None = None,
    half_life_days: float = 30,
    *,
    as_of: datetime | str | None = None,
    encoder: Any = None,
    event_weights: Mapping[str, float] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Each user's recency- and event-weighted mean item vector: ``(user_ids, matrix)``.

    ``matrix`` is float32 (len(user_ids), dim); row i belongs to ``user_ids[i]`` (sorted). Every
    event with an item that has a vector adds that vector with weight
    ``event_weight * exp(-ln 2 * age_days / half_life_days)``: event weights product_view 1,
    add_to_cart 3, purchase 5, any other type 1 (``event_weights`` overrides them), and ``age`` is
    measured back from ``as_of`` (default: the store's last event; later events are left out).
    The mean is not re-normalised, so its length says how focused the user's interests are.

    ``users`` are the store's (pseudonymized) user ids; None means every user. Users with no
    engaged item that has a vector are left out of ``user_ids``. Item vectors are computed first
    where missing (see ``refresh_item_vectors``); ``encoder`` picks whose vectors to average.
    """
    if isinstance(half_life_days, bool) or not isinstance(half_life_days, Real) or not half_life_days > 0:
        raise JourneymapError(f"half_life_days must be a positive number of days, like 30. Got {half_life_days!r}.")
    weights = {**EVENT_WEIGHTS, **(event_weights or {})}
    if any(not np.isfinite(w) or w < 0 for w in weights.values()):
        raise JourneymapError(f"Event weights must be zero or positive numbers. Got {weights}.")
    enc = resolve_encoder(encoder)
    vectors = load_item_vectors(store_path, enc)
    wanted = None if users is None else sorted({str(u) for u in users})
    if not len(vectors) or wanted == []:
        return [], np.zeros((0, enc.dim), dtype=np.float32)

    case = " ".join(f"WHEN {_lit(t)} THEN {float(w)!r}" for t, w in weights.items())
    with _open(store_path, write=False) as st:
        reference = st.con.execute(
            "SELECT coalesce(CAST(? AS TIMESTAMP), (SELECT max(ts) FROM events))", [as_of]).fetchall()[0][0]
        if reference is None:
            return [], np.zeros((0, enc.dim), dtype=np.float32)
        rows = _weights(st.con, vectors.item_ids, case, half_life_days, reference, wanted)
    return _weighted_means(rows, vectors.matrix)


def _weights(con: Any, item_ids: list[str], case: str, half_life_days: float, reference: datetime,
             wanted: list[str] | None) -> Any:
    """(user_id, row, weight) as Arrow: one row per user and item with a vector, weights summed."""
    import pyarrow as pa

    index = pa.table({"item_id": item_ids, "row": np.arange(len(item_ids), dtype=np.int64)})
    con.register("__item_rows", index)
    if wanted is not None:
        con.register("__users", pa.table({"user_id": wanted}))
    only = "AND e.user_id IN (SELECT user_id FROM __users)" if wanted is not None else ""
    try:
        return con.sql(f"""
            SELECT e.user_id, r.row,
                   sum(CASE e.event_type {case} ELSE {OTHER_EVENT_WEIGHT!r} END
                       * exp(-ln(2) * epoch($asof - e.ts) / 86400.0 / {float(half_life_days)!r})) AS weight
            FROM events e JOIN __item_rows r ON r.item_id = e.item_id
            WHERE e.ts <= $asof {only}
            GROUP BY ALL
        """, params={"asof": reference}).to_arrow_table()
    finally:
        con.unregister("__item_rows")
        if wanted is not None:
            con.unregister("__users")


def _weighted_means(rows: Any, matrix: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Rows of (user, item row, weight) -> sorted user ids and their weighted mean vectors."""
    from scipy import sparse

    if not rows.num_rows:
        return [], np.zeros((0, matrix.shape[1]), dtype=np.float32)
    codes = rows.column("user_id").combine_chunks().dictionary_encode()
    names = codes.dictionary.to_pylist()
    order = np.argsort(np.array(names, dtype=object))  # users sorted, whatever order DuckDB grouped them
    position = np.empty(len(names), dtype=np.int64)
    position[order] = np.arange(len(names))
    weights = sparse.csr_matrix(
        (rows.column("weight").to_numpy(), (position[codes.indices.to_numpy()], rows.column("row").to_numpy())),
        shape=(len(names), len(matrix)))  # (users, items)
    totals = np.asarray(weights.sum(axis=1)).ravel()
    keep = totals > 0  # a user whose events all weigh zero has no mean
    means = (weights[keep] @ matrix.astype(np.float64)) / totals[keep, None]  # (kept users, dim)
    users = [names[i] for i in order]
    return [u for u, k in zip(users, keep) if k], means.astype(np.float32)
