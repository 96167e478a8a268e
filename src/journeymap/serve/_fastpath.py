"""Live events that need no SQL: the common, clean event checked and normalized in Python.

Batch ingest's validation is one DuckDB query (``events.validate``), the single definition of the
rules and their messages. Planning that query costs 10-20 ms however few rows it checks, which
caps a live service at a few dozen small writes a second. Most live events are plain: canonical
fields only, ISO timestamps, numbers as numbers, known event types. For those, this module
computes exactly the row the query would give (the same normalized values and the same content
id); anything else, including every event with a problem, goes through the query, so every
message still comes from it. ``tests/serve/test_fastpath.py`` checks the two agree, value for
value, on generated events, and that each event this module passes the query accepts.

What "plain" means is deliberately narrow: each condition below is one the query's own parsing
agrees with Python on (DuckDB's ``trim`` removes fewer blanks than ``str.strip``, so a value
with any blank at either end goes to the query).
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from journeymap.config import Settings
from journeymap.events.validate import EVENT_COLUMNS, TEXT_FIELDS
from journeymap.privacy.pseudonymize import Pseudonymizer

# The fields a plain event may have: the canonical ones without ``properties`` (an object there,
# or any other key, becomes the event's properties JSON, which the query builds).
FIELDS = frozenset(("user_id", "ts", "event_type", "item_name", "price", "quantity", "rating", *TEXT_FIELDS))
NUMBERS = ("price", "quantity", "rating")
# ISO time without a zone (UTC), or with a trailing Z / UTC, which the query strips the same way.
_TS = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z| ?UTC)?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_SEP, _NULL = chr(31), chr(0)


class FastPath:
    """``row(event)``: the stored row of a plain, valid event, or None (the query decides)."""

    def __init__(self, settings: Settings, event_map: Mapping[str, str], pseudonymizer: Pseudonymizer) -> None:
        limits = settings.limits
        self.earliest = limits.earliest
        self.max_price = limits.max_price
        self.max_quantity = limits.max_quantity
        self.rating = (limits.rating_min, limits.rating_max)
        self.max_bytes = limits.max_field_bytes
        self.event_map = dict(event_map)
        self.pseudonymizer = pseudonymizer

    def row(self, event: Any, latest: datetime) -> dict[str, Any] | None:
        """The events-table row (plus ``item_name``) the query would store, or None."""
        if not isinstance(event, dict) or not FIELDS.issuperset(event):
            return None
        text: dict[str, str | None] = {}
        for name, value in event.items():
            if value is None:
                text[name] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return None
            value = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
            # DuckDB's trim removes the Unicode space separators, all of which str.isspace knows.
            if not value or value[0].isspace() or value[-1].isspace():
                return None  # blank, or blanks the query would trim
            if len(value) > self.max_bytes // 4 and len(value.encode()) > self.max_bytes:
                return None
            text[name] = value

        user, ts_text, kind = text.get("user_id"), text.get("ts"), text.get("event_type")
        if user is None or ts_text is None or kind is None:
            return None
        event_type = self.event_map.get(kind)
        if event_type is None:
            return None
        ts = _timestamp(ts_text)
        if ts is None or ts < self.earliest or ts > latest:
            return None

        numbers: dict[str, float | int | None] = {}
        for name in NUMBERS:
            raw = text.get(name)
            if raw is None:
                numbers[name] = None
                continue
            if not _NUMBER.fullmatch(raw):
                return None
            value = float(raw)
            if not math.isfinite(value):
                return None
            if name == "rating":
                if not self.rating[0] <= value <= self.rating[1]:
                    return None
            elif value < 0 or value > (self.max_price if name == "price" else self.max_quantity):
                return None
            if name == "quantity":
                if value != math.floor(value):
                    return None
                value = int(value)
            numbers[name] = value

        pseudonym = self.pseudonymizer(user)
        parts = [pseudonym, ts.strftime("%Y-%m-%d %H:%M:%S.%f"), event_type,
                 *(text.get(f) or _NULL for f in TEXT_FIELDS),
                 *(_NULL if numbers[n] is None else repr(numbers[n]) if n != "quantity" else str(numbers[n])
                   for n in NUMBERS),
                 _NULL]  # properties: none
        event_id = uuid.UUID(hashlib.md5(_SEP.join(parts).encode()).hexdigest())
        row = {"event_id": event_id, "user_id": pseudonym, "ts": ts, "event_type": event_type,
               **{f: text.get(f) for f in TEXT_FIELDS}, **numbers, "properties": None,
               "item_name": text.get("item_name")}
        return {c: row[c] for c in (*EVENT_COLUMNS, "item_name")}


def _timestamp(text: str) -> datetime | None:
    match = _TS.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                        int((fraction or "0").ljust(6, "0")))
    except ValueError:
        return None
