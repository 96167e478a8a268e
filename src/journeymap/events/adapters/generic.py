"""Any CSV, Parquet or JSON-lines file, driven by a column mapping.

The mapping names the source column of each canonical field (a value starting with '=' is a
constant, e.g. ``event_type = "=purchase"`` for an order-lines file), how to read timestamps, and
raw event names -> canonical types. Unmapped columns are kept in ``properties``. With no mapping,
columns already named like the canonical fields (user_id, ts, event_type, ...) map to themselves.

A TOML mapping file::

    [columns]
    user_id = "customer"
    ts = "time"
    event_type = "action"
    item_id = "sku"

    [event_types]
    click = "product_view"

    [timestamps]
    format = "%d/%m/%Y %H:%M"   # or: unit = "s" | "ms" | "us"; default: ISO-8601
    timezone = "Europe/London"  # for times without a zone; default UTC
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from journeymap.events.adapters._base import (
    FIELDS, Adapter, Role, blank_to_null, epoch, iso_timestamp, json_object, lit, merge_json, q,
    strptime_any,
)
from journeymap.exceptions import ConfigError, FormatError

MAPPABLE = tuple(f for f in FIELDS if f not in ("ts_raw",))
REQUIRED = ("user_id", "ts", "event_type")


@dataclass
class Mapping_:
    """A column mapping for :class:`Generic` (see the module docstring for the TOML form)."""

    columns: dict[str, str] = field(default_factory=dict)
    event_types: dict[str, str] = field(default_factory=dict)
    ts_format: str | None = None
    ts_unit: str | None = None
    timezone: str | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> Mapping_:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Mapping file {path} does not exist.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Mapping file {path} is not valid TOML: {exc}.") from None
        unknown = set(data) - {"columns", "event_types", "timestamps"}
        if unknown:
            raise ConfigError(
                f"Mapping file {path} has unknown table(s) {', '.join(sorted(unknown))}; "
                "expected [columns], [event_types] and [timestamps]."
            )
        ts = data.get("timestamps", {})
        return cls(
            columns={str(k): str(v) for k, v in data.get("columns", {}).items()},
            event_types={str(k): str(v) for k, v in data.get("event_types", {}).items()},
            ts_format=ts.get("format"), ts_unit=ts.get("unit"), timezone=ts.get("timezone"),
        )

    def merged(self, other: Mapping_) -> Mapping_:
        """This mapping with ``other``'s entries taking precedence (CLI options over a file)."""
        return Mapping_(
            columns={**self.columns, **other.columns},
            event_types={**self.event_types, **other.event_types},
            ts_format=other.ts_format or self.ts_format,
            ts_unit=other.ts_unit or self.ts_unit,
            timezone=other.timezone or self.timezone,
        )

    def check(self) -> None:
        bad = set(self.columns) - set(MAPPABLE)
        if bad:
            raise ConfigError(
                f"Cannot map unknown field(s) {', '.join(sorted(bad))}; "
                f"canonical fields are {', '.join(MAPPABLE)}."
            )
        if self.ts_unit and self.ts_unit not in ("s", "ms", "us"):
            raise ConfigError(f"Timestamp unit must be s, ms or us. Got '{self.ts_unit}'.")
        if self.ts_unit and self.ts_format:
            raise ConfigError("Give a timestamp format or a unit, not both.")


class Generic(Adapter):
    def __init__(self, mapping: Mapping_ | None = None) -> None:
        mapping = mapping or Mapping_()
        mapping.check()
        super().__init__(
            name="generic",
            title="Any CSV / Parquet / JSON-lines file with a column mapping",
            roles=(Role("events", frozenset(REQUIRED)),),
            event_map=dict(mapping.event_types),
            ts_expected=(
                f"the format {mapping.ts_format}" if mapping.ts_format
                else f"Unix time in {mapping.ts_unit}" if mapping.ts_unit
                else "an ISO-8601 timestamp like 2024-01-31 13:45:00"
            ),
            naive_ts=not mapping.ts_unit,
        )
        self.mapping = mapping
        self.user_columns = (self._source("user_id"),)

    def _source(self, name: str) -> str:
        return self.mapping.columns.get(name, name)

    def sniff(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Role | None:
        # Only files already in canonical layout are recognised without a mapping.
        return super().sniff(header, rows) if not self.mapping.columns else None

    def resolve(self, columns: Sequence[str], path: Path) -> dict[str, str]:
        """Canonical field -> source column (or '=constant') for this file; errors name what is missing."""
        present = set(columns)
        resolved: dict[str, str] = {}
        for name in MAPPABLE:
            source = self._source(name)
            if source.startswith("=") or source in present:
                resolved[name] = source
            elif name in self.mapping.columns:
                raise FormatError(
                    f"{path} has no column '{source}' (mapped to {name}); its columns are "
                    f"{', '.join(columns)}."
                )
        missing = [n for n in REQUIRED if n not in resolved]
        if missing:
            raise FormatError(
                f"{path} needs a column for {', '.join(missing)}; map it with "
                + " ".join(f"--map {n}=COLUMN" for n in missing)
                + f". Its columns are {', '.join(columns)}."
            )
        return resolved

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        resolved = self.resolve(columns, Path("input"))

        def expr(name: str) -> str:
            source = resolved.get(name)
            if source is None:
                return "NULL"
            if source.startswith("="):
                return lit(source[1:])
            return blank_to_null(q(source))

        ts = q(resolved["ts"]) if not resolved["ts"].startswith("=") else lit(resolved["ts"][1:])
        if self.mapping.ts_unit:
            ts_expr = epoch(ts, self.mapping.ts_unit)
        elif self.mapping.ts_format:
            ts_expr = strptime_any(ts, [self.mapping.ts_format])
        else:
            ts_expr = iso_timestamp(ts)
        out = {name: expr(name) for name in MAPPABLE if name not in ("ts", "properties")}
        out["event_type"] = f"trim({out['event_type']})"
        out["ts"] = ts_expr
        out["ts_raw"] = ts
        used = {s for s in resolved.values() if not s.startswith("=")}
        rest = [c for c in columns if c not in used and not c.startswith("__")]
        extra = {c: blank_to_null(q(c)) for c in rest}
        props = json_object(extra)
        if "properties" in resolved:
            props = merge_json(expr("properties"), props)
        out["properties"] = props
        return out

    def checks(self, columns: Sequence[str]) -> list[tuple[str, str, str]]:
        source = self.mapping.columns.get("properties", "properties")
        if source not in columns:
            return []
        raw = blank_to_null(q(source))
        return [(
            "properties",
            f"{raw} IS NOT NULL AND (NOT coalesce(json_valid({raw}), false) "
            f"OR json_type(TRY_CAST({raw} AS JSON)) <> 'OBJECT')",
            "'properties is not a JSON object'",
        )]


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """Parse CLI 'a=b' options into a dict, with an error that shows the expected form."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"The {what} option takes NAME=VALUE, like user_id=customer. Got '{pair}'.")
        out[key.strip()] = value.strip()
    return out


def mapping_from_options(
    mapping_file: str | Path | None,
    columns: Mapping[str, str] | None = None,
    event_types: Mapping[str, str] | None = None,
    ts_format: str | None = None,
    ts_unit: str | None = None,
    timezone: str | None = None,
) -> Mapping_ | None:
    """Build a mapping from a TOML file and/or options; None when nothing was given."""
    given = Mapping_(dict(columns or {}), dict(event_types or {}), ts_format, ts_unit, timezone)
    if mapping_file:
        return Mapping_.from_toml(mapping_file).merged(given)
    if given.columns or given.event_types or ts_format or ts_unit or timezone:
        return given
    return None
