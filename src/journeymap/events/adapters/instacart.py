"""Instacart 2017: orders.csv + order_products__*.csv (+ products, aisles, departments).

Each order line is a purchase event. Instacart publishes no dates, only each user's order
sequence with day of week, hour and days since the prior order, so event times are rebuilt: a
user's first order falls in the week of 2017-01-01 on its order_dow at its hour, later orders add
the days since the prior one. Order lines whose order is missing from orders.csv are quarantined.
The pre-joined layout (order and line columns in one file) is read the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from journeymap.events.adapters._base import Adapter, Role, blank_to_null, json_object, q
from journeymap.events.readers import LINE, Dialect, RawBatch, read_batches
from journeymap.exceptions import FormatError

ORDER_COLS = frozenset({"order_id", "user_id", "order_number", "order_dow", "order_hour_of_day",
                        "days_since_prior_order"})
LINE_COLS = frozenset({"order_id", "product_id", "add_to_cart_order", "reordered"})
ANCHOR = "2017-01-01"  # a Sunday; Instacart's order_dow 0 is read as Sunday

JOINED = Role("joined", ORDER_COLS | LINE_COLS)
ORDERS = Role("orders", ORDER_COLS, events=False)
LINES = Role("order_products", LINE_COLS)
PRODUCTS = Role("products", frozenset({"product_id", "product_name", "aisle_id", "department_id"}), events=False)
AISLES = Role("aisles", frozenset({"aisle_id", "aisle"}), events=False)
DEPARTMENTS = Role("departments", frozenset({"department_id", "department"}), events=False)

# Columns the join adds to each order line (text, like every raw column).
ADDED = ("__user_id", "__order_ts", "__order_number", "__order_dow", "__order_hour",
         "__days_since_prior", "__eval_set", "__order_found", "__product_name", "__aisle", "__department")


class Instacart(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="instacart",
            title="Instacart 2017 orders + order_products (+ products, aisles, departments)",
            roles=(JOINED, ORDERS, LINES, PRODUCTS, AISLES, DEPARTMENTS),
            user_columns=("user_id", "__user_id"),
            event_map={"purchase": "purchase"},
            ts_expected="an order in orders.csv with order_number, order_dow and hour",
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        return {
            "user_id": "__user_id",
            "ts": "TRY_CAST(__order_ts AS TIMESTAMP)",
            "ts_raw": "__order_ts",
            "event_type": "'purchase'",
            "session_id": blank_to_null(q("order_id")),
            "item_id": blank_to_null(q("product_id")),
            "category": "__aisle",
            "quantity": "'1'",
            "item_name": "__product_name",
            "properties": json_object({
                "order_id": blank_to_null(q("order_id")),
                "order_number": "__order_number",
                "add_to_cart_order": blank_to_null(q("add_to_cart_order")),
                "reordered": blank_to_null(q("reordered")),
                "order_dow": "__order_dow",
                "order_hour_of_day": "__order_hour",
                "days_since_prior_order": "__days_since_prior",
                "eval_set": "__eval_set",
                "department": "__department",
            }),
        }

    def checks(self, columns: Sequence[str]) -> list[tuple[str, str, str]]:
        return [(
            "order_id",
            "__order_found IS NULL",
            "'order ' || coalesce(" + q("order_id") + ", '') || ' is not in orders.csv, so its user and time are unknown'",
        )]

    def batches(self, files: Sequence[tuple[Path, Role, Dialect]]) -> Iterator[RawBatch]:
        by_role: dict[str, list[tuple[Path, Dialect]]] = {}
        for path, role, dialect in files:
            by_role.setdefault(role.name, []).append((path, dialect))
        if "order_products" in by_role and "orders" not in by_role:
            raise FormatError(
                "Instacart order_products files need orders.csv for their users and times; "
                "pass orders.csv too (and products.csv, aisles.csv, departments.csv for names)."
            )
        con = duckdb.connect()
        try:
            _load_lookups(con, by_role)
            for role in ("order_products", "joined"):
                for path, dialect in by_role.get(role, []):
                    if role == "joined":
                        _load_orders(con, [(path, dialect)], replace=True)
                    for batch in read_batches(path, dialect):
                        yield RawBatch(batch.path, _join(con, batch.table), batch.rejects)
        finally:
            con.close()


def _read(path: Path, dialect: Dialect) -> str:
    return (f"read_csv({_lit(str(path))}, delim={_lit(dialect.delimiter)}, header=true, "
            "all_varchar=true, ignore_errors=true)")


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _load_orders(con: duckdb.DuckDBPyConnection, files: list[tuple[Path, Dialect]], replace: bool = False) -> None:
    union = " UNION ALL ".join(
        f"SELECT order_id, user_id, order_number, order_dow, order_hour_of_day, days_since_prior_order, "
        f"{'eval_set' if 'eval_set' in d.columns else 'NULL'} AS eval_set FROM {_read(p, d)}"
        for p, d in files
    )
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
    # Cumulative days since each user's first order place the orders on a calendar.
    con.execute(f"""
        {verb} orders AS
        WITH o AS (
            SELECT DISTINCT trim(order_id) AS order_id, trim(user_id) AS user_id,
                   TRY_CAST(order_number AS INTEGER) AS n, TRY_CAST(order_dow AS INTEGER) AS dow,
                   TRY_CAST(order_hour_of_day AS INTEGER) AS hour,
                   TRY_CAST(TRY_CAST(days_since_prior_order AS DOUBLE) AS INTEGER) AS gap,
                   order_number, order_dow, order_hour_of_day, days_since_prior_order, eval_set
            FROM ({union})
        ), placed AS (
            SELECT *, first(dow) OVER w AS first_dow,
                   sum(CASE WHEN n > 1 THEN coalesce(gap, 0) ELSE 0 END) OVER w AS days
            FROM o WINDOW w AS (PARTITION BY user_id ORDER BY n ROWS UNBOUNDED PRECEDING)
        )
        SELECT order_id, user_id AS __user_id,
               strftime(DATE '{ANCHOR}' + to_days(CAST(coalesce(first_dow, 0) + days AS INTEGER)) + to_hours(coalesce(hour, 0)),
                        '%Y-%m-%d %H:%M:%S') AS __order_ts,
               order_number AS __order_number, order_dow AS __order_dow,
               order_hour_of_day AS __order_hour,
               nullif(days_since_prior_order, '') AS __days_since_prior,
               nullif(eval_set, '') AS __eval_set, '1' AS __order_found
        FROM placed WHERE n IS NOT NULL AND dow IS NOT NULL AND hour IS NOT NULL
    """)


def _load_lookups(con: duckdb.DuckDBPyConnection, by_role: dict[str, list[tuple[Path, Dialect]]]) -> None:
    if "orders" in by_role:
        _load_orders(con, by_role["orders"])
    tables = {
        "products": ("product_id", "product_name", "aisle_id", "department_id"),
        "aisles": ("aisle_id", "aisle"),
        "departments": ("department_id", "department"),
    }
    for role, cols in tables.items():
        select = ", ".join(f"trim({c}) AS {c}" for c in cols)
        if role in by_role:
            union = " UNION ALL ".join(f"SELECT {select} FROM {_read(p, d)}" for p, d in by_role[role])
            con.execute(f"CREATE TABLE {role} AS SELECT DISTINCT ON ({cols[0]}) * FROM ({union})")
        else:
            con.execute(f"CREATE TABLE {role} ({', '.join(c + ' VARCHAR' for c in cols)})")


def _join(con: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.Table:
    has_orders = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'orders'").fetchall()[0][0]
    if not has_orders:
        con.execute("CREATE TABLE orders (order_id VARCHAR, " + ", ".join(f"{c} VARCHAR" for c in ADDED[:8]) + ")")
    con.register("__batch", table)
    try:
        own = ", ".join("b." + q(c) for c in table.column_names)
        return con.sql(f"""
            SELECT {own}, o.__user_id, o.__order_ts, o.__order_number, o.__order_dow, o.__order_hour,
                   o.__days_since_prior, o.__eval_set, o.__order_found,
                   p.product_name AS __product_name, a.aisle AS __aisle, d.department AS __department
            FROM __batch b
            LEFT JOIN orders o ON o.order_id = trim(b.order_id)
            LEFT JOIN products p ON p.product_id = trim(b.product_id)
            LEFT JOIN aisles a ON a.aisle_id = p.aisle_id
            LEFT JOIN departments d ON d.department_id = p.department_id
            ORDER BY b.{q(LINE)}
        """).to_arrow_table()
    finally:
        con.unregister("__batch")
