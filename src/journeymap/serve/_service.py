"""The running service: the open store and its writer, the profile updater, the bus and the model.

Routes reach it as ``ServiceDep``. The store is opened once, read-write, by this process: the
writer thread holds the write connection, and every read runs on a cursor of the same database,
so reads see each commit at once (DuckDB refuses a second, read-only open of the file in one
process, so the library's own ``Store(path, read_only=True)`` cannot be used here).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import duckdb
from fastapi import Depends, Request

from journeymap.config import DEMO_SECRET, Settings
from journeymap.privacy.pseudonymize import Pseudonymizer
from journeymap.serve._bus import Bus
from journeymap.serve._live import LiveProfiles
from journeymap.serve._metrics import Metrics
from journeymap.serve._online import RECENT, LiveModel
from journeymap.store import Store

log = logging.getLogger("journeymap.serve")

Hook = Callable[[list[dict[str, Any]]], None]
DECISION_PROFILES = 100_000  # users whose decision features are kept between profile updates


@functools.cache
def _decision_fields_sql() -> str:
    from journeymap.policy._rewards import PROFILE_CATEGORICAL, PROFILE_NUMERIC

    # Only the fields a decision reads: a tenth of the time of the whole row.
    return (f"SELECT user_id, {', '.join((*PROFILE_NUMERIC, *PROFILE_CATEGORICAL))}, "
            "top_categories[1].name, top_brands[1].name FROM profiles")


def _decision_profile(names: list[str], row: tuple) -> dict[str, Any]:
    """A decision's profile from a row of ``_decision_fields_sql()`` (without its user id)."""
    *values, category, brand = row
    data = dict(zip(names, values))
    data["top_categories"] = [{"name": category}] if category is not None else []
    data["top_brands"] = [{"name": brand}] if brand is not None else []
    return data


def default_db_threads() -> int:
    """DuckDB threads for the service: every core this process may use but one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class NoProfiles(Exception):
    """The store has no profiles table yet."""


class Service:
    """Everything the routes share. ``start()`` opens the store and starts the threads; ``stop()``
    writes what is queued, seals the live ingest and closes the store."""

    def __init__(self, store_path: str | Path, settings: Settings, secret: str, bus: Bus, metrics: Metrics, *,
                 model_path: str | Path | None = None, model_poll_seconds: float = 1.0,
                 profile_wait: float = 10.0, update_profiles: bool = True, profile_refresh_seconds: float = 30.0,
                 db_threads: int | None = None) -> None:
        self.store_path = Path(store_path).resolve()
        self.settings = settings
        self.pseudonymizer = Pseudonymizer(secret)
        self.demo = secret == DEMO_SECRET
        self.bus = bus
        self.metrics = metrics
        self.profile_wait = profile_wait
        self.model = None if model_path is None else LiveModel(
            model_path, model_poll_seconds,
            on_load=lambda ok: metrics.inc("journeymap_model_loads_total" if ok else "journeymap_model_load_errors_total"))
        metrics.gauge("journeymap_model_version", lambda: self.model.version if self.model else 0)
        self.hooks: list[Hook] = []  # called with each commit's new events (the decisions' reward joins)
        self._update_profiles = update_profiles
        self.profile_refresh_seconds = profile_refresh_seconds
        self.db_threads = db_threads if db_threads is not None else default_db_threads()
        self.store: Store | None = None
        self.writer = None
        self.profiles = None
        self.live: LiveProfiles | None = None
        self._cursor_lock = threading.Lock()
        self._readers: duckdb.DuckDBPyConnection | None = None
        self._meta_cache: tuple[int | None, dict[str, Any] | None] | None = None
        self._decision_profiles: tuple[int | None, dict[str, dict[str, Any] | None]] | None = None
        self._snapshot: tuple[int, tuple[list[str], dict[str, tuple]]] | None = None
        self._snapshot_loading: int | None = None

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        from journeymap.serve._events import EventWriter
        from journeymap.serve._users import ProfileUpdater

        store = Store(self.store_path)
        try:
            con = store.con
            # For the whole database, the profile updates' too: leave a core to the event loop and the
            # writer, whose statements gain nothing from more threads (500 single-event posts/s:
            # p99 lower with 1 thread than DuckDB's default 2 in each of 6 paired runs here).
            con.execute(f"SET threads = {int(self.db_threads)}")
            con.begin()
            store.claim_secret(self.pseudonymizer.fingerprint(), self.demo)
            store.write_stages(dict(self.settings.vocabulary.stage_of))
            con.commit()
            has_events = bool(con.execute("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)").fetchall()[0][0])
        except BaseException:
            store.close()
            raise
        self.store = store
        try:
            self._readers = con.cursor()  # spawns the readers' cursors, so they never touch the writer's connection
            self.writer = EventWriter(store, self.settings, self.pseudonymizer, self.metrics, self._after_commit)
            self.live = LiveProfiles(lambda: self.writer.catalog_writes)
            self.writer.start()
            self.bus.start(lambda metric, n: self.metrics.inc(metric, n))
            if self.model is not None:
                self.model.start()
            if self._update_profiles:
                self.profiles = ProfileUpdater(self.store_path, self.settings, self.writer, self.metrics,
                                               self.profile_refresh_seconds)
                self.profiles.start(stale=has_events)
        except BaseException:
            self.stop()  # a service that cannot start leaves no thread or open store behind
            raise

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.profiles is not None:
            self.profiles.stop()
        if self.model is not None:
            self.model.stop()
        self.bus.close()
        if self.store is not None:
            if self._readers is not None:
                self._readers.close()
                self._readers = None
            self.store.close()
            self.store = None

    # -- for the routes ---------------------------------------------------------------------------
    def pseudonymize(self, raw_id: str) -> str:
        """The pseudonym ingest stores for the shop's user id."""
        return self.pseudonymizer(str(raw_id))

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that sees every committed write; closed on exit."""
        if self._readers is None or self.store is None:
            raise RuntimeError("the service is not running")
        with self._cursor_lock:
            con = self._readers.cursor()
        try:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    def recent_events(self, user: str) -> list[dict[str, Any]]:
        """The user's latest events from the online state, read from the store the first time."""
        online = self.bus.online
        events = online.recent(user)
        if events is not None:
            return events
        columns = ("event_id", "ts", "event_type", "session_id", "item_id", "category", "brand", "price",
                   "quantity", "channel", "device")
        with self.reader() as con:
            rows = con.execute(f"SELECT {', '.join(columns)} FROM events WHERE user_id = ? "
                               "ORDER BY ts DESC, event_id DESC LIMIT ?", [user, RECENT]).fetchall()
        online.seed(user, [{**dict(zip(columns, row)), "user_id": user} for row in rows])
        return online.recent(user) or []

    def profile(self, user: str, check_events: bool = True, live: bool = True
                ) -> tuple[dict[str, Any] | None, bool, bool]:
        """The user's profile as ``journeymap profile --json`` prints it (None when they have none),
        whether they have events, and whether it was computed live (the user has events newer than
        the stored profiles; see ``profiles._live``). Raises ``NoProfiles`` before the first build."""
        from journeymap.profiles._profile import UserProfile

        with self.reader() as con:
            meta = self._profiles_meta(con)
            if meta is None:
                raise NoProfiles(f"{self.store_path} has no profiles yet; the service builds them after the first "
                                 "events. Try again shortly.")
            if live and self.profiles is not None and self.profiles.pending(user):
                row, as_of = self.live.row(con, user, meta, self.profiles.covered)
                if row is not None:
                    return UserProfile.from_row(row, as_of).to_dict(), True, True
            # execute, not con.sql: a relation is planned when made and again when read
            result = con.execute("SELECT * FROM profiles WHERE user_id = ?", [user])
            names = [d[0] for d in result.description]
            rows = [dict(zip(names, row)) for row in result.fetchall()]
            if rows or not check_events:
                has_events = bool(rows)
            else:
                has_events = bool(con.execute("SELECT count(*) FROM events WHERE user_id = ?", [user]).fetchall()[0][0])
        if not rows:
            return None, has_events, False
        as_of = datetime.fromisoformat(meta["as_of"]) if "as_of" in meta else None
        return UserProfile.from_row(rows[0], as_of).to_dict(), True, False

    def _profiles_meta(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
        """The stored profiles' meta row (None before the first build), read again only after an
        update: a decision reads a profile per request, and the catalog query alone took 1.5 ms."""
        from journeymap.profiles._build import has_profiles, profiles_meta

        version = self.profiles.covered if self.profiles is not None else None
        cached = self._meta_cache
        if cached is not None and version is not None and cached[0] == version:
            return cached[1]
        meta = (profiles_meta(con) or {}) if has_profiles(con) else None
        if version is not None:
            self._meta_cache = (version, meta)
        return meta

    def profile_of(self, raw_id: str) -> dict[str, Any] | None:
        """The stored profile's decision features (``policy._rewards.PROFILE_*``) of the shop's user id,
        or None; for the decisions. Stored, not live: a decision must take a few milliseconds, and its
        request carries the session's own context. Kept in memory until the next profile update."""
        user = self.pseudonymize(raw_id)
        cache = self._decision_cache()
        if user in cache:
            return cache[user]
        with self.reader() as con:
            if self._profiles_meta(con) is None:
                cache[user] = None
                return None
            result = con.execute(f"{_decision_fields_sql()} WHERE user_id = ?", [user])
            names = [d[0] for d in result.description][1:]
            rows = result.fetchall()
        data = cache[user] = _decision_profile(names, rows[0][1:]) if rows else None
        return data

    def _decision_cache(self) -> dict[str, dict[str, Any] | None]:
        version = self.profiles.covered if self.profiles is not None else None
        cache = self._decision_profiles
        if cache is None or version is None or cache[0] != version or len(cache[1]) >= DECISION_PROFILES:
            cache = self._decision_profiles = (version, {})
        return cache[1]

    async def profile_of_async(self, raw_id: str) -> dict[str, Any] | None:
        """``profile_of`` for the event loop: from memory (the cache, or every stored profile's
        decision fields, loaded once per profile update), else a store read in a worker thread."""
        cache = self._decision_cache()
        user = self.pseudonymize(raw_id)
        if user in cache:
            return cache[user]
        snapshot = self._decision_snapshot()
        if snapshot is not None:
            names, rows = snapshot
            row = rows.get(user)
            data = cache[user] = None if row is None else _decision_profile(names, row)
            return data
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.profile_of, raw_id)

    def _decision_snapshot(self) -> tuple[list[str], dict[str, tuple]] | None:
        """Every stored profile's decision fields as of the profile updater's current version, or
        None while they load (in a background thread, started here) and when there are more than
        DECISION_PROFILES. One query per update, where a store read per new user cost a worker
        thread and 1-2 ms of CPU for each decision."""
        if self.profiles is None:  # no updater, no version to know the snapshot by
            return None
        version = self.profiles.covered
        snapshot = self._snapshot
        if snapshot is not None and snapshot[0] == version:
            return snapshot[1]
        if self._snapshot_loading != version:
            self._snapshot_loading = version
            threading.Thread(target=self._load_snapshot, args=(version,), name="journeymap-decision-profiles",
                             daemon=True).start()
        return None

    def _load_snapshot(self, version: int) -> None:
        try:
            with self.reader() as con:
                if self._profiles_meta(con) is None:
                    self._snapshot = (version, ([], {}))
                    return
                if con.execute("SELECT count(*) FROM profiles").fetchall()[0][0] > DECISION_PROFILES:
                    return  # too many to hold: each decision reads its user's row
                result = con.execute(_decision_fields_sql())
                names = [d[0] for d in result.description][1:]
                rows = {row[0]: row[1:] for row in result.fetchall()}
            self._snapshot = (version, (names, rows))
        except Exception:  # noqa: BLE001 - decisions read the store meanwhile; the next update tries again
            if self.store is not None:  # not merely a load that outlived the service
                log.exception("loading the decisions' profile fields failed")

    def status(self) -> dict[str, Any]:
        return {
            "store": str(self.store_path),
            "writer": {"running": bool(self.writer and self.writer.alive()),
                       "open_ingest": self.writer.ingest_id if self.writer else None},
            "profiles": None if self.profiles is None else {
                "writes_pending": self.profiles.lag(), "last_run": self.profiles.last_run,
                "last_error": self.profiles.last_error},
            "model": self.model.describe() if self.model else None,
            "bus": self.bus.describe(),
            "demo": self.demo,
        }

    def _after_commit(self, events: list[dict[str, Any]]) -> None:
        """After a commit, before the requests return: live profiles' memory, the bus, the hooks, the
        profile updater."""
        if self.live is not None:
            self.live.committed(events)
        try:
            self.bus.publish(events)
        except Exception:  # noqa: BLE001 - the events are stored; the online state reads them later
            self.metrics.inc("journeymap_bus_errors_total")
            log.exception("publishing %d stored events on the bus failed", len(events))
        for hook in self.hooks:
            try:
                hook(events)
            except Exception:  # noqa: BLE001 - a failing hook must not fail ingest
                self.metrics.inc("journeymap_hook_errors_total")
                log.exception("the new-events hook %r failed", hook)
        if self.profiles is not None:
            self.profiles.mark({e["user_id"] for e in events})


def _service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(_service)]
