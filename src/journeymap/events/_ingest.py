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
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from journeymap.config import DEMO_SECRET, Settings
from journeymap.events.adapters import Mapping_, plan
from journeymap.events.adapters._base import Adapter
from journeymap.events.readers import Dialect, RawBatch, Reject
from journeymap.events.validate import (
    EVENT_COLUMNS, PSEUDONYM, event_map_table, register_pseudonymizer, user_sql, validation_sql,
)
from journeymap.exceptions import ConfigError
from journeymap.privacy.pseudonymize import Pseudonymizer
from journeymap.store._store import Store, registered

Progress = Callable[[int], None]


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

    with Store(store) as st:
        con = st.con
        con.begin()
        try:
            st.claim_secret(pseudonymizer.fingerprint(), demo)
            ingest_id = con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests").fetchone()[0]
            con.execute(
                "INSERT INTO ingests (ingest_id, started_at, format, files) VALUES (?, now()::TIMESTAMP, ?, ?)",
                [ingest_id, adapter.name, json.dumps([str(p) for p in summaries])],
            )
            register_pseudonymizer(con, pseudonymizer)
            con.register("__event_map", event_map_table(adapter, settings))
            writer = _Writer(st, adapter, settings, timezone, pseudonymizer, ingest_id, planned.files)
            for batch in prefetch(adapter.batches(planned.files)):
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
            raise
    return IngestResult(
        read=totals[0], stored=totals[1], quarantined=totals[2], duplicates=totals[3],
        format=adapter.name, store=str(store), ingest_id=int(ingest_id),
        seconds=round(time.perf_counter() - started, 3),
        files=list(summaries.values()), reasons=dict(reasons.most_common(20)), warnings=warnings,
    )


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
        self._sql: dict[tuple[str, ...], tuple[str, str]] = {}
        self._items: list[pa.Table] = []

    def write(self, batch: RawBatch, reasons: Counter[str]) -> tuple[int, int, int, int]:
        """Returns (read, stored, quarantined, duplicates) for the batch."""
        con = self.con
        table = batch.table
        stored = duplicates = 0
        quarantined = len(batch.rejects)
        if table.num_rows:
            key = tuple(table.column_names)
            if key not in self._sql:
                self._sql[key] = (user_sql(self.adapter, key),
                                  validation_sql(self.adapter, key, self.settings, self.timezone))
            users, validate = self._sql[key]
            with registered(con, "__batch", table):
                raw_users = con.sql(users).to_arrow_table().column(0)
            table = table.append_column(PSEUDONYM, self.pseudonymizer.array(raw_users))
            with registered(con, "__batch", table):
                valid = con.sql(validate).to_arrow_table()
            bad_mask = pc.is_valid(valid.column("problem_field"))
            bad = valid.filter(bad_mask)
            good = valid.filter(pc.invert(bad_mask))
            if good.num_rows:
                stored = self._insert_events(good)
                duplicates = good.num_rows - stored
                self._collect_items(good)
            if bad.num_rows:
                self._insert_quarantine(str(batch.path), bad.select(
                    ["line", "problem_field", "problem_reason", "content"]))
                quarantined += bad.num_rows
                for f, r in zip(bad.column("problem_field").to_pylist(), bad.column("problem_reason").to_pylist()):
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

    def _insert_events(self, good: pa.Table) -> int:
        con = self.con
        lo, hi = pc.min_max(good.column("ts")).values()
        with registered(con, "__good", good):
            cols = ", ".join(EVENT_COLUMNS)
            # An event id fixes the timestamp, so only stored events in the batch's time range
            # can be duplicates: DuckDB's zone maps skip the rest of the table.
            # Most batches hold no repeated event; deduplicating within one costs a full hash
            # aggregate, so it runs only when needed.
            distinct = "DISTINCT ON (event_id) " if pc.count_distinct(good.column("event_id")).as_py() < good.num_rows else ""
            inserted = con.execute(f"""
                INSERT INTO events ({cols}, ingest_id)
                SELECT {distinct}{cols}, {self.ingest_id}
                FROM __good g
                WHERE NOT EXISTS (
                    SELECT 1 FROM events e
                    WHERE e.ts BETWEEN $lo AND $hi AND e.event_id = g.event_id)
            """, {"lo": lo.as_py(), "hi": hi.as_py()}).fetchone()[0]
        return int(inserted)

    def _collect_items(self, good: pa.Table) -> None:
        """Keep each item's latest non-empty name, category, brand and price from this batch."""
        rows = good.select(["item_id", "item_name", "category", "brand", "price"])
        rows = rows.filter(pc.is_valid(rows.column("item_id")))
        if rows.num_rows:
            self._items.append(_latest_per_item(rows))

    def finish(self) -> None:
        """Write the catalog entries gathered from all batches, in one upsert."""
        if not self._items:
            return
        items = _latest_per_item(pa.concat_tables(self._items))
        with registered(self.con, "__items", items):
            self.con.execute(f"""
                INSERT INTO items SELECT item_id, item_name, category, brand, price, {self.ingest_id} FROM __items
                ON CONFLICT (item_id) DO UPDATE SET
                    name = coalesce(excluded.name, name),
                    category = coalesce(excluded.category, category),
                    brand = coalesce(excluded.brand, brand),
                    price = coalesce(excluded.price, price),
                    ingest_id = excluded.ingest_id
            """)

    def _insert_quarantine(self, path: str, bad: pa.Table) -> None:
        con = self.con
        with registered(con, "__bad", bad):
            con.execute("""
                INSERT INTO quarantine
                SELECT md5(concat_ws(chr(31), $name, CAST(line AS VARCHAR), problem_field,
                                     coalesce(content, '')))::UUID,
                       $ingest, $path, line, problem_field, problem_reason, content
                FROM __bad
                ON CONFLICT DO NOTHING
            """, {"name": Path(path).name, "ingest": self.ingest_id, "path": path})

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
    # Rows are in file order, so "last" is the latest value; it skips nulls.
    names = ["item_name", "category", "brand", "price"]
    latest = rows.group_by("item_id", use_threads=False).aggregate([(n, "last") for n in names])
    return pa.table({"item_id": latest.column("item_id"), **{n: latest.column(f"{n}_last") for n in names}})


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
