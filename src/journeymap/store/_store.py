"""The embedded event store: one DuckDB file holding events, quarantine, catalog and ingest log.

Every table is plain SQL over columnar storage, so the same data exports to Parquet for Spark or
any other engine. Sessions are derived at query time (given ids, else an inactivity gap), so a
late-arriving event never leaves a stale session id behind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from journeymap.exceptions import ConfigError, StoreError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS events (
    event_id   UUID NOT NULL,      -- md5 of the canonical content: the same event is stored once
    user_id    VARCHAR NOT NULL,   -- pseudonym (HMAC-SHA256 of the source's user id)
    ts         TIMESTAMP NOT NULL, -- UTC
    event_type VARCHAR NOT NULL,   -- canonical vocabulary
    session_id VARCHAR,            -- as given by the source; NULL when sessions come from gaps
    item_id    VARCHAR,
    category   VARCHAR,
    brand      VARCHAR,
    price      DOUBLE,
    quantity   INTEGER,
    channel    VARCHAR,
    device     VARCHAR,
    query      VARCHAR,
    text       VARCHAR,
    rating     DOUBLE,
    properties JSON,
    ingest_id  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    quarantine_id UUID PRIMARY KEY, -- md5 of file, line and content: re-ingesting adds nothing
    ingest_id  INTEGER NOT NULL,
    file       VARCHAR NOT NULL,
    line       BIGINT NOT NULL,
    field      VARCHAR NOT NULL,
    reason     VARCHAR NOT NULL,
    content    JSON                 -- the raw row, user id pseudonymized
);
CREATE TABLE IF NOT EXISTS items (
    item_id    VARCHAR PRIMARY KEY,
    name       VARCHAR,
    category   VARCHAR,
    brand      VARCHAR,
    price      DOUBLE,             -- last price seen
    ingest_id  INTEGER
);
CREATE TABLE IF NOT EXISTS stages (
    event_type  VARCHAR PRIMARY KEY, -- the config's stage table, as of the latest ingest
    stage       VARCHAR NOT NULL,
    stage_order INTEGER NOT NULL      -- 1 discover .. 5 retain
);
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id   INTEGER PRIMARY KEY,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    format      VARCHAR NOT NULL,
    files       JSON NOT NULL,
    read        BIGINT, stored BIGINT, quarantined BIGINT, duplicates BIGINT
);
"""


def sessionized_sql(gap: timedelta) -> str:
    """The events with a ``session_key``: the source's session id, else a new session after ``gap``.

    The one definition of a session: ``info`` counts them and every journey analysis reads them.
    Rows with a source session id need no window, so a log that carries ids pays nothing for gaps.
    """
    micros = gap // timedelta(microseconds=1)
    return f"""(
        WITH gaps AS (
            SELECT *, CASE WHEN lag(ts) OVER w IS NULL OR epoch_us(ts) - epoch_us(lag(ts) OVER w) > {micros}
                           THEN 1 ELSE 0 END AS __new
            FROM events WHERE session_id IS NULL
            WINDOW w AS (PARTITION BY user_id ORDER BY ts, event_id)
        )
        SELECT *, user_id || ':' || session_id AS session_key FROM events WHERE session_id IS NOT NULL
        UNION ALL
        SELECT * EXCLUDE (__new),
               user_id || '#' || sum(__new) OVER (PARTITION BY user_id ORDER BY ts, event_id
                                                  ROWS UNBOUNDED PRECEDING) AS session_key
        FROM gaps
    )"""


@dataclass
class StoreInfo:
    """What a store holds; ``to_dict()`` is what ``journeymap info --json`` prints."""

    path: str
    events: int
    users: int
    sessions: int
    items: int
    event_types: dict[str, int]
    first_ts: str | None
    last_ts: str | None
    quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    ingests: int = 0
    demo: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(
            [{"event_type": k, "events": v} for k, v in self.event_types.items()]
        )


class Store:
    """A DuckDB event store. Use as a context manager; writes happen inside ingest transactions."""

    def __init__(self, path: str | Path, read_only: bool = False, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if read_only or not create:
                raise StoreError(
                    f"No store at {self.path}; create one with `journeymap ingest FILE --store {self.path}`."
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreError(
                    f"The store {self.path} is in use by another process; wait for it to finish."
                ) from None
            raise StoreError(f"Cannot open the store {self.path}: {exc}") from None
        except duckdb.Error as exc:
            raise StoreError(f"{self.path} is not a journeymap store (DuckDB said: {exc}).") from None
        self.read_only = read_only
        self.con.execute("SET TimeZone = 'UTC'")
        if read_only:
            self._check_schema()
        else:
            self.con.execute(SCHEMA)
            self.con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING", [str(SCHEMA_VERSION)]
            )

    def _check_schema(self) -> None:
        tables = {r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not {"events", "meta"} <= tables:
            raise StoreError(f"{self.path} is a DuckDB file but not a journeymap store (no events table).")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # -- metadata -------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        # fetchall, not fetchone: DuckDB 2 leaves a half-read result open, which blocks the next query.
        rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def write_stages(self, stage_of: dict[str, str]) -> None:
        """Store the event type -> stage table so that SQL over the store can group by stage."""
        from journeymap.events.vocabulary import STAGES

        self.con.execute("DELETE FROM stages")
        self.con.executemany("INSERT INTO stages VALUES (?, ?, ?)",
                             [(t, s, STAGES.index(s) + 1) for t, s in stage_of.items()])

    def claim_secret(self, fingerprint: str, demo: bool) -> None:
        """Record the secret's fingerprint, or refuse a secret other than the store's own."""
        known = self.meta("secret_fingerprint")
        if known is None:
            self.con.execute("INSERT INTO meta VALUES ('secret_fingerprint', ?)", [fingerprint])
            self.con.execute("INSERT INTO meta VALUES ('demo', ?)", ["true" if demo else "false"])
        elif known != fingerprint:
            raise ConfigError(
                f"The store {self.path} was written with a different pseudonymization secret, so "
                "the same shopper would get two pseudonyms. Use the secret it was created with "
                "(JOURNEYMAP_SECRET), or ingest into a new store."
            )

    # -- reading --------------------------------------------------------------------------------
    def session_count(self, gap: timedelta = timedelta(minutes=30)) -> int:
        """Sessions: given session ids per user, else a new session after ``gap`` of inactivity."""
        return int(self.con.execute(
            f"SELECT count(DISTINCT session_key) FROM {sessionized_sql(gap)}").fetchall()[0][0])

    def info(self, gap: timedelta = timedelta(minutes=30)) -> StoreInfo:
        con = self.con
        events, users, first, last = con.execute(
            "SELECT count(*), count(DISTINCT user_id), min(ts), max(ts) FROM events").fetchone()
        types = dict(con.execute(
            "SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1").fetchall())
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        reasons = dict(con.execute(
            "SELECT field, count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC, 1").fetchall())
        items = con.execute("SELECT count(*) FROM items").fetchone()[0]
        ingests = con.execute("SELECT count(*) FROM ingests WHERE finished_at IS NOT NULL").fetchone()[0]
        return StoreInfo(
            path=str(self.path),
            events=int(events),
            users=int(users),
            sessions=self.session_count(gap),
            items=int(items),
            event_types={k: int(v) for k, v in types.items()},
            first_ts=first.isoformat(sep=" ") if first else None,
            last_ts=last.isoformat(sep=" ") if last else None,
            quarantined=int(quarantined),
            quarantine_reasons={k: int(v) for k, v in reasons.items()},
            ingests=int(ingests),
            demo=self.meta("demo") == "true",
        )

    def export(self, out: str | Path, table: str = "events") -> Path:
        """Write a table to Parquet (zstd), readable by Spark, pandas, Polars or DuckDB."""
        tables = ("events", "quarantine", "items", "ingests", "profiles", "segments", "item_vectors")
        if table not in tables:
            raise StoreError(f"Cannot export '{table}'; tables are {', '.join(tables)}.")
        present = {r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if table not in present:
            made_by = {"profiles": "journeymap profiles", "segments": "--save-segment on an analysis",
                       "item_vectors": "journeymap similar-items or search-items"}
            raise StoreError(f"{self.path} has no '{table}' table yet; it is made by {made_by.get(table, 'ingest')}.")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".partial")
        order = " ORDER BY ts, user_id" if table == "events" else ""
        # Parquet's UUID type is unreadable for Spark (PARQUET_TYPE_ILLEGAL): ids travel as text.
        uuids = [r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND data_type = 'UUID'",
            [table]).fetchall()]
        columns = "* REPLACE (" + ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in uuids) + ")" if uuids else "*"
        self.con.execute(
            f"COPY (SELECT {columns} FROM {table}{order}) TO '{_escape(str(tmp))}' (FORMAT parquet, COMPRESSION zstd)")
        tmp.replace(out)  # a reader never sees a half-written file
        return out


def read_only_query(path: str | Path, query: str) -> tuple[list[str], list[tuple]]:
    """Run one SQL query against a store that cannot change it (or read other files)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"No store at {path}; create one with `journeymap ingest FILE --store {path}`.")
    try:
        con = duckdb.connect(str(path), read_only=True,
                             config={"enable_external_access": False})
    except duckdb.Error as exc:
        raise StoreError(f"Cannot open the store {path} read-only: {exc}") from None
    try:
        con.execute("SET TimeZone = 'UTC'")
        result = con.execute(query)
        if result.description is None:
            return [], []
        return [d[0] for d in result.description], result.fetchall()
    except duckdb.Error as exc:
        message = str(exc).split("\n")[0]
        if "read-only" in message or "read only" in message:
            raise StoreError(f"journeymap sql is read-only: {message}") from None
        raise StoreError(f"The query failed: {message}") from None
    finally:
        con.close()


def _escape(text: str) -> str:
    return text.replace("'", "''")
