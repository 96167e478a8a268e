"""What every journey analysis shares: filters, sessions, stages, segments and the result contract.

An analysis is SQL over ``journey_events``: the store's events with a session key (the source's
session id, else a new session after an inactivity gap) and a journey stage, after filters.
Results are typed objects with ``to_dict()`` (the CLI's JSON), ``to_frame()`` and ``figure()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from journeymap.config import Settings, parse_duration
from journeymap.exceptions import JourneymapError, StoreError
from journeymap.store import Store
from journeymap.store._store import sessionized_sql

if TYPE_CHECKING:
    from journeymap.journeys._engine import SparkEngine, SparkResult

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


def seconds_between(later: str, earlier: str) -> str:
    """SQL for the seconds from ``earlier`` to ``later``, exact to the microsecond on every engine."""
    return f"((epoch_us({later}) - epoch_us({earlier})) / 1000000.0)"


def lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class Filters:
    """Which events an analysis sees. Every field is optional; all given ones must hold."""

    start: datetime | None = None  # inclusive, UTC
    end: datetime | None = None  # exclusive, UTC
    device: tuple[str, ...] = ()
    channel: tuple[str, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()  # (key, value): properties->>key = value
    segment: str | None = None  # users of a saved segment

    def where(self) -> str:
        """A SQL condition over journey_events columns (``TRUE`` when there is no filter)."""
        parts = []
        if self.start:
            parts.append(f"ts >= TIMESTAMP {lit(self.start.isoformat(sep=' '))}")
        if self.end:
            parts.append(f"ts < TIMESTAMP {lit(self.end.isoformat(sep=' '))}")
        if self.device:
            parts.append(f"device IN ({', '.join(lit(d) for d in self.device)})")
        if self.channel:
            parts.append(f"channel IN ({', '.join(lit(c) for c in self.channel)})")
        for key, value in self.properties:
            parts.append(f"properties->>{lit('$.' + key)} = {lit(value)}")
        if self.segment:
            parts.append(f"user_id IN (SELECT user_id FROM segments WHERE name = {lit(self.segment)})")
        return " AND ".join(parts) or "TRUE"

    @classmethod
    def parse(cls, start: str | None = None, end: str | None = None, device: str | None = None,
              channel: str | None = None, where: list[str] | None = None,
              segment: str | None = None) -> Filters:
        """Build filters from CLI text: dates 'YYYY-MM-DD[ HH:MM]', lists 'a,b', where 'key=value'."""
        def when(text: str | None, what: str) -> datetime | None:
            if not text:
                return None
            try:
                return datetime.fromisoformat(text)
            except ValueError:
                raise JourneymapError(f"The {what} date must look like 2024-01-31 or 2024-01-31 13:00. Got '{text}'.") from None

        props = []
        for pair in where or []:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise JourneymapError(f"A --where filter takes KEY=VALUE on event properties, like page=home. Got '{pair}'.")
            props.append((key.strip(), value.strip()))
        split = lambda text: tuple(v.strip() for v in text.split(",") if v.strip()) if text else ()  # noqa: E731
        return cls(when(start, "--from"), when(end, "--to"), split(device), split(channel), tuple(props), segment)


@dataclass
class Journeys:
    """An open store plus the settings and filters every analysis reads through.

    ``journey_events`` (a SQL subquery) has the events columns plus ``session_key``, ``stage``,
    ``stage_order`` and ``step`` (1-based position of the event in its session).
    """

    store: Store | None
    settings: Settings = field(default_factory=Settings)
    filters: Filters = field(default_factory=Filters)
    gap: timedelta | None = None
    engine: SparkEngine | None = None  # None: the DuckDB store itself

    @classmethod
    def open(cls, path: str | Path, settings: Settings | None = None, filters: Filters | None = None,
             gap: str | timedelta | None = None) -> Journeys:
        settings = settings or Settings.load()
        if isinstance(gap, str):
            gap = parse_duration(gap, "session gap")
        journeys = cls(Store(path, read_only=True), settings, filters or Filters(), gap)
        segment = journeys.filters.segment
        if segment and (not has_segments(journeys.con) or not journeys.con.execute(
                "SELECT count(*) FROM segments WHERE name = ?", [segment]).fetchall()[0][0]):
            journeys.close()
            raise JourneymapError(f"No segment named '{segment}' in {path}; save one with --save-segment on an analysis.")
        return journeys

    @classmethod
    def on_spark(cls, events: Any, spark: Any = None, settings: Settings | None = None,
                 filters: Filters | None = None, gap: str | timedelta | None = None) -> Journeys:
        """The same analyses on Spark: ``events`` is a Spark DataFrame with the store's event
        columns, or the path of Parquet written by ``journeymap export``."""
        from journeymap.journeys._engine import SparkEngine

        filters = filters or Filters()
        if filters.segment:
            raise JourneymapError("Segments live in the DuckDB store; on Spark, filter the events DataFrame "
                                  "to the segment's users before passing it.")
        if isinstance(gap, str):
            gap = parse_duration(gap, "session gap")
        return cls(None, settings or Settings.load(), filters, gap, SparkEngine(events, spark))

    @property
    def engine_name(self) -> str:
        return "spark" if self.engine else "duckdb"

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Journeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self.store is None:
            raise JourneymapError("This analysis runs on the DuckDB store only; open it with Journeys.open(STORE).")
        return self.store.con

    def event_columns(self) -> list[str]:
        if self.engine:
            return list(self.engine.columns)
        return [r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'events' "
            "ORDER BY ordinal_position").fetchall()]

    @property
    def session_gap(self) -> timedelta:
        return self.gap or self.settings.session_gap

    def stage_values(self) -> str:
        """The stage table as a SQL VALUES list (from the settings, so a changed config applies)."""
        from journeymap.events.vocabulary import STAGES

        rows = ", ".join(f"({lit(t)}, {lit(s)}, {STAGES.index(s) + 1})"
                         for t, s in self.settings.vocabulary.stage_of.items())
        return f"(VALUES {rows}) AS st(event_type, stage, stage_order)"

    def events_sql(self, sessions: bool = True) -> str:
        """The journey_events subquery: sessionized, staged, filtered events. ``sessions=False``
        gives only the filtered events columns, for analyses that follow users, not sessions
        (sessionizing is a window over the whole log, the largest cost of a per-user funnel)."""
        if not sessions:
            return f"(SELECT * FROM events WHERE {self.filters.where()})"
        return f"""(
            SELECT k.*, st.stage, st.stage_order,
                   row_number() OVER (PARTITION BY k.session_key ORDER BY k.ts, k.event_id) AS step
            FROM {sessionized_sql(self.session_gap)} k LEFT JOIN {self.stage_values()} USING (event_type)
            WHERE {self.filters.where()}
        )"""

    def query(self, sql: str, sessions: bool = True) -> duckdb.DuckDBPyRelation | SparkResult:
        """Run SQL in which ``journey_events`` names the sessionized, filtered events (see ``events_sql``).

        On DuckDB the result is a relation; on Spark an object with the same ``fetchall()`` and ``df()``."""
        text = f"WITH journey_events AS {self.events_sql(sessions)} {sql}"
        if self.engine:
            return self.engine.query(text)
        return self.con.sql(text)


def save_segment(store_path: str | Path, name: str, users: list[str], description: str = "") -> int:
    """Save users (pseudonyms) as a named segment, replacing one of the same name; returns its size."""
    if not _NAME.match(name):
        raise JourneymapError(
            f"A segment name must be a letter followed by letters, digits, '_', '.', ':' or '-' (64 at most). Got '{name}'.")
    with Store(store_path) as st:
        con = st.con
        con.execute("CREATE TABLE IF NOT EXISTS segments (name VARCHAR, user_id VARCHAR, description VARCHAR, "
                    "created_at TIMESTAMP)")
        con.begin()
        con.execute("DELETE FROM segments WHERE name = ?", [name])
        con.executemany("INSERT INTO segments VALUES (?, ?, ?, now()::TIMESTAMP)",
                        [(name, u, description) for u in sorted(set(users))])
        con.commit()
    return len(set(users))


def has_segments(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'segments'").fetchall()[0][0])


def require_events(source: Journeys | duckdb.DuckDBPyConnection) -> None:
    if isinstance(source, Journeys) and source.engine:
        empty = not source.engine.has_events()
    else:
        con = source.con if isinstance(source, Journeys) else source
        empty = not con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    if empty:
        raise StoreError("The store holds no events yet; ingest some with `journeymap ingest FILE --store STORE`.")


def jsonable(value: Any) -> Any:
    """Numbers and text as JSON wants them (NaN becomes null)."""
    if isinstance(value, float) and value != value:
        return None
    return value
