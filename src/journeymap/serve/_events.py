"""``POST /v1/events`` and the single writer behind it.

Live events take batch ingest's own path: the request's events become a JSON-lines batch
(``_jsonl_batch``), get their pseudonyms and run through the same validation query, so a bad event
gets exactly the message the same row gets from ``journeymap ingest``, and a good one the same
content id (``event_id``), which makes a resend store nothing new. Rejected events go to the
quarantine table, as in batch.

One writer thread owns the store's write connection. It takes every request waiting in its queue,
writes them in one transaction (group commit: one fsync for many requests) and replies only after
the commit, so an acknowledged event survives a crash. Requests with the same fields share one
validation query. The live events of a server run form one ingest, sealed whenever the profiles
are brought up to date so that ``update_profiles`` sees which events are new.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from queue import Empty, Queue
from typing import Annotated, Any, Literal

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from journeymap.config import Settings
from journeymap.events._ingest import _Writer
from journeymap.events.adapters.generic import REQUIRED, Generic
from journeymap.events.readers import Reject, _jsonl_batch
from journeymap.events.validate import (
    EVENT_COLUMNS,
    PSEUDONYM,
    event_map_table,
    register_pseudonymizer,
    user_sql,
    validation_sql,
)
from journeymap.privacy.pseudonymize import Pseudonymizer
from journeymap.serve._auth import Ingest
from journeymap.serve._fastpath import FastPath
from journeymap.serve._metrics import Metrics
from journeymap.store import Store

log = logging.getLogger("journeymap.serve")

SOURCE = "POST /v1/events"  # the quarantine's file column for live events
MAX_EVENTS = 10_000  # per request; larger loads belong to `journeymap ingest`
GROUP_EVENTS = 20_000  # per writer transaction
COUNTS_EVERY_S = 1.0  # the plain path updates the ingest's counts at most this often
MAX_RECENT_IDS = 1_000_000  # event ids the writer remembers for deduplication (about 150 MB)
MAX_CACHED_ITEMS = 200_000  # catalog entries the writer remembers, to skip upserts that change nothing
# The plain path's rows as one parameter: the events table's columns and types.
_PLAIN_ROWS = "STRUCT(" + ", ".join(f"{c} {t}" for c, t in (
    ("event_id", "UUID"), ("user_id", "VARCHAR"), ("ts", "TIMESTAMP"), ("event_type", "VARCHAR"),
    *((c, "VARCHAR") for c in ("session_id", "item_id", "category", "brand")), ("price", "DOUBLE"),
    ("quantity", "INTEGER"), *((c, "VARCHAR") for c in ("channel", "device", "query", "text")), ("rating", "DOUBLE"),
    ("properties", "JSON"))) + ")[]"


@dataclass
class WriteResult:
    """What became of one request's events; ``to_dict()`` is the response body."""

    results: list[dict[str, Any]]
    stored: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the new events, as stored

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r["status"] == status)

    def to_dict(self) -> dict[str, Any]:
        return {"received": len(self.results), "accepted": self.count("accepted"),
                "duplicates": self.count("duplicate"), "rejected": self.count("rejected"), "results": self.results}


@dataclass
class _Request:
    items: list[Any]
    future: Future = field(default_factory=Future)


class EventWriter:
    """The only writer of the store while the service runs; see the module docstring."""

    def __init__(self, store: Store, settings: Settings, pseudonymizer: Pseudonymizer, metrics: Metrics,
                 after_commit: Callable[[list[dict[str, Any]]], None] | None = None, fast: bool = True) -> None:
        self.store = store
        self.con = store.con
        self.settings = settings
        self.pseudonymizer = pseudonymizer
        self.metrics = metrics
        self.after_commit = after_commit or (lambda events: None)
        self.adapter = Generic()
        mapping = event_map_table(self.adapter, settings).to_pydict()
        self.fast = FastPath(settings, dict(zip(mapping["raw"], mapping["canonical"])), pseudonymizer) if fast else None
        self._items: dict[str, list[Any]] = {}  # item -> [name, category, brand, price] as last written
        # Whether ``_items`` holds every stored item: then an item it lacks is new, and is inserted
        # without ON CONFLICT (a transaction of 5 events and 3 new items: 2.95 against 4.68 ms at p50
        # here; every writer transaction over 8 ms at 500 posts/s had written the catalog).
        self._items_complete = False
        # Deduplication without a store lookup: every stored event at or after ``_since`` is in
        # ``_recent`` (id -> time), because this writer stored it; an event before ``_since`` (a late
        # one) is looked up in the store. ``_stored_now`` holds the open transaction's new ids.
        self._recent: dict[str, datetime] = {}
        self._since = datetime.max
        self._stored_now: list[tuple[str, datetime]] = []
        self._began = False  # whether the group's transaction has begun (``_begin``)
        self._catalog_written = False  # whether the group's transaction writes the catalog
        self.catalog_writes = 0  # commits that changed the catalog (live profiles keep its prices until the next)
        self._counts = [0, 0, 0]  # read, stored, duplicates of plain events not yet in the ingests row
        self._counted_at = time.monotonic()
        self.lock = threading.RLock()  # every use of the write connection holds it
        self.ingest_id: int | None = None  # the open live ingest, created by its first write
        self._queue: Queue[_Request | None] = Queue()
        self._mem = duckdb.connect()  # raw user ids only ever meet an in-memory database
        self._thread: threading.Thread | None = None
        self._closed = False
        self._submitting = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        with self.lock:
            register_pseudonymizer(self.con, self.pseudonymizer)
            self.con.register("__event_map", event_map_table(self.adapter, self.settings))
            # A live ingest left open by a killed server: its events are committed; close it, with
            # its stored count from the events (counts not yet written died with the server).
            self.con.execute("UPDATE ingests SET finished_at = now()::TIMESTAMP, stored = (SELECT count(*) FROM "
                             "events e WHERE e.ingest_id = ingests.ingest_id) "
                             "WHERE finished_at IS NULL AND format = 'api'")
            # The catalog as stored (up to MAX_CACHED_ITEMS items): a known, unchanged item is not upserted.
            rows = self.con.execute("SELECT item_id, name, category, brand, price FROM items LIMIT ?",
                                    [MAX_CACHED_ITEMS + 1]).fetchall()
            self._items = {item: [name, category, brand, price] for item, name, category, brand, price in
                           rows[:MAX_CACHED_ITEMS]}
            self._items_complete = len(rows) <= MAX_CACHED_ITEMS
            latest = self.con.execute("SELECT max(ts) FROM events").fetchall()[0][0]
            self._since = datetime.min if latest is None else latest + timedelta(microseconds=1)
        self._thread = threading.Thread(target=self._run, name="journeymap-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, then seal the live ingest."""
        with self._submitting:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)  # after every request submitted before it
        if self._thread is not None:
            self._thread.join()
        self.seal()
        self._mem.close()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, items: list[Any]) -> Future:
        """Queue a request's events; the future gives its ``WriteResult`` once committed."""
        request = _Request(items)
        with self._submitting:
            if self._closed:
                raise RuntimeError("the event writer is closed")
            self._queue.put(request)
        return request.future

    def seal(self) -> bool:
        """Finish the open live ingest, so the next writes form a new one; True if there was one."""
        with self.lock:
            if self.ingest_id is None:
                return False
            self._flush_counts()
            self.con.execute("UPDATE ingests SET finished_at = now()::TIMESTAMP WHERE ingest_id = ?",
                             [self.ingest_id])
            self.ingest_id = None
            return True

    # -- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, size, stop = [first], len(first.items), False
            while size < GROUP_EVENTS:
                try:
                    more = self._queue.get_nowait()
                except Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
                size += len(more.items)
            # A request whose client went away (its future cancelled) is not written; the rest can
            # no longer be cancelled, so each gets its result.
            group = [r for r in group if r.future.set_running_or_notify_cancel()]
            try:
                if group:
                    self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - the writer thread must outlive any one batch
                log.exception("the event writer failed on a batch of %d requests", len(group))
                for request in group:
                    if not request.future.done():
                        request.future.set_exception(exc)
            if stop:
                return

    def _commit(self, group: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            results = self._transaction(group)
        except Exception as exc:  # noqa: BLE001 - each request learns its own fate below
            if len(group) > 1:  # one bad request must not fail the others: write them one by one
                for request in group:
                    self._commit([request])
                return
            log.exception("writing %d events failed; nothing of the request was stored", len(group[0].items))
            group[0].future.set_exception(exc)
            return
        metrics = self.metrics
        metrics.observe("journeymap_write_duration_seconds", time.perf_counter() - started)
        metrics.inc("journeymap_write_batches_total")
        stored = [event for result in results for event in result.stored]
        for result in results:
            metrics.inc("journeymap_events_accepted_total", result.count("accepted"))
            metrics.inc("journeymap_events_duplicate_total", result.count("duplicate"))
            for r in result.results:
                if r["status"] == "rejected":
                    metrics.inc("journeymap_events_rejected_total", field=r["field"])
        metrics.stored(len(stored))
        if stored:
            try:
                self.after_commit(stored)
            except Exception:  # noqa: BLE001 - the events are durable; the online side catches up
                log.exception("after-commit step failed for %d events", len(stored))
        for request, result in zip(group, results):
            request.future.set_result(result)

    def _transaction(self, group: list[_Request]) -> list[WriteResult]:
        with self.lock:
            opened = self.ingest_id is None
            self._began = self._catalog_written = False
            self._stored_now = []
            counts, counted_at = list(self._counts), self._counted_at
            try:
                results = self._write(group)
                if self._began:
                    self.con.commit()
            except BaseException:
                if self._began:
                    try:
                        self.con.rollback()
                    except duckdb.Error:
                        pass
                else:  # a lone insert commits itself: what it stored stays stored
                    self._remember(self._stored_now)
                self._forget_items()  # it may hold upserts just rolled back
                self._stored_now = []
                self._counts, self._counted_at = counts, counted_at
                if opened:
                    self.ingest_id = None
                raise
            self._remember(self._stored_now)
            if self._catalog_written:
                self.catalog_writes += 1
        return results

    def _begin(self) -> None:
        """Open the group's transaction. A group that needs a single statement runs without one
        (DuckDB commits it alone): BEGIN and COMMIT cost 0.3 ms of a 1.5 ms write."""
        if not self._began:
            self.con.begin()
            self._began = True

    def _remember(self, stored: list[tuple[str, datetime]]) -> None:
        recent = self._recent
        for event_id, ts in stored:
            if ts >= self._since:
                recent[event_id] = ts
        if len(recent) > MAX_RECENT_IDS:  # forget the older half: those are looked up in the store again
            self._since = sorted(recent.values())[len(recent) // 2]
            self._recent = {i: t for i, t in recent.items() if t >= self._since}

    def _open_ingest(self) -> int:
        if self.ingest_id is None:
            con = self.con
            self.ingest_id = int(con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests").fetchall()[0][0])
            con.execute("INSERT INTO ingests (ingest_id, started_at, format, files, read, stored, quarantined, "
                        "duplicates) VALUES (?, now()::TIMESTAMP, 'api', ?, 0, 0, 0, 0)",
                        [self.ingest_id, json.dumps([SOURCE])])
        return self.ingest_id

    def _insert(self) -> list[tuple]:
        """Store the valid events not stored yet (ingest's insert, with the ids it stored returned)."""
        cols = ", ".join(EVENT_COLUMNS)
        lo, hi = self.con.execute("SELECT min(ts), max(ts) FROM __valid WHERE problem_field IS NULL").fetchall()[0]
        if lo is None:
            return []
        # An event id fixes the timestamp: only stored events in the batch's time range can be
        # duplicates, and DuckDB's zone maps skip the rest of the table.
        return self.con.execute(f"""
            INSERT INTO events ({cols}, ingest_id)
            SELECT DISTINCT ON (event_id) {cols}, {self.ingest_id} FROM __valid v
            WHERE problem_field IS NULL AND NOT EXISTS (
                SELECT 1 FROM events e
                WHERE e.ts BETWEEN TIMESTAMP '{lo.isoformat()}' AND TIMESTAMP '{hi.isoformat()}'
                  AND e.event_id = v.event_id)
            RETURNING event_id, ts""").fetchall()

    def _upsert_items(self, ingest_id: int) -> None:
        """The catalog as ingest keeps it: each item's latest non-empty name, category, brand, price."""
        self._forget_items()  # the plain path's memory of the catalog would miss this change
        self._catalog_written = True
        self.con.execute(f"""
            INSERT INTO items
            SELECT item_id, arg_max(item_name, line) FILTER (WHERE item_name IS NOT NULL),
                   arg_max(category, line) FILTER (WHERE category IS NOT NULL),
                   arg_max(brand, line) FILTER (WHERE brand IS NOT NULL),
                   arg_max(price, line) FILTER (WHERE price IS NOT NULL), {int(ingest_id)}
            FROM __valid WHERE problem_field IS NULL AND item_id IS NOT NULL GROUP BY item_id
            ON CONFLICT (item_id) DO UPDATE SET
                name = coalesce(excluded.name, name),
                category = coalesce(excluded.category, category),
                brand = coalesce(excluded.brand, brand),
                price = coalesce(excluded.price, price),
                ingest_id = excluded.ingest_id""")

    def _write(self, group: list[_Request]) -> list[WriteResult]:
        """Validate, deduplicate and store the group's events inside the open transaction."""
        if self.fast is not None:
            latest = self.settings.limits.latest()
            rows = [[self.fast.row(item, latest) for item in request.items] for request in group]
            if all(row is not None for request_rows in rows for row in request_rows):
                return self._write_plain(group, rows)
        con = self.con
        self._begin()
        ingest_id = self._open_ingest()
        writer = _Writer(self.store, self.adapter, self.settings, None, self.pseudonymizer, ingest_id, [])
        outcomes: list[list[dict[str, Any] | None]] = [[None] * len(r.items) for r in group]
        stored: list[list[dict[str, Any]]] = [[] for _ in group]

        # Events with the same fields, in order, share one validation query; a request's fields are
        # the union of its events' keys in first-seen order, exactly as for a JSON-lines file.
        shapes: dict[tuple[str, ...], list[tuple[int, int, dict[str, Any]]]] = {}
        structural: list[tuple[int, Reject]] = []
        for r, request in enumerate(group):
            names: dict[str, None] = {}
            objects = []
            for i, item in enumerate(request.items):
                if isinstance(item, dict):
                    names.update(dict.fromkeys(item))
                    objects.append((r, i, item))
                else:
                    structural.append((r, Reject(i + 1, "row", f"line is a JSON {type(item).__name__}, expected an object",
                                                 json.dumps(item, ensure_ascii=False))))
            # A field no event has is missing from every row: said per event, not for the request.
            names.update(dict.fromkeys(n for n in REQUIRED if n not in names))
            if objects:
                shapes.setdefault(tuple(names), []).extend(objects)

        where: list[tuple[int, int]] = []  # batch line - 1 -> (request, index)
        for names, rows in shapes.items():
            lines = list(range(len(where) + 1, len(where) + len(rows) + 1))
            table = _jsonl_batch(Path(SOURCE), [row for _, _, row in rows], lines, list(names), []).table
            raw_users = run(self._mem, "__batch", table, user_sql(self.adapter, table.column_names))
            columns = tuple(table.column_names)
            table = table.append_column(PSEUDONYM, self.pseudonymizer.array(pa.array([u for u, in raw_users], pa.string())))
            # Built per batch (0.2 ms): the SQL fixes its latest valid time, now + max_future, when built.
            sql = validation_sql(self.adapter, columns, self.settings)
            # The checked rows stay in the database (a temporary table) for the statements that store them.
            run(con, "__batch", table, f"CREATE OR REPLACE TEMP TABLE __valid AS {sql}" if not where
                else f"INSERT INTO __valid {sql}")
            where.extend((r, i) for r, i, _ in rows)

        bad_rows: list[tuple[int, str, str, str | None]] = []
        if where:
            inserted = [(str(event_id), ts) for event_id, ts in self._insert()]
            self._stored_now.extend(inserted)
            new = {event_id for event_id, _ in inserted}
            valid = con.execute(f"""SELECT line, CAST(event_id AS VARCHAR) AS event_id, problem_field, problem_reason,
                                           content, {', '.join(c for c in EVENT_COLUMNS if c != 'event_id')}
                                    FROM __valid ORDER BY line""")
            header = [d[0] for d in valid.description]
            accepted: set[str] = set()
            items = False
            for values in valid.fetchall():
                row = dict(zip(header, values))
                r, i = where[row["line"] - 1]
                if row["problem_field"] is not None:
                    outcomes[r][i] = {"index": i, "status": "rejected", "field": row["problem_field"],
                                      "reason": row["problem_reason"]}
                    bad_rows.append((i + 1, row["problem_field"], row["problem_reason"], row["content"]))
                    continue
                items = items or row["item_id"] is not None
                event_id = row["event_id"]
                if event_id not in new or event_id in accepted:  # stored before, or earlier in this batch
                    outcomes[r][i] = {"index": i, "status": "duplicate", "event_id": event_id}
                    continue
                accepted.add(event_id)
                outcomes[r][i] = {"index": i, "status": "accepted", "event_id": event_id}
                stored[r].append(_stored_event(row))
            if items:
                self._upsert_items(ingest_id)
        for r, reject in structural:
            line, field_name, reason, content = writer._reject_row(Path(SOURCE), reject)
            outcomes[r][line - 1] = {"index": line - 1, "status": "rejected", "field": field_name, "reason": reason}
            bad_rows.append((line, field_name, reason, content))
        if bad_rows:
            writer._insert_quarantine(SOURCE, pa.table({
                "line": pa.array([b[0] for b in bad_rows], pa.int64()),
                "problem_field": pa.array([b[1] for b in bad_rows], pa.string()),
                "problem_reason": pa.array([b[2] for b in bad_rows], pa.string()),
                "content": pa.array([b[3] for b in bad_rows], pa.string()),
            }))
        results = [WriteResult([o for o in outcome if o is not None], events)
                   for outcome, events in zip(outcomes, stored)]
        totals = [sum(len(r.items) for r in group), sum(r.count("accepted") for r in results),
                  sum(r.count("rejected") for r in results), sum(r.count("duplicate") for r in results)]
        con.execute("UPDATE ingests SET read = read + ?, stored = stored + ?, quarantined = quarantined + ?, "
                    "duplicates = duplicates + ? WHERE ingest_id = ?", [*totals, ingest_id])
        return results


    def _write_plain(self, group: list[_Request], rows: list[list[dict[str, Any]]]) -> list[WriteResult]:
        """Store a group of plain events, already checked and normalized by the fast path."""
        con = self.con
        flat = [row for request_rows in rows for row in request_rows]
        cols = ", ".join(EVENT_COLUMNS)
        late = [r["ts"] for r in flat if r["ts"] < self._since]
        changed = self._changed_items(flat)
        counts_due = time.monotonic() - self._counted_at >= COUNTS_EVERY_S
        if self.ingest_id is None or late or changed or counts_due:  # more than the one insert
            self._begin()
        ingest_id = self._open_ingest()
        if late:  # only these can be in the store unremembered
            check = ("WHERE v.ts >= ? OR NOT EXISTS (SELECT 1 FROM events e WHERE e.ts BETWEEN ? AND ? "
                     "AND e.event_id = CAST(v.event_id AS UUID))")
            params = [self._since, min(late), max(late)]
        else:
            check, params = "", []
        # Events remembered as stored are duplicates without a look at the store; of the rest, the
        # first of each id in the group is a candidate.
        candidates: dict[str, dict[str, Any]] = {}
        for row in flat:
            event_id = str(row["event_id"])
            if event_id not in self._recent and event_id not in candidates:
                candidates[event_id] = row
        inserted: list[tuple[str, datetime]] = []
        if candidates:
            rows_param = [{c: (event_id if c == "event_id" else row[c]) for c in EVENT_COLUMNS}
                          for event_id, row in candidates.items()]
            if late:  # only these can be in the store unremembered: RETURNING says which were new
                # One LIST(STRUCT) parameter, so that the store check can filter it as a relation.
                inserted = [(str(event_id), ts) for event_id, ts in con.execute(f"""
                    INSERT INTO events ({cols}, ingest_id)
                    SELECT {cols}, {int(ingest_id)} FROM (SELECT unnest(?::{_PLAIN_ROWS}, recursive := true)) v
                    {check} RETURNING event_id, ts""", [rows_param, *params]).fetchall()]
            else:  # every candidate is new: remembered ids cover the store from ``_since`` on
                # A VALUES list here: without a WHERE it binds faster than the struct list for the
                # few events of a live transaction (1.2 against 2.1 ms for one event, 2.4 against
                # 2.7 for ten).
                marks = ", ".join([f"({', '.join('?' * len(EVENT_COLUMNS))}, {int(ingest_id)})"] * len(rows_param))
                con.execute(f"INSERT INTO events ({cols}, ingest_id) VALUES {marks}",
                            [row[c] for row in rows_param for c in EVENT_COLUMNS])
                inserted = [(event_id, row["ts"]) for event_id, row in candidates.items()]
        self._stored_now.extend(inserted)
        new = {event_id for event_id, _ in inserted}
        if changed:
            self._upsert_plain_items(changed, ingest_id)

        results, accepted = [], set()
        for request_rows in rows:
            outcomes, stored = [], []
            for i, row in enumerate(request_rows):
                event_id = str(row["event_id"])
                if event_id not in new or event_id in accepted:
                    outcomes.append({"index": i, "status": "duplicate", "event_id": event_id})
                    continue
                accepted.add(event_id)
                outcomes.append({"index": i, "status": "accepted", "event_id": event_id})
                stored.append({**{c: row[c] for c in EVENT_COLUMNS}, "event_id": event_id})
            results.append(WriteResult(outcomes, stored))
        counts = self._counts
        counts[0] += len(flat)
        counts[1] += len(accepted)
        counts[2] += len(flat) - len(accepted)
        if counts_due:
            self._flush_counts()
        return results

    def _flush_counts(self) -> None:
        """Add the plain path's pending counts to the live ingest's row (inside the caller's
        transaction, or on its own). They wait up to COUNTS_EVERY_S: one statement less per write."""
        read, stored, duplicates = self._counts
        if read and self.ingest_id is not None:
            self.con.execute("UPDATE ingests SET read = read + ?, stored = stored + ?, duplicates = duplicates + ? "
                             "WHERE ingest_id = ?", [read, stored, duplicates, self.ingest_id])
        self._counts = [0, 0, 0]
        self._counted_at = time.monotonic()

    def _forget_items(self) -> None:
        """Drop the writer's memory of the catalog: every item is upserted again, with ON CONFLICT."""
        self._items.clear()
        self._items_complete = False

    def _changed_items(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """The catalog update of ``_upsert_items`` for plain events: each item's latest non-empty
        name, category, brand and price, for the items where that differs from what the writer last
        wrote (an unchanged item is not upserted; ``items.ingest_id`` is then the ingest that last
        changed it)."""
        latest: dict[str, list[Any]] = {}
        for row in rows:  # each item's latest non-empty values, in batch order
            if row["item_id"] is None:
                continue
            values = latest.setdefault(row["item_id"], [None] * 4)
            for k, name in enumerate(("item_name", "category", "brand", "price")):
                if row[name] is not None:
                    values[k] = row[name]
        return {item: values for item, values in latest.items()
                if item not in self._items
                or any(v is not None and v != old for v, old in zip(values, self._items[item]))}

    def _upsert_plain_items(self, changed: dict[str, list[Any]], ingest_id: int) -> None:
        self._catalog_written = True
        known = self._items
        new = [item for item in changed if item not in known] if self._items_complete else []
        update = [item for item in changed if item in known] if self._items_complete else list(changed)
        for items, conflict in ((new, ""), (update, """
                ON CONFLICT (item_id) DO UPDATE SET
                    name = coalesce(excluded.name, name), category = coalesce(excluded.category, category),
                    brand = coalesce(excluded.brand, brand), price = coalesce(excluded.price, price),
                    ingest_id = excluded.ingest_id""")):
            if items:
                marks = ", ".join([f"(?, ?, ?, ?, CAST(? AS DOUBLE), {int(ingest_id)})"] * len(items))
                self.con.execute(f"INSERT INTO items VALUES {marks}{conflict}",
                                 [v for item in items for v in (item, *changed[item])])
        if len(self._items) + len(changed) > MAX_CACHED_ITEMS:
            self._forget_items()
        for item, values in changed.items():
            old = self._items.get(item, [None] * 4)
            self._items[item] = [v if v is not None else o for v, o in zip(values, old)]


def run(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str) -> list[tuple]:
    """Run ``sql`` with ``table`` visible as ``name``. Register and execute: for live traffic's small
    batches a third of the time of ingest's ``on()`` (DuckDB 2's relation API parses the text in
    Python); ingest avoids it only because a long transaction would keep every big batch in memory."""
    con.register(name, table)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.unregister(name)


def _stored_event(row: dict[str, Any]) -> dict[str, Any]:
    """A stored event as the bus and the decisions hook get it: the events table's columns, the
    user as their pseudonym, ``properties`` parsed."""
    event = {c: row[c] for c in EVENT_COLUMNS}
    event["event_id"] = str(event["event_id"])
    if event["properties"] is not None:
        event["properties"] = json.loads(event["properties"])
    return event


# -- the route ---------------------------------------------------------------------------------

class EventResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    field: str | None = None
    reason: str | None = None


class EventsPublic(BaseModel):
    """What became of each event: stored, already stored (same event id), or rejected and why."""

    received: int
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


_EVENT_SCHEMA = {
    "type": "object",
    "description": "One event in the canonical fields; other fields go to its properties.",
    "required": ["user_id", "ts", "event_type"],
    "properties": {
        "user_id": {"type": "string", "description": "The shop's own user id (pseudonymized on arrival)."},
        "ts": {"type": "string", "description": "ISO-8601 time; without a zone, UTC.", "example": "2024-01-31 13:45:00"},
        "event_type": {"type": "string", "example": "product_view"},
        **{name: {"type": "string"} for name in ("session_id", "item_id", "category", "brand", "channel", "device",
                                                 "query", "text", "item_name")},
        **{name: {"type": "number"} for name in ("price", "quantity", "rating")},
        "properties": {"type": "object"},
    },
    "additionalProperties": True,
}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
    _EVENT_SCHEMA,
    {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": _EVENT_SCHEMA,
                                                                         "maxItems": MAX_EVENTS}}},
]}}}}}

router = APIRouter(tags=["events"])


def _writer(request: Request) -> EventWriter:
    return request.app.state.service.writer


WriterDep = Annotated[EventWriter, Depends(_writer)]


@router.post("/v1/events", response_model=EventsPublic, openapi_extra=_BODY,
             responses={422: {"model": EventsPublic, "description": "Every event was rejected (and quarantined)."}})
async def post_events(request: Request, _: Ingest, writer: WriterDep) -> JSONResponse:
    """Store one event or a batch: validated like batch ingest, pseudonymized, idempotent by event id."""
    status, body = await store_events(writer, await request.body())
    return JSONResponse(body, status_code=status)


async def store_events(writer: EventWriter, body: bytes) -> tuple[int, dict[str, Any]]:
    """The reply to a request body of events, once they are committed: 200, or 422 when every
    event was rejected. Raises ``HTTPException`` (before anything is written) for a malformed body."""
    items = events_of(body)
    try:
        future = writer.submit(items)
    except RuntimeError:
        raise HTTPException(503, "The service is shutting down; send the events again shortly.") from None
    result = await asyncio.wrap_future(future)
    reply = result.to_dict()
    return 200 if reply["accepted"] or reply["duplicates"] else 422, reply


async def lane(state: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    """``POST /v1/events`` for ``_fastlane.FastLane``."""
    return await store_events(state.service.writer, body)


def events_of(body: bytes) -> list[Any]:
    """The events of a request body: one event object, or ``{"events": [...]}``."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"The body is not valid JSON ({getattr(exc, 'msg', exc)}); send one event object "
                                 'or {"events": [...]}.') from None
    if not isinstance(payload, dict):
        raise HTTPException(422, f'Send one event object or {{"events": [...]}}. Got a JSON {type(payload).__name__}.')
    if "events" not in payload:
        return [payload]
    items = payload["events"]
    if not isinstance(items, list):
        raise HTTPException(422, f'"events" must be a list of event objects. Got a JSON {type(items).__name__}.')
    if not items:
        raise HTTPException(422, 'The batch holds no events; send one event object or {"events": [...]} with at '
                                 "least one.")
    if len(items) > MAX_EVENTS:
        raise HTTPException(413, f"A batch holds at most {MAX_EVENTS:,} events; this one has {len(items):,}. Split "
                                 "it, or load files with `journeymap ingest`.")
    return items

