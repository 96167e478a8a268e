"""Ingest shop logs into the store: stream, validate, pseudonymize, quarantine, deduplicate.

One ingest is one transaction: it commits whole or, if it fails or is killed, leaves the store
exactly as it was. Every row read is counted once as stored, quarantined or duplicate.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import duckdb
import pyarrow as pa

from journeymap.config import DEMO_SECRET, Settings
from journeymap.events.adapters import Mapping_, plan
from journeymap.events.adapters._base import Adapter
from journeymap.events.readers import Dialect, RawBatch, Reject
from journeymap.events.validate import (
    EVENT_COLUMNS, PSEUDONYM, event_map_table, register_pseudonymizer, user_sql, validation_sql,
)
from journeymap.exceptions import ConfigError
from journeymap.privacy.pseudonymize import Pseudonymizer
from journeymap.events.adapters._base import lit
from journeymap.store._store import Store

Progress = Callable[[int], None]
BATCH_ROWS = 262_144  # rows per validation statement


@dataclass
class FileSummary:
    path: str
    role: str
    read: int = 0
    stored: int = 0
    quarantined: int = 0
    duplicates: int = 0


@dataclass
class IngestResult:
    """What one ingest did; ``to_dict()`` is what ``journeymap ingest --json`` prints."""

    read: int
    stored: int
    quarantined: int
    duplicates: int
    format: str
    store: str
    ingest_id: int
    seconds: float
    files: list[FileSummary] = field(default_factory=list)
    # "field: reason" -> rows, the most frequent first
    reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(f) for f in self.files])


def ingest(
    paths: Sequence[str | Path] | str | Path,
    store: str | Path,
    *,
    format: str | None = None,
    mapping: Mapping_ | None = None,
    settings: Settings | None = None,
    timezone: str | None = None,
    demo: bool = False,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest files (or directories of files) into the DuckDB store at ``store``.

    ``format`` is detected from the headers when not given; ``mapping`` drives the generic
    format. ``timezone`` applies to formats whose timestamps carry no zone. ``demo`` uses the
    built-in demo secret, for simulated data only.
    """
    started = time.perf_counter()
    settings = settings or Settings.load()
    secret = DEMO_SECRET if demo else settings.require_secret()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    timezone = timezone or (mapping.timezone if mapping else None)
    if timezone:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"Unknown time zone '{timezone}'; use an IANA name like Europe/London or UTC."
            ) from None
    planned = plan(paths, format, mapping)
    adapter = planned.adapter
    pseudonymizer = Pseudonymizer(secret)
    summaries = {str(p): FileSummary(str(p), role.name) for p, role, _ in planned.files}
    for path in planned.empty:
        summaries[str(path)] = FileSummary(str(path), "empty")
    warnings = [f"{p} is empty: nothing to read." for p in planned.empty]
    reasons: Counter[str] = Counter()

    created = not Path(store).exists()
    with Store(store) as st:
        con = st.con
        failed = False
        con.begin()
        try:
            try:
                con.execute(f"SET memory_limit = {lit(settings.ingest_memory_limit)}")
            except duckdb.Error as exc:
                raise ConfigError(
                    f"ingest_memory_limit must be a size like '1GB' or '512MB'. Got "
                    f"'{settings.ingest_memory_limit}' ({str(exc).splitlines()[0]})."
                ) from None
            st.claim_secret(pseudonymizer.fingerprint(), demo)
            st.write_stages(dict(settings.vocabulary.stage_of))
            ingest_id = con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests").fetchone()[0]
            con.execute(
                "INSERT INTO ingests (ingest_id, started_at, format, files) VALUES (?, now()::TIMESTAMP, ?, ?)",
                [ingest_id, adapter.name, json.dumps([str(p) for p in summaries])],
            )
            register_pseudonymizer(con, pseudonymizer)
            con.register("__event_map", event_map_table(adapter, settings))
            writer = _Writer(st, adapter, settings, timezone, pseudonymizer, ingest_id, planned.files)
            batches = with_pseudonyms(coalesce(adapter.batches(planned.files)), adapter, pseudonymizer)
            for batch in prefetch(batches):
                summary = summaries[str(batch.path)]
                counts = writer.write(batch, reasons)
                summary.read += counts[0]
                summary.stored += counts[1]
                summary.quarantined += counts[2]
                summary.duplicates += counts[3]
                if progress:
                    progress(counts[0])
            writer.finish()
            totals = [sum(getattr(s, k) for s in summaries.values())
                      for k in ("read", "stored", "quarantined", "duplicates")]
            con.execute(
                "UPDATE ingests SET finished_at = now()::TIMESTAMP, read = ?, stored = ?, quarantined = ?, "
                "duplicates = ? WHERE ingest_id = ?", [*totals, ingest_id])
            con.commit()
        except BaseException:
            con.rollback()
            failed = True
            raise
        finally:
            if created and failed:
                st.close()
                _remove_store(Path(store))  # a store this ingest created goes with it
    return IngestResult(
        read=totals[0], stored=totals[1], quarantined=totals[2], duplicates=totals[3],
        format=adapter.name, store=str(store), ingest_id=int(ingest_id),
        seconds=round(time.perf_counter() - started, 3),
        files=list(summaries.values()), reasons=dict(reasons.most_common(20)), warnings=warnings,
    )


def on(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str) -> duckdb.DuckDBPyRelation:
    """Run ``sql`` with ``table`` visible as ``name`` for this one statement.

    Not ``con.register``: DuckDB keeps unregistered views, and the Arrow data they hold, until
    the transaction ends, so a long ingest would keep every batch in memory (measured: 9 GB for
    10M events).
    """
    return con.from_arrow(table).query(name, sql)


def _remove_store(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


class _Writer:
    """Validates batches and writes them inside the open transaction."""

    def __init__(self, store: Store, adapter: Adapter, settings: Settings, timezone: str | None,
                 pseudonymizer: Pseudonymizer, ingest_id: int,
                 files: Sequence[tuple[Path, Any, Dialect]]) -> None:
        self.con = store.con
        self.adapter = adapter
        self.settings = settings
        self.timezone = timezone
        self.pseudonymizer = pseudonymizer
        self.ingest_id = int(ingest_id)
        self.dialects = {str(p): d for p, _, d in files}
        self._sql: dict[tuple[str, ...], str] = {}
        self._items: list[pa.Table] = []
        self._batches = 0

    def write(self, batch: RawBatch, reasons: Counter[str]) -> tuple[int, int, int, int]:
        """Returns (read, stored, quarantined, duplicates) for the batch."""
        con = self.con
        table = batch.table
        stored = duplicates = 0
        quarantined = len(batch.rejects)
        if table.num_rows:
            key = tuple(table.column_names)
            if key not in self._sql:
                raw = tuple(c for c in key if c != PSEUDONYM)
                self._sql[key] = validation_sql(self.adapter, raw, self.settings, self.timezone)
            valid = on(con, "__batch", table, self._sql[key]).to_arrow_table()
            n_bad, n_good, n_distinct, lo, hi = on(con, "__valid", valid, """
                SELECT count(*) FILTER (WHERE problem_field IS NOT NULL),
                       count(*) FILTER (WHERE problem_field IS NULL),
                       count(DISTINCT event_id), min(ts), max(ts)
                FROM __valid""").fetchall()[0]
            if n_good:
                stored = self._insert_events(valid, n_distinct < n_good, lo, hi)
                duplicates = n_good - stored
                self._collect_items(valid)
            if n_bad:
                bad = on(con, "__valid", valid, """
                    SELECT line, problem_field, problem_reason, content FROM __valid
                    WHERE problem_field IS NOT NULL ORDER BY line""").to_arrow_table()
                self._insert_quarantine(str(batch.path), bad)
                quarantined += n_bad
                for f, r in zip(bad.column("problem_field").to_pylist(),
                                bad.column("problem_reason").to_pylist()):
                    reasons[f"{f}: {_generalise(r)}"] += 1
        if batch.rejects:
            rows = [self._reject_row(batch.path, r) for r in batch.rejects]
            for r in batch.rejects:
                reasons[f"{r.field}: {_generalise(r.reason)}"] += 1
            self._insert_quarantine(str(batch.path), pa.table({
                "line": pa.array([r[0] for r in rows], pa.int64()),
                "problem_field": pa.array([r[1] for r in rows], pa.string()),
                "problem_reason": pa.array([r[2] for r in rows], pa.string()),
                "content": pa.array([r[3] for r in rows], pa.string()),
            }))
        read = table.num_rows + len(batch.rejects)
        return read, stored, quarantined, duplicates

    def _insert_events(self, valid: pa.Table, repeats: bool, lo: datetime, hi: datetime) -> int:
        cols = ", ".join(EVENT_COLUMNS)
        # Deduplicating within a batch costs a hash aggregate; most batches repeat no event.
        distinct = "DISTINCT ON (event_id) " if repeats else ""
        # An event id fixes the timestamp, so only stored events in the batch's time range can
        # be duplicates: DuckDB's zone maps skip the rest of the table.
        inserted = on(self.con, "__valid", valid, f"""
            INSERT INTO events ({cols}, ingest_id)
            SELECT {distinct}{cols}, {self.ingest_id}
            FROM __valid v
            WHERE problem_field IS NULL AND NOT EXISTS (
                SELECT 1 FROM events e
                WHERE e.ts BETWEEN TIMESTAMP '{lo.isoformat()}' AND TIMESTAMP '{hi.isoformat()}'
                  AND e.event_id = v.event_id)
        """).fetchall()[0][0]
        return int(inserted)

    def _collect_items(self, valid: pa.Table) -> None:
        """Keep each item's latest non-empty name, category, brand and price from this batch."""
        latest = on(self.con, "__valid", valid, """
            SELECT item_id, arg_max(item_name, line) FILTER (WHERE item_name IS NOT NULL) AS item_name,
                   arg_max(category, line) FILTER (WHERE category IS NOT NULL) AS category,
                   arg_max(brand, line) FILTER (WHERE brand IS NOT NULL) AS brand,
                   arg_max(price, line) FILTER (WHERE price IS NOT NULL) AS price,
                   max(line) AS line
            FROM __valid WHERE problem_field IS NULL AND item_id IS NOT NULL GROUP BY item_id
        """).to_arrow_table()
        if latest.num_rows:
            self._batches += 1
            self._items.append(latest.append_column("batch", pa.array([self._batches] * latest.num_rows, pa.int64())))
            if sum(t.num_rows for t in self._items) > 1_000_000:
                self._items = [_latest_per_item(pa.concat_tables(self._items))]

    def finish(self) -> None:
        """Write the catalog entries gathered from all batches, in one upsert."""
        if not self._items:
            return
        items = _latest_per_item(pa.concat_tables(self._items))
        on(self.con, "__items", items, f"""
            INSERT INTO items SELECT item_id, item_name, category, brand, price, {self.ingest_id} FROM __items
            ON CONFLICT (item_id) DO UPDATE SET
                name = coalesce(excluded.name, name),
                category = coalesce(excluded.category, category),
                brand = coalesce(excluded.brand, brand),
                price = coalesce(excluded.price, price),
                ingest_id = excluded.ingest_id
        """).fetchall()

    def _insert_quarantine(self, path: str, bad: pa.Table) -> None:
        on(self.con, "__bad", bad, f"""
            INSERT INTO quarantine
            SELECT md5(concat_ws(chr(31), {lit(Path(path).name)}, CAST(line AS VARCHAR), problem_field,
                                 coalesce(content, '')))::UUID,
                   {self.ingest_id}, {lit(path)}, line, problem_field, problem_reason, content
            FROM __bad
            ON CONFLICT DO NOTHING
        """).fetchall()

    def _reject_row(self, path: Path, reject: Reject) -> tuple[int, str, str, str]:
        """A structural reject as a quarantine row, its user id pseudonymized."""
        user_cols = self.adapter.user_columns
        content = reject.content
        if isinstance(content, dict):
            content = {k: (self.pseudonymizer(v) if k in user_cols and v is not None else v)
                       for k, v in content.items()}
        elif isinstance(content, list):
            names = list(self.dialects[str(path)].columns)
            positions = {names.index(c) for c in user_cols if c in names}
            # A row with too few or too many fields may have lost or gained one before the user
            # id, so pseudonymize the field at the user column's position counted from both ends.
            positions |= {len(content) - (len(names) - p) for p in positions}
            content = [self.pseudonymizer(v) if i in positions else v for i, v in enumerate(content)]
        else:
            content = _pseudonymize_json_text(content, user_cols, self.pseudonymizer)
        return reject.line, reject.field, reject.reason, json.dumps(content, ensure_ascii=False)


def _latest_per_item(rows: pa.Table) -> pa.Table:
    # Later batches, then later lines, hold the latest values; "last" skips nulls.
    names = ["item_name", "category", "brand", "price"]
    rows = rows.sort_by([("batch", "ascending"), ("line", "ascending")])
    latest = rows.group_by("item_id", use_threads=False).aggregate(
        [(n, "last") for n in names] + [("line", "max"), ("batch", "max")])
    return pa.table({"item_id": latest.column("item_id"), **{n: latest.column(f"{n}_last") for n in names},
                     "line": latest.column("line_max"), "batch": latest.column("batch_max")})


def with_pseudonyms(batches: Iterator[RawBatch], adapter: Adapter,
                    pseudonymizer: Pseudonymizer) -> Iterator[RawBatch]:
    """Add each row's pseudonymized user id (column ``__pseudonym``) to the batches.

    Runs with the reader, off the writer's critical path, on a connection of its own: the raw
    ids only ever meet an in-memory database.
    """
    con = duckdb.connect()
    try:
        for batch in batches:
            table = batch.table
            if table.num_rows:
                sql = user_sql(adapter, table.column_names)
                raw_users = on(con, "__batch", table, sql).to_arrow_table().column(0)
                table = table.append_column(PSEUDONYM, pseudonymizer.array(raw_users))
            yield RawBatch(batch.path, table, batch.rejects)
    finally:
        con.close()


def coalesce(batches: Iterator[RawBatch], min_rows: int | None = None) -> Iterator[RawBatch]:
    """Merge consecutive small batches of one file, so each SQL statement has rows enough to
    keep every core busy (DuckDB parallelises per ~122k-row group)."""
    min_rows = min_rows or BATCH_ROWS
    pending: list[RawBatch] = []
    rows = 0
    for batch in batches:
        if pending and (batch.path != pending[0].path
                        or batch.table.column_names != pending[0].table.column_names):
            yield _merge(pending)
            pending, rows = [], 0
        pending.append(batch)
        rows += batch.table.num_rows
        if rows >= min_rows:
            yield _merge(pending)
            pending, rows = [], 0
    if pending:
        yield _merge(pending)


def _merge(batches: list[RawBatch]) -> RawBatch:
    if len(batches) == 1:
        return batches[0]
    table = pa.concat_tables([b.table for b in batches])
    return RawBatch(batches[0].path, table, [r for b in batches for r in b.rejects])


def prefetch(batches: Iterator[RawBatch], depth: int = 2) -> Iterator[RawBatch]:
    """Read the next batches in a thread while the caller validates and writes this one.

    Parsing (pyarrow) and SQL (DuckDB) both release the GIL, so the two overlap on two cores.
    """
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        queue.put(("batch", batch), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            queue.put(("error", exc))

    thread = threading.Thread(target=work, name="journeymap-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                queue.get_nowait()
            except Empty:
                thread.join(timeout=0.1)


def _pseudonymize_json_text(text: str, keys: Sequence[str], pseudo: Pseudonymizer) -> str:
    """Pseudonymize user ids inside an unparsable JSON line, found by their keys."""
    for key in keys:
        pattern = re.compile(r'("' + re.escape(key) + r'"\s*:\s*)("((?:[^"\\]|\\.)*)"|-?[\w.]+)')
        text = pattern.sub(lambda m: m.group(1) + '"' + pseudo(m.group(3) if m.group(3) is not None
                                                              else m.group(2)) + '"', text)
    return text


_QUOTED = re.compile(r"'[^']*'(\.\.\.)?")
_NUMBER = re.compile(r"(?<![\w'])-?\d[\d.,e+:-]*")


def _generalise(reason: str) -> str:
    """A reason without its values, to count reasons by kind."""
    return _NUMBER.sub("N", _QUOTED.sub("'…'", reason))
