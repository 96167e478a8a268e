"""A flattened Google Analytics 4 export (BigQuery events_* tables as CSV, Parquet or JSON lines).

Columns: event_name, event_timestamp (Unix microseconds), user_pseudo_id (or user_id when set),
and optionally items (a JSON array of GA4 item objects), device.category, traffic_source.medium,
ga_session_id, search_term, page_location. An event with several items becomes one canonical
event per item. GA4's automatic events (scroll, user_engagement, ...) are not journey events:
they are quarantined as unknown unless the config maps them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb

from journeymap.events.adapters._base import Adapter, Role, blank_to_null, epoch, json_object, q
from journeymap.events.readers import LINE, Dialect, RawBatch, read_batches

EVENTS = {
    "page_view": "page_view", "search": "search", "view_search_results": "search",
    "view_item_list": "product_list_view", "select_item": "product_list_view",
    "view_item": "product_view", "add_to_wishlist": "add_to_wishlist",
    "add_to_cart": "add_to_cart", "remove_from_cart": "remove_from_cart", "view_cart": "view_cart",
    "begin_checkout": "begin_checkout", "add_shipping_info": "add_shipping_info",
    "add_payment_info": "add_payment_info", "purchase": "purchase", "refund": "refund",
    "view_promotion": "promotion_view", "select_promotion": "promotion_view",
}
# Flattening tools name nested fields with dots or underscores.
ALIASES = {
    "device": ("device.category", "device_category", "device"),
    "channel": ("traffic_source.medium", "traffic_source_medium", "session_medium", "medium"),
    "session_id": ("ga_session_id", "event_params.ga_session_id", "session_id"),
    "query": ("search_term", "event_params.search_term"),
    "page": ("page_location", "event_params.page_location"),
    "transaction_id": ("transaction_id", "ecommerce.transaction_id", "event_params.transaction_id"),
    "country": ("geo.country", "geo_country", "country"),
}
ITEM_FIELDS = ("item_id", "item_name", "item_brand", "item_category", "price", "quantity")


class GA4(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="ga4",
            title="Google Analytics 4 export, flattened (CSV, Parquet or JSON lines)",
            roles=(Role("events", frozenset({"event_name", "event_timestamp", "user_pseudo_id"})),),
            user_columns=("user_pseudo_id", "user_id"),
            event_map=EVENTS,
            ts_expected="Unix microseconds",
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        has = set(columns)

        def first(key: str) -> str:
            names = [n for n in ALIASES[key] if n in has]
            return f"coalesce({', '.join(blank_to_null(q(n)) for n in names)})" if names else "NULL"

        user = blank_to_null(q("user_pseudo_id"))
        if "user_id" in has:
            user = f"coalesce({blank_to_null(q('user_id'))}, {user})"
        return {
            "user_id": user,
            "ts": epoch(q("event_timestamp"), "us"),
            "ts_raw": q("event_timestamp"),
            "event_type": f"trim({q('event_name')})",
            "session_id": first("session_id"),
            "item_id": "__item_id",
            "item_name": "__item_name",
            "brand": "__item_brand",
            "category": "__item_category",
            "price": "__price",
            "quantity": "__quantity",
            "channel": first("channel"),
            "device": first("device"),
            "query": first("query"),
            "properties": json_object({
                "page_location": first("page"),
                "transaction_id": first("transaction_id"),
                "country": first("country"),
                "item_index": "__item_index",
            }),
        }

    def checks(self, columns: Sequence[str]) -> list[tuple[str, str, str]]:
        return [("items", "__items_error", "'items is not a JSON array of item objects'")]

    def batches(self, files: Sequence[tuple[Path, Role, Dialect]]) -> Iterator[RawBatch]:
        con = duckdb.connect()
        try:
            for path, _, dialect in files:
                for batch in read_batches(path, dialect):
                    yield RawBatch(batch.path, _explode(con, batch.table), batch.rejects)
        finally:
            con.close()


def _explode(con: duckdb.DuckDBPyConnection, table) -> object:
    """One row per item of each event (events without items keep one row)."""
    own = ", ".join(q(c) for c in table.column_names)
    items = q("items") if "items" in table.column_names else "NULL::VARCHAR"
    con.register("__batch", table)
    try:
        item = lambda key: f"nullif(trim(json_extract_string(__item, '$.{key}')), '')"  # noqa: E731
        return con.sql(f"""
            WITH parsed AS (
                SELECT *, nullif(trim({items}), '') AS __items_text FROM __batch
            ), listed AS (
                SELECT *,
                       CASE WHEN __items_text IS NULL THEN false
                            WHEN NOT coalesce(json_valid(__items_text), false) THEN true
                            ELSE json_type(__items_text::JSON) <> 'ARRAY' END AS __items_error
                FROM parsed
            ), exploded AS (
                SELECT *, unnest(CASE WHEN NOT __items_error AND json_array_length(__items_text::JSON) > 0
                                      THEN json_extract(__items_text::JSON, '$[*]')
                                      ELSE [NULL::JSON] END) AS __item,
                       generate_subscripts(CASE WHEN NOT __items_error AND json_array_length(__items_text::JSON) > 0
                                                THEN json_extract(__items_text::JSON, '$[*]')
                                                ELSE [NULL::JSON] END, 1) AS __idx
                FROM listed
            )
            SELECT {own}, __items_error,
                   {item('item_id')} AS __item_id, {item('item_name')} AS __item_name,
                   {item('item_brand')} AS __item_brand, {item('item_category')} AS __item_category,
                   {item('price')} AS __price, {item('quantity')} AS __quantity,
                   CASE WHEN __item IS NOT NULL THEN CAST(__idx - 1 AS VARCHAR) END AS __item_index
            FROM exploded ORDER BY {q(LINE)}, __idx
        """).to_arrow_table()
    finally:
        con.unregister("__batch")
