"""Online state: each user's latest events and current session, and the live model.

The event store answers "everything about a user" (profiles, journeys); this answers "what is the
user doing right now" in microseconds, from the latest ``RECENT`` events of each user. It is kept
in process memory by default, or in Redis (``RedisOnline``, one sorted set per user) so that
several processes share it. A user the state has not seen since it started is read from the store
once (``seed``), so a restart or a batch ingest never leaves a user with half a history.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("journeymap.serve")

RECENT = 500  # events kept per user: more than any sequence model here reads (max_len <= 200)
MAX_EVENTS = 500_000  # events kept in process memory (about 0.5 GB); the least recently active users go first
MAX_USERS = 200_000  # users kept in process memory, with or without events
# What a prediction or a decision needs of an event (not text, queries or properties).
FIELDS = ("event_id", "ts", "event_type", "session_id", "item_id", "category", "brand", "price", "quantity",
          "channel", "device")
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def online_event(row: dict[str, Any]) -> dict[str, Any]:
    """The fields the online state keeps of a stored event; ``ts`` as fixed-width UTC text."""
    out = {f: row.get(f) for f in FIELDS}
    ts = out["ts"]
    if isinstance(ts, datetime):
        out["ts"] = ts.strftime(TS_FORMAT)
    if out["event_id"] is not None:
        out["event_id"] = str(out["event_id"])
    return out


def _order(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    # The store's order within a user: time, then event id (fixed-width ts text sorts as time).
    return sorted(events, key=lambda e: (e["ts"], e["event_id"] or ""))


def current_session(events: Sequence[dict[str, Any]], gap: timedelta) -> list[dict[str, Any]]:
    """The events of the user's current session, by the store's definition: the last event's given
    session id, else the trailing events with no gap longer than ``gap`` between them."""
    if not events:
        return []
    last = events[-1]
    if last.get("session_id") is not None:
        return [e for e in events if e.get("session_id") == last["session_id"]]
    session = [last]  # latest first while walking back
    for event in reversed(events[:-1]):
        if event.get("session_id") is not None or _ts(session[-1]) - _ts(event) > gap:
            break
        session.append(event)
    return session[::-1]


def session_state(events: Sequence[dict[str, Any]], gap: timedelta) -> dict[str, Any] | None:
    """A summary of the user's current session (None before their first event)."""
    session = current_session(events, gap)
    if not session:
        return None
    types: dict[str, int] = {}
    for e in session:
        types[e["event_type"]] = types.get(e["event_type"], 0) + 1
    items = [e["item_id"] for e in session if e.get("item_id") is not None]
    return {
        "session_id": session[-1].get("session_id"),
        "started": session[0]["ts"],
        "last_event": session[-1]["ts"],
        "events": len(session),
        "event_types": types,
        "items": items[-20:],
        "carted": sorted({e["item_id"] for e in session if e["event_type"] == "add_to_cart" and e.get("item_id")}),
        "purchased": "purchase" in types,
        "device": next((e["device"] for e in session if e.get("device")), None),
        "channel": next((e["channel"] for e in session if e.get("channel")), None),
    }


def _ts(event: dict[str, Any]) -> datetime:
    return datetime.strptime(event["ts"], TS_FORMAT)


class OnlineState:
    """Each user's latest events. ``recent`` is None for a user not yet seen (seed from the store)."""

    def apply(self, events: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def recent(self, user: str) -> list[dict[str, Any]] | None:
        raise NotImplementedError

    def seed(self, user: str, events: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class MemoryOnline(OnlineState):
    """In-process state: user -> {event id: event}, the least recently active users evicted first."""

    def __init__(self, max_events: int = MAX_EVENTS, recent: int = RECENT) -> None:
        self._users: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._seeded: set[str] = set()
        self._lock = threading.Lock()
        self._events = 0
        self.max_events = max_events
        self.keep = recent

    def apply(self, events: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            for row in events:
                event = online_event(row)
                user = row["user_id"]
                held = self._users.get(user)
                if held is None:
                    held = self._users[user] = {}
                self._users.move_to_end(user)
                if event["event_id"] not in held:
                    self._events += 1
                held[event["event_id"]] = event
                if len(held) > self.keep * 5 // 4:  # trim now and then, not on every event
                    kept = _order(held.values())[-self.keep:]
                    self._users[user] = {e["event_id"]: e for e in kept}
                    self._events -= len(held) - len(kept)
            self._evict()

    def _evict(self) -> None:
        while len(self._users) > 1 and (self._events > self.max_events or len(self._users) > MAX_USERS):
            user, held = self._users.popitem(last=False)
            self._events -= len(held)
            self._seeded.discard(user)

    def recent(self, user: str) -> list[dict[str, Any]] | None:
        with self._lock:
            if user not in self._seeded:
                return None
            return _order(self._users.get(user, {}).values())[-self.keep:]

    def seed(self, user: str, events: Sequence[dict[str, Any]]) -> None:
        self.apply(events)
        with self._lock:
            self._users.setdefault(user, {})
            self._users.move_to_end(user)
            self._seeded.add(user)
            self._evict()


class RedisOnline(OnlineState):
    """Shared state in Redis: a sorted set of event JSON per user (score: time), which makes applying
    an event twice harmless, and a hash with the user's seeded flag and applied stream position."""

    TTL_S = 60 * 60 * 24 * 30  # a user quiet for a month is read from the store again

    def __init__(self, client: Any, prefix: str, recent: int = RECENT) -> None:
        self.r = client
        self.prefix = prefix
        self.keep = recent

    def events_key(self, user: str) -> str:
        return f"{self.prefix}:recent:{user}"

    def user_key(self, user: str) -> str:
        return f"{self.prefix}:user:{user}"

    def add(self, pipe: Any, events: Sequence[dict[str, Any]]) -> set[str]:
        """Queue the events' writes on a pipeline; returns the users touched."""
        users: dict[str, dict[str, float]] = {}
        for row in events:
            event = online_event(row)
            member = json.dumps(event, sort_keys=True, separators=(",", ":"))
            users.setdefault(row["user_id"], {})[member] = _score(event["ts"])
        for user, members in users.items():
            key = self.events_key(user)
            pipe.zadd(key, members)
            pipe.zremrangebyrank(key, 0, -self.keep - 1)
            pipe.expire(key, self.TTL_S)
        return set(users)

    def apply(self, events: Sequence[dict[str, Any]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        self.add(pipe, events)
        pipe.execute()

    def recent(self, user: str) -> list[dict[str, Any]] | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.user_key(user), "seeded")
        pipe.zrange(self.events_key(user), -self.keep, -1)
        seeded, members = pipe.execute()
        if not seeded:
            return None
        return _order(json.loads(m) for m in members)

    def seed(self, user: str, events: Sequence[dict[str, Any]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        self.add(pipe, events)
        pipe.hset(self.user_key(user), "seeded", "1")
        pipe.expire(self.user_key(user), self.TTL_S)
        pipe.execute()

    def close(self) -> None:
        self.r.close()


def _score(ts: str) -> float:
    # Microseconds since the epoch: exact in a double until the year 2255.
    moment = datetime.strptime(ts, TS_FORMAT)
    return float((moment - datetime(1970, 1, 1)) // timedelta(microseconds=1))


# -- the live model ----------------------------------------------------------------------------

class LiveModel:
    """A model file, reloaded when a newer one replaces it, without a restart or a dropped request.

    A watcher thread looks at the file's mtime, size and inode every ``poll_seconds``; a changed
    file is loaded in that thread while requests keep using the old model, then swapped in with one
    assignment. A file that fails to load (half-copied, say) leaves the old model serving and is
    tried again when it changes again.
    """

    def __init__(self, path: str | Path, poll_seconds: float = 1.0, loader: Callable[[Path], Any] | None = None,
                 on_load: Callable[[bool], None] | None = None) -> None:
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._on_load = on_load or (lambda ok: None)
        # (model, version, loaded at): one tuple, so a reader never pairs a model with another's version
        self.current: tuple[Any, int, str] | None = None
        self.error: str | None = None
        self._signature: tuple | None = None
        self._failed: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load the model now (a bad file at start is an error), then watch it."""
        signature = self._stat()
        if signature is None:
            from journeymap.exceptions import FormatError

            raise FormatError(f"No model file at {self.path}; train one with `journeymap train --out {self.path}`.")
        self._swap(self._load(), signature)
        self._thread = threading.Thread(target=self._watch, name="journeymap-model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def version(self) -> int:
        return self.current[1] if self.current else 0

    def describe(self, current: tuple[Any, int, str] | None = None) -> dict[str, Any]:
        model, version, loaded_at = current or self.current or (None, 0, None)
        return {"path": str(self.path), "version": version, "loaded_at": loaded_at,
                "class": type(model).__name__ if model is not None else None, "error": self.error}

    def _load(self) -> Any:
        if self._loader is not None:
            return self._loader(self.path)
        from journeymap.models import load_model

        return load_model(self.path)

    def _swap(self, model: Any, signature: tuple) -> None:
        # One reference assignment: a request holds the old model or the new one, never a mix.
        self.current = (model, self.version + 1, datetime.now().replace(microsecond=0).isoformat(sep=" "))
        self._signature = signature
        self.error = None
        self._on_load(True)

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            signature = self._stat()
            if signature is None or signature in (self._signature, self._failed):
                continue
            started = time.perf_counter()
            try:
                model = self._load()
            except Exception as exc:  # noqa: BLE001 - the old model keeps serving
                self._failed = signature
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("model file %s changed but did not load (%s); still serving version %d",
                            self.path, self.error, self.version)
                self._on_load(False)
                continue
            self._swap(model, signature)
            log.info("loaded model version %d from %s in %.2f s", self.version, self.path,
                     time.perf_counter() - started)


def predict(model: Any, events: Sequence[dict[str, Any]], k: int, gap: timedelta) -> dict[str, Any]:
    """What the user does next: the model's ``predict_user`` where it has one (the behaviour model),
    else the next items after the current session (any next-item model's ``predict_next``)."""
    if hasattr(model, "predict_user"):
        return model.predict_user(list(events), k=k, gap=gap)
    prefix = [str(e["item_id"]) for e in current_session(events, gap) if e.get("item_id") is not None]
    items, scores = model.predict_next([prefix], k=k)
    return {"next_items": [{"item": str(i), "score": float(s)} for i, s in zip(items[0].tolist(), scores[0].tolist())]}
