"""The adapter contract: how one source format's columns become canonical event fields.

An adapter is data plus SQL: which columns identify the format, and for each canonical field a
DuckDB expression over the raw text columns. Validation, pseudonymization and storage are shared
(``journeymap.events.validate``), so every format gets the same rules and the same messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from journeymap.events.readers import Dialect, RawBatch, read_batches

# Canonical fields an adapter can fill. ``ts`` must be a TIMESTAMP expression (UTC) that is NULL
# when the text does not parse; the rest are text expressions that validation parses and checks.
FIELDS = (
    "user_id", "ts", "ts_raw", "event_type", "session_id", "item_id", "category", "brand", "price",
    "quantity", "channel", "device", "query", "text", "rating", "item_name", "properties",
)


def q(name: str) -> str:
    """Quote a raw column name for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def blank_to_null(expr: str) -> str:
    return f"nullif(trim({expr}), '')"


def epoch(expr: str, unit: str) -> str:
    """A TIMESTAMP from Unix time text in seconds, ms or us; NULL when not a number or absurd."""
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
    micros = f"(TRY_CAST(trim({expr}) AS DOUBLE) * {scale})"
    # ~ year 1677 .. 2262 is where microsecond timestamps fit; validation narrows further.
    return (
        f"CASE WHEN {micros} BETWEEN -9.2e18 AND 9.2e18 "
        f"THEN make_timestamp(CAST(round({micros}) AS BIGINT)) END"
    )


def strptime_any(expr: str, formats: Sequence[str]) -> str:
    """A TIMESTAMP from text in any of the strftime formats; NULL when none fits."""
    listed = ", ".join(lit(f) for f in formats)
    return f"try_strptime(trim({expr}), [{listed}])::TIMESTAMP"


def iso_timestamp(expr: str) -> str:
    """A UTC TIMESTAMP from ISO-8601-like text, with or without a zone offset or ' UTC'."""
    text = f"regexp_replace(trim({expr}), '\\s*(UTC|Z)$', '')"
    return (
        f"coalesce(TRY_CAST({text} AS TIMESTAMP), "
        f"TRY_CAST(TRY_CAST(trim({expr}) AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS TIMESTAMP))"
    )


def json_object(pairs: Mapping[str, str]) -> str:
    """A JSON object text from key -> text expression; NULL values and empty objects are dropped."""
    if not pairs:
        return "NULL"
    if len(pairs) == 1:
        # One key: no nulls to strip, so skip the (slow) merge patch.
        (key, value), = pairs.items()
        return f"CASE WHEN ({value}) IS NOT NULL THEN CAST(json_object({lit(key)}, {value}) AS VARCHAR) END"
    parts = ", ".join(f"{lit(k)}, {v}" for k, v in pairs.items())
    obj = f"json_object({parts})"
    # json_object keeps nulls; strip them so the stored object holds only what the row had.
    return f"nullif(CAST(json_merge_patch('{{}}', {obj}) AS VARCHAR), '{{}}')"


def merge_json(given: str, derived: str) -> str:
    """A source's own JSON properties text merged with derived ones; a check rejects non-objects."""
    both = (f"nullif(CAST(json_merge_patch(TRY_CAST({given} AS JSON), TRY_CAST({derived} AS JSON)) "
            f"AS VARCHAR), '{{}}')")
    return f"CASE WHEN {given} IS NULL THEN {derived} WHEN {derived} IS NULL THEN {given} ELSE {both} END"


@dataclass(frozen=True)
class Role:
    """One kind of file of a format (most formats have one; Instacart has several)."""

    name: str
    required: frozenset[str]  # columns the header must contain
    events: bool = True  # False for lookup files (e.g. Instacart products.csv)
    # Headerless files: the column names, and a test of the first rows' shape.
    columns: tuple[str, ...] = ()
    looks_like: Callable[[Sequence[Sequence[str]]], bool] | None = None

    @property
    def header(self) -> bool:
        return not self.columns


@dataclass
class Adapter:
    """Base class for source formats. Subclasses set the attributes and :meth:`fields`."""

    name: str = ""
    title: str = ""
    roles: tuple[Role, ...] = ()
    # Raw columns holding user ids: pseudonymized wherever a raw row is kept (quarantine).
    user_columns: tuple[str, ...] = ()
    # Raw event names -> canonical types; canonical names are accepted as themselves.
    event_map: Mapping[str, str] = field(default_factory=dict)
    # Said in the error for a timestamp that does not parse.
    ts_expected: str = "a timestamp"
    # True when the source's timestamps carry no zone (local shop time): --timezone applies.
    naive_ts: bool = False

    def sniff(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Role | None:
        """The role of a file with this header, or None when it is not of this format.

        For a headerless CSV, ``header`` is simply its first row.
        """
        names = {h.strip() for h in header}
        for role in self.roles:
            if role.header and role.required <= names:
                return role
            if not role.header and role.looks_like is not None:
                # Judge by the first row: a later malformed row must not hide the format.
                if len(header) == len(role.columns) and role.looks_like([list(header)]):
                    return role
        return None

    def dialect(self, peeked: Dialect, role: Role) -> Dialect:
        """The dialect to read with; headerless roles name their own columns."""
        if role.header or peeked.container != "csv":
            return peeked
        return Dialect("csv", peeked.delimiter, header=False, columns=role.columns)

    def checks(self, columns: Sequence[str]) -> list[tuple[str, str, str]]:
        """Format-specific checks: (field, SQL true when the row is bad, SQL reason text)."""
        return []

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        """Canonical field -> SQL expression over the raw text columns present."""
        raise NotImplementedError

    def batches(self, files: Sequence[tuple[Path, Role, Dialect]]) -> Iterator[RawBatch]:
        """Raw batches of the event files; formats that join lookup files override this."""
        for path, role, dialect in files:
            if role.events:
                yield from read_batches(path, dialect)

    def describe_columns(self) -> str:
        return ", ".join(sorted(self.roles[0].required)) if self.roles else ""
