"""The live-event bus: how stored events reach the online state (and any other consumer).

Every event the service commits is published once. ``MemoryBus`` (the default) applies it to the
process's own online state before the request returns. ``RedisBus`` (``--bus redis://HOST:PORT``)
appends it to a Redis stream; a consumer group shares the stream among every process that joins it
(the service itself, and ``journeymap serve-worker`` processes), each event applied to the online
state in Redis by exactly one of them, and a dead consumer's events claimed by another. A
``predictions`` read waits until the events its user posted to this process have been applied, so
the bus adds no stale reads. A Kafka client would be one more class with the same four methods.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse

from journeymap.exceptions import ConfigError, MissingDependencyError
from journeymap.serve._online import (
    MemoryOnline,
    OnlineState,
    RedisOnline,
    online_event,
)

log = logging.getLogger("journeymap.serve")

STREAM_MAXLEN = 1_000_000  # entries kept in the stream (approximately): hours of traffic to replay
CLAIM_IDLE_MS = 30_000  # an entry unacknowledged this long belongs to a dead consumer: take it over

# Set a user's applied stream position only forward: consumers may finish out of order.
_ADVANCE = """
local current = redis.call('HGET', KEYS[1], 'applied')
if current then
  local cm, cs = string.match(current, '(%d+)-(%d+)')
  local nm, ns = string.match(ARGV[1], '(%d+)-(%d+)')
  cm, cs, nm, ns = tonumber(cm), tonumber(cs), tonumber(nm), tonumber(ns)
  if nm < cm or (nm == cm and ns <= cs) then return 0 end
end
redis.call('HSET', KEYS[1], 'applied', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class Bus:
    """Publishes stored events; the online state they feed is ``online``."""

    name = ""
    online: OnlineState

    def start(self, count: Callable[[str, int], None] | None = None) -> None:
        """Begin consuming; ``count(metric, n)`` is told of applied events and errors."""

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def wait_applied(self, user: str, timeout: float) -> bool:
        """Wait until the events this process published for ``user`` are in the online state."""
        return True

    def close(self) -> None:
        self.online.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name}


class MemoryBus(Bus):
    """In-process: publishing applies the events to this process's online state at once."""

    name = "memory"

    def __init__(self, online: OnlineState | None = None) -> None:
        self.online = online or MemoryOnline()

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        self.online.apply(events)


class RedisBus(Bus):
    """Redis Streams with a consumer group; the online state lives in Redis too."""

    name = "redis"

    def __init__(self, url: str, *, consumer: str | None = None, group: str = "online",
                 block_ms: int = 1000, claim_idle_ms: int = CLAIM_IDLE_MS, batch: int = 500) -> None:
        try:
            import redis
        except ImportError:
            raise MissingDependencyError("The Redis bus needs the redis client: pip install 'journeymap[serve]'.") from None
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
            raise ConfigError(f"--bus takes memory or redis://HOST:PORT[/DB][?prefix=NAME]. Got '{url}'.")
        query = parse_qs(parsed.query)
        self.prefix = query.pop("prefix", ["journeymap"])[0]
        self.url = parsed._replace(query="").geturl()
        self._redis = redis
        self.r = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10,
                                      health_check_interval=30)
        self.stream = f"{self.prefix}:events"
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.batch = batch
        self.online = RedisOnline(self.r, self.prefix)
        self._advance = self.r.register_script(_ADVANCE)
        self._published: OrderedDict[str, str] = OrderedDict()  # user -> last stream id published here
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count: Callable[[str, int], None] = lambda metric, n: None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "stream": self.stream, "group": self.group, "consumer": self.consumer}

    def ping(self) -> None:
        try:
            self.r.ping()
        except self._redis.RedisError as exc:
            raise ConfigError(f"Cannot reach Redis at {self.url}: {exc}. Start redis-server or fix --bus.") from None

    def ensure_group(self) -> None:
        """Create the stream and the group if needed, and join it (visible in XINFO CONSUMERS at once,
        not only once an entry comes this consumer's way)."""
        try:
            self.r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except self._redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists: join it
                raise
        self.r.xgroup_createconsumer(self.stream, self.group, self.consumer)

    # -- producing ------------------------------------------------------------------------------
    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        pipe = self.r.pipeline(transaction=False)
        users = []
        for row in events:
            event = online_event(row)
            event["user_id"] = row["user_id"]
            pipe.xadd(self.stream, {"e": json.dumps(event, separators=(",", ":"))},
                      maxlen=STREAM_MAXLEN, approximate=True)
            users.append(row["user_id"])
        ids = pipe.execute()
        with self._lock:
            for user, entry in zip(users, ids):
                self._published[user] = entry
                self._published.move_to_end(user)
            while len(self._published) > 100_000:
                self._published.popitem(last=False)

    def wait_applied(self, user: str, timeout: float) -> bool:
        with self._lock:
            target = self._published.get(user)
        if target is None:
            return True
        deadline = time.monotonic() + timeout
        key = self.online.user_key(user)
        delay = 0.0005
        while True:
            applied = self.r.hget(key, "applied")
            if applied is not None and _stream_id(applied) >= _stream_id(target):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    # -- consuming ------------------------------------------------------------------------------
    def start(self, count: Callable[[str, int], None] | None = None) -> None:
        self.ping()
        self.ensure_group()
        if count is not None:
            self._count = count
        self._thread = threading.Thread(target=self.run, name="journeymap-bus", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Consume until ``close``: read new entries, now and then claim a dead consumer's."""
        last_claim = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_claim > self.claim_idle_ms / 2000:
                    last_claim = time.monotonic()
                    self.claim()
                self.consume_once(self.block_ms)
            except self._redis.RedisError as exc:
                if self._stop.is_set():
                    break
                self._count("journeymap_bus_errors_total", 1)
                log.warning("bus consumer %s: %s; retrying in 1 s", self.consumer, exc)
                self._stop.wait(1.0)

    def consume_once(self, block_ms: int | None = None) -> int:
        """Apply one batch of new entries; returns how many."""
        reply = self.r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.batch,
                                  block=block_ms)
        entries = reply[0][1] if reply else []
        return self._apply(entries)

    def claim(self) -> int:
        """Take over and apply entries another consumer read but never acknowledged."""
        total = 0
        start = "0-0"
        while True:
            reply = self.r.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                      start_id=start, count=self.batch)
            start, entries = reply[0], reply[1]
            total += self._apply([e for e in entries if e and e[1]])
            if start == "0-0" or not entries:
                return total

    def _apply(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        if not entries:
            return 0
        events = []
        applied: dict[str, str] = {}
        for entry_id, fields in entries:
            event = json.loads(fields["e"])
            events.append(event)
            applied[event["user_id"]] = entry_id  # entries come in stream order
        pipe = self.r.pipeline(transaction=False)
        self.online.add(pipe, events)
        for user, entry_id in applied.items():
            self._advance(keys=[self.online.user_key(user)], args=[entry_id, self.online.TTL_S], client=pipe)
        pipe.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
        pipe.execute()
        self._count("journeymap_bus_events_applied_total", len(events))
        return len(events)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.block_ms / 1000 + 5)
        self.r.close()


def _stream_id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def make_bus(spec: str | Bus | None) -> Bus:
    """``memory`` (default) or ``redis://HOST:PORT[/DB][?prefix=NAME]``."""
    if isinstance(spec, Bus):
        return spec
    if spec in (None, "", "memory"):
        return MemoryBus()
    if str(spec).startswith(("redis://", "rediss://")):
        return RedisBus(str(spec))
    raise ConfigError(f"--bus takes memory or redis://HOST:PORT. Got '{spec}'.")
