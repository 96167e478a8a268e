"""Map a raw batch onto canonical events and check every row, in one DuckDB query.

Every format gets the same rules and the same messages: a row either becomes a typed canonical
event with its deterministic id and pseudonymized user, or a quarantine entry naming the field,
what was expected and what arrived. User ids are pseudonymized inside the query, so raw ids
exist only in the batch's memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from journeymap.config import Settings
from journeymap.events.adapters._base import Adapter, lit, q
from journeymap.events.readers import LINE
from journeymap.privacy.pseudonymize import Pseudonymizer

PSEUDO_UDF = "__jm_pseudonymize"
# Column the writer adds to each batch: the pseudonym of the row's user id, computed once per
# distinct user in Python (far cheaper than a UDF call per 2,048-row vector).
PSEUDONYM = "__pseudonym"
MAX_SHOWN = 60  # characters of a bad value repeated in its reason

# Output columns of a good row, in the events table's order (without ingest_id).
EVENT_COLUMNS = (
    "event_id", "user_id", "ts", "event_type", "session_id", "item_id", "category", "brand",
    "price", "quantity", "channel", "device", "query", "text", "rating", "properties",
)
TEXT_FIELDS = ("session_id", "item_id", "category", "brand", "channel", "device", "query", "text")


def register_pseudonymizer(con: duckdb.DuckDBPyConnection, pseudonymizer: Pseudonymizer) -> None:
    """Make ``__jm_pseudonymize(VARCHAR)`` available to the validation query."""

    def udf(values: pa.Array) -> pa.Array:
        return pseudonymizer.array(values)

    con.create_function(PSEUDO_UDF, udf, ["VARCHAR"], "VARCHAR", type="arrow",
                        null_handling="special", side_effects=False)


def user_sql(adapter: Adapter, columns: Sequence[str]) -> str:
    """The query giving each row's raw user id (before pseudonymization), in batch order."""
    return f"SELECT CAST({adapter.fields(columns).get('user_id', 'NULL')} AS VARCHAR) FROM __batch"


def event_map_table(adapter: Adapter, settings: Settings) -> pa.Table:
    """Raw event name -> canonical type, for the format's names, config aliases and canonical names."""
    vocabulary = settings.vocabulary
    pairs: dict[str, str] = {}
    for name in vocabulary.event_types:
        pairs[name] = name
    for raw, target in vocabulary.aliases.items():
        canonical = vocabulary.canonical(target)
        if canonical:
            pairs[raw] = canonical
    for raw, target in adapter.event_map.items():
        canonical = vocabulary.canonical(target)
        if canonical:
            pairs[raw] = canonical
    return pa.table({"raw": list(pairs), "canonical": list(pairs.values())})


def _shown(expr: str) -> str:
    """A bad value as it appears in a reason: quoted and cut to MAX_SHOWN characters."""
    return (f"'''' || CASE WHEN length({expr}) > {MAX_SHOWN} THEN left({expr}, {MAX_SHOWN}) || '...' "
            f"ELSE {expr} END || ''''")


def _problem(field: str, reason_sql: str) -> str:
    return f"struct_pack(field := {lit(field)}, reason := {reason_sql})"


def validation_sql(
    adapter: Adapter,
    columns: Sequence[str],
    settings: Settings,
    timezone: str | None = None,
) -> str:
    """The query over ``__batch`` (raw text columns + ``__line``) joined with ``__event_map``."""
    limits = settings.limits
    raw_columns = [c for c in columns if not c.startswith("__")]
    fields = adapter.fields(columns)
    get = lambda name: fields.get(name, "NULL")  # noqa: E731

    ts = get("ts")
    if timezone and adapter.naive_ts:
        ts = f"CAST(timezone('UTC', timezone({lit(timezone)}, {ts})) AS TIMESTAMP)"

    # The first raw column over the size limit, and its size.
    oversize = " ".join(
        f"WHEN strlen({q(c)}) > {limits.max_field_bytes} THEN {lit(c)}" for c in raw_columns
    )
    oversize_len = " ".join(
        f"WHEN strlen({q(c)}) > {limits.max_field_bytes} THEN strlen({q(c)})" for c in raw_columns
    )
    checks = adapter.checks(columns)
    check_cols = ", ".join(
        f"({cond}) AS __chk{i}, ({reason}) AS __why{i}" for i, (_, cond, reason) in enumerate(checks)
    )

    known = sorted(adapter.event_map) or sorted(settings.vocabulary.event_types)
    expected_types = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    map_hint = (
        "map it with --event-map NAME=CANONICAL"
        if adapter.name == "generic"
        else "or map it under [event_types.aliases] in journeymap.toml"
    )
    earliest = limits.earliest.strftime("%Y-%m-%d %H:%M:%S")
    latest = limits.latest().strftime("%Y-%m-%d %H:%M:%S")

    problems = [
        *(f"WHEN __chk{i} THEN {_problem(f, f'__why{i}')}" for i, (f, _, _) in enumerate(checks)),
        f"WHEN __big_col IS NOT NULL THEN struct_pack(field := __big_col, reason := "
        f"'field ''' || __big_col || ''' is ' || __big_len || ' bytes, over the limit of "
        f"{limits.max_field_bytes} bytes')",
        f"WHEN __user IS NULL THEN {_problem('user_id', lit('user id is missing'))}",
        f"WHEN __ts_raw IS NULL OR trim(__ts_raw) = '' THEN {_problem('ts', lit('timestamp is missing'))}",
        f"WHEN __ts IS NULL THEN {_problem('ts', lit('timestamp ') + ' || ' + _shown('__ts_raw') + ' || ' + lit(' is not ' + adapter.ts_expected))}",
        f"WHEN __ts < TIMESTAMP '{earliest}' OR __ts > TIMESTAMP '{latest}' THEN "
        + _problem('ts', f"'timestamp ' || strftime(__ts, '%Y-%m-%d %H:%M:%S') || "
                         f"' is out of range; expected {earliest} to {latest}'"),
        f"WHEN __et IS NULL OR __et = '' THEN {_problem('event_type', lit('event type is missing'))}",
        "WHEN __event_type IS NULL THEN "
        + _problem('event_type', f"'unknown event type ' || {_shown('__et')} || "
                                 + lit(f"; expected one of {expected_types}, {map_hint}")),
        *_number_checks("price", "__price_raw", "__price", 0, limits.max_price),
        *_number_checks("quantity", "__qty_raw", "__qty_d", 0, limits.max_quantity, whole=True),
        *_number_checks("rating", "__rating_raw", "__rating", limits.rating_min, limits.rating_max),
    ]
    user_cols = [c for c in raw_columns + ["__user_id"] if c in adapter.user_columns]
    # Raw columns ride along under neutral names; only quarantined rows turn them into JSON.
    raw_carry = ", ".join(f"{q(c)} AS __raw{i}" for i, c in enumerate(raw_columns)) or "NULL AS __raw_none"
    content = ", ".join(
        f"{q(c)} := " + (f"{PSEUDO_UDF}(__raw{i})" if c in user_cols else f"__raw{i}")
        for i, c in enumerate(raw_columns)
    )
    content_json = f"to_json(struct_pack({content}))" if content else "NULL"
    null = "chr(0)"
    sep = "chr(31)"
    id_parts = ", ".join([
        "__user_id", "strftime(__ts, '%Y-%m-%d %H:%M:%S.%f')", "__event_type",
        *(f"coalesce({f}, {null})" for f in TEXT_FIELDS),
        f"coalesce(CAST(__price AS VARCHAR), {null})", f"coalesce(CAST(__qty AS VARCHAR), {null})",
        f"coalesce(CAST(__rating AS VARCHAR), {null})", f"coalesce(__props, {null})",
    ])
    text_selects = ",\n            ".join(f"CAST({get(f)} AS VARCHAR) AS {f}" for f in TEXT_FIELDS)
    return f"""
    WITH f AS (
        SELECT {q(LINE)} AS __line,
            CAST({get('user_id')} AS VARCHAR) AS __user,
            {PSEUDONYM} AS __pseudonym,
            {ts} AS __ts,
            CAST({get('ts_raw')} AS VARCHAR) AS __ts_raw,
            CAST({get('event_type')} AS VARCHAR) AS __et,
            {text_selects},
            CAST({get('price')} AS VARCHAR) AS __price_raw,
            CAST({get('quantity')} AS VARCHAR) AS __qty_raw,
            CAST({get('rating')} AS VARCHAR) AS __rating_raw,
            CAST({get('item_name')} AS VARCHAR) AS item_name,
            CAST({get('properties')} AS VARCHAR) AS __props,
            CASE {oversize or 'WHEN false THEN NULL'} END AS __big_col,
            CASE {oversize_len or 'WHEN false THEN NULL'} END AS __big_len
            {', ' + check_cols if check_cols else ''},
            {raw_carry}
        FROM __batch
    ), t AS (
        SELECT f.*, m.canonical AS __event_type,
            TRY_CAST(__price_raw AS DOUBLE) AS __price,
            TRY_CAST(__qty_raw AS DOUBLE) AS __qty_d,
            TRY_CAST(__rating_raw AS DOUBLE) AS __rating
        FROM f LEFT JOIN __event_map m ON m.raw = f.__et
    ), v AS (
        SELECT t.*,
            CASE {' '.join(problems)} END AS __problem,
            TRY_CAST(__qty_d AS INTEGER) AS __qty
        FROM t
    ), p AS (
        SELECT v.*, CASE WHEN __problem IS NULL THEN __pseudonym END AS __user_id FROM v
    )
    SELECT
        CASE WHEN __problem IS NULL THEN md5(concat_ws({sep}, {id_parts}))::UUID END AS event_id,
        __user_id AS user_id, __ts AS ts, __event_type AS event_type,
        {', '.join(TEXT_FIELDS)},
        __price AS price, __qty AS quantity, __rating AS rating, __props AS properties,
        item_name, __line AS line,
        __problem.field AS problem_field, __problem.reason AS problem_reason,
        CASE WHEN __problem IS NOT NULL THEN {content_json} END AS content
    FROM p
    """


def _number_checks(name: str, raw: str, value: str, low: float, high: float, whole: bool = False) -> list[str]:
    """Checks of a numeric field: parses, is finite, (is whole), is not negative, is in range."""
    said = f"{lit(name + ' ')} || {_shown(raw)} || "
    checks = [
        f"WHEN {raw} IS NOT NULL AND {value} IS NULL THEN {_problem(name, said + lit(' is not a number'))}",
        f"WHEN {raw} IS NOT NULL AND NOT isfinite({value}) THEN "
        f"{_problem(name, said + lit(' is not a finite number'))}",
    ]
    if whole:
        checks.append(f"WHEN {value} <> floor({value}) THEN {_problem(name, said + lit(' is not a whole number'))}")
    if low == 0:
        checks.append(f"WHEN {value} < 0 THEN {_problem(name, said + lit(' is negative'))}")
    checks.append(
        f"WHEN {value} < {low} OR {value} > {high} THEN "
        + _problem(name, said + lit(f" is out of range; expected {_num(low)} to {_num(high)}")))
    return checks


def _num(value: float) -> str:
    return f"{value:g}" if value < 1e6 else f"{value:,.0f}"
