"""What live profiles read, kept in memory so that a profile read after an event needs no store scan.

``profiles._live`` computes a user's profile from their events; reading those events scans the
store's user column (10-15 ms on a million events here), and three small reads add 3-5 ms more.
This process is the store's only writer, so it can keep them instead:

* the events of each user whose live profile was read, then every later commit's events of that
  user (``committed``, from the writer's after-commit step), the least recently read users evicted
  past ``max_events``;
* the store's latest event time (the live profile's as-of);
* the catalog prices per category, until the writer next writes the catalog;
* the stored profiles' population fields per user, until the next profile update.

A user's first read registers them before reading the store, and keeps what commits in the
meantime: an event committed before the read is in it, one committed after reaches ``committed``
once registered, and one in both counts once (events are unique by id).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from journeymap.profiles._live import (
    EVENT_FIELDS,
    catalog_prices,
    kept_fields,
    live_profile_row,
    user_events,
)

MAX_EVENTS = 200_000  # events kept for live profiles (about 135 MB: 670 bytes an event, measured)
MAX_KEPT = 100_000  # users whose population fields are kept between profile updates


class LiveProfiles:
    """Live profile rows from memory; ``committed`` must see every commit's stored events."""

    def __init__(self, catalog_version: Callable[[], int], max_events: int = MAX_EVENTS) -> None:
        self.max_events = max_events
        self._catalog_version = catalog_version
        self._lock = threading.Lock()
        self._users: OrderedDict[str, dict[str, tuple]] = OrderedDict()  # user -> {event id: EVENT_FIELDS row}
        self._reading: dict[str, dict[str, tuple]] = {}  # users being read from the store: commits meanwhile
        self._events = 0
        self._seen_latest: datetime | None = None  # the latest event time committed since start
        self._latest: datetime | None = None  # the store's, once read
        self._prices: tuple[int, dict[str, list[tuple]]] = (-1, {})
        self._kept: tuple[Any, dict[str, dict[str, Any]]] = (None, {})

    def committed(self, events: list[dict[str, Any]]) -> None:
        """A commit's stored events (the writer's after-commit step)."""
        with self._lock:
            for event in events:
                ts = event["ts"]
                if self._seen_latest is None or ts > self._seen_latest:
                    self._seen_latest = ts
                if self._latest is not None and ts > self._latest:
                    self._latest = ts
                user = event["user_id"]
                held = self._users.get(user)
                if held is None:
                    held = self._reading.get(user)
                    if held is None:
                        continue
                elif str(event["event_id"]) not in held:
                    self._events += 1
                held[str(event["event_id"])] = _row(event)
            self._evict()

    def row(self, con, user: str, meta: dict[str, Any], profiles_version: Any) -> tuple[dict[str, Any] | None, datetime | None]:
        """``profiles._live.live_profile_row`` for the user, with what memory holds; ``con``: a reader
        of the store, ``profiles_version``: changes with each profile update."""
        return live_profile_row(con, user, meta, events=self._events_of(con, user), cutoff=self._cutoff(con),
                                prices=lambda categories: self._catalog(con, categories),
                                kept=self._kept_of(con, user, profiles_version))

    def _events_of(self, con, user: str) -> list[tuple]:
        with self._lock:
            held = self._users.get(user)
            if held is not None:
                self._users.move_to_end(user)
                return list(held.values())
            pending = self._reading.setdefault(user, {})
        try:
            stored = user_events(con, user)  # after registering: see the module docstring
        finally:
            with self._lock:
                pending = self._reading.pop(user, pending)
        held = {row[0]: row for row in stored}
        held.update(pending)
        with self._lock:
            if user in self._users:  # another read of the same user finished first: theirs is current too
                self._users[user].update(held)
                held = self._users[user]
            else:
                self._users[user] = held
                self._events += len(held)
            self._evict()
            return list(held.values())

    def _evict(self) -> None:
        """Forget the least recently read users past ``max_events`` (with the lock held); a
        forgotten user's next read reads the store again."""
        while self._events > self.max_events and len(self._users) > 1:
            _, gone = self._users.popitem(last=False)
            self._events -= len(gone)

    def _cutoff(self, con) -> datetime | None:
        with self._lock:
            if self._latest is not None:
                return self._latest
        stored = con.execute("SELECT max(ts) FROM events").fetchall()[0][0]
        with self._lock:
            known = [t for t in (stored, self._seen_latest, self._latest) if t is not None]
            self._latest = max(known) if known else None
            return self._latest

    def _catalog(self, con, categories: list[str]) -> list[tuple]:
        version = self._catalog_version()  # before the read: a read that raced a write is kept as older
        with self._lock:
            if self._prices[0] != version:
                self._prices = (version, {})
            held = self._prices[1]
            missing = [c for c in categories if c not in held]
        if missing:
            found: dict[str, list[tuple]] = {c: [] for c in missing}
            for row in catalog_prices(con, missing):
                found[row[0]].append(row)
            with self._lock:
                if self._prices[0] == version:
                    held.update(found)
        else:
            found = {}
        rows = []
        for c in categories:  # in the order given (sorted): the build's ORDER BY category, price
            rows.extend(found[c] if c in found else held[c])
        return rows

    def _kept_of(self, con, user: str, version: Any) -> dict[str, Any]:
        with self._lock:
            if self._kept[0] != version or len(self._kept[1]) >= MAX_KEPT:
                self._kept = (version, {})
            cache = self._kept[1]
            if user in cache:
                return cache[user]
        kept = kept_fields(con, user)
        with self._lock:
            if self._kept[0] == version:
                cache[user] = kept
        return kept


def _row(event: dict[str, Any]) -> tuple:
    return (str(event["event_id"]), *(event.get(name) for name in EVENT_FIELDS[1:]))
