"""The embedded DuckDB event store."""

from journeymap.store._store import SCHEMA_VERSION, Store, StoreInfo, read_only_query

__all__ = ["SCHEMA_VERSION", "Store", "StoreInfo", "read_only_query"]
