"""REES46 "eCommerce behavior data from multi category store" (Kaggle), and the simulator's log.

Columns: event_time ("2019-10-01 00:00:00 UTC"), event_type (view/cart/remove_from_cart/
purchase), product_id, category_id, category_code, brand, price, user_id, user_session. The
storefront simulator writes the same layout plus optional canonical columns (quantity, channel,
device, query, text, rating, product_name, properties) and canonical event types beyond REES46's.
"""

from __future__ import annotations

from collections.abc import Sequence

from journeymap.events.adapters._base import (
    Adapter, Role, blank_to_null, json_object, merge_json, q, strptime_any,
)

EXTRA = ("quantity", "channel", "device", "query", "text", "rating")


class Rees46(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="rees46",
            title="REES46 multi-category store (Kaggle eCommerce behavior data)",
            roles=(Role("events", frozenset({"event_time", "event_type", "product_id", "user_id"})),),
            user_columns=("user_id",),
            event_map={"view": "product_view", "cart": "add_to_cart",
                       "remove_from_cart": "remove_from_cart", "purchase": "purchase"},
            ts_expected="'YYYY-MM-DD HH:MM:SS UTC'",
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        has = set(columns)

        def col(name: str) -> str:
            return blank_to_null(q(name)) if name in has else "NULL"

        out = {
            "user_id": col("user_id"),
            "ts": strptime_any(q("event_time"), [
                "%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f",
            ]),
            "ts_raw": q("event_time"),
            "event_type": f"trim({q('event_type')})",
            "session_id": col("user_session"),
            "item_id": col("product_id"),
            "category": f"coalesce({col('category_code')}, {col('category_id')})",
            "brand": col("brand"),
            "price": col("price"),
            "item_name": col("product_name"),
        }
        for name in EXTRA:
            out[name] = col(name)
        props = json_object({"category_id": col("category_id")} if "category_id" in has else {})
        if "properties" in has:
            props = merge_json(col("properties"), props)
        out["properties"] = props
        return out

    def checks(self, columns: Sequence[str]) -> list[tuple[str, str, str]]:
        if "properties" not in columns:
            return []
        raw = blank_to_null(q("properties"))
        return [(
            "properties",
            f"{raw} IS NOT NULL AND (NOT coalesce(json_valid({raw}), false) "
            f"OR json_type(TRY_CAST({raw} AS JSON)) <> 'OBJECT')",
            "'properties is not a JSON object'",
        )]
