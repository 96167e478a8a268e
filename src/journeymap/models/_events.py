"""Event streams as the behaviour model sees them: one stream per user, each event a token.

An event is an item (or none), an event type, and the time since the previous event as a
log-spaced bucket, with a separate run of buckets for a gap that opens a new session (the
session boundary). Device and channel ride along as context. ``read_event_log`` reads every
event of a store (sessions from ``sessionized_sql``, the one session definition);
``labelled`` derives the fine-tuning labels from the log itself, so they need no annotation:

* next item: the item of the next event that has one, anywhere later in the stream;
* next action: the next event's type, or ``leave`` when the session ends there;
* purchase: at every cut strictly before the session's first purchase (earlier in time than it),
  whether the session goes on to a purchase; no cut at or after it, so no label leaks;
* churn: at each session's last event, whether the user stays away longer than the horizon;
  only where the store runs at least a horizon past that event.

Labels that the store cannot know yet (a session that may still be going on at the store's end,
a churn horizon running past it) are left out (``-1``), never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from journeymap.exceptions import JourneymapError
from journeymap.models._data import Vocabulary

LEAVE = "leave"  # the next action when a session ends
PURCHASE = "purchase"

# Special tokens of every field; real values start at FIRST_VALUE.
PAD, BOS, MISSING, UNKNOWN = 0, 1, 2, 3  # MISSING: no value (an event without item); UNKNOWN: not in the vocabulary
FIRST_VALUE = 4

# Time-gap tokens. Within a session the gap in seconds falls in log2 buckets [0,1) [1,2) [2,4) ... [1024, inf);
# a gap that starts a new session falls in log2 buckets of hours [0,1h) [1h,2h) ... [512h, inf).
SESSION_EDGES_S = tuple(float(2 ** k) for k in range(11))  # 1 s .. 1024 s: 12 buckets
BOUNDARY_EDGES_H = tuple(float(2 ** k) for k in range(10))  # 1 h .. 512 h (21 days): 11 buckets
GAP_NO_TIME, GAP_FIRST = 2, 3  # an event whose source has no times; a stream's first event
GAP_IN_SESSION = 4  # first in-session bucket
GAP_NEW_SESSION = GAP_IN_SESSION + len(SESSION_EDGES_S) + 1  # first session-boundary bucket
N_GAP_TOKENS = GAP_NEW_SESSION + len(BOUNDARY_EDGES_H) + 1


def gap_tokens(ts: np.ndarray | None, new_session: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The time-gap token of every event: (n,).

    ``ts`` are unix seconds (None when the source has no times), ``new_session`` marks an event
    that opens a session, ``first`` one that opens its stream (no previous event to measure from).
    """
    n = len(new_session)
    if ts is None:
        return np.where(first, GAP_FIRST, GAP_NO_TIME).astype(np.int64)
    gap = np.zeros(n)
    gap[1:] = np.maximum(ts[1:] - ts[:-1], 0.0)
    inside = GAP_IN_SESSION + np.searchsorted(SESSION_EDGES_S, gap, side="right")
    boundary = GAP_NEW_SESSION + np.searchsorted(BOUNDARY_EDGES_H, gap / 3600.0, side="right")
    tokens = np.where(new_session, boundary, inside)
    return np.where(first, GAP_FIRST, tokens).astype(np.int64)


def gap_label(token: int) -> str:
    """What a gap token means, for people: ``"in session, 4-8 s"``, ``"new session, 1-2 h"``."""
    def span(edges: tuple[float, ...], k: int, unit: str) -> str:
        low = 0 if k == 0 else edges[k - 1]
        return f">= {edges[-1]:g} {unit}" if k == len(edges) else f"{low:g}-{edges[k]:g} {unit}"

    if token == GAP_NO_TIME:
        return "no time"
    if token == GAP_FIRST:
        return "first event"
    if GAP_IN_SESSION <= token < GAP_NEW_SESSION:
        return "in session, " + span(SESSION_EDGES_S, token - GAP_IN_SESSION, "s")
    if GAP_NEW_SESSION <= token < N_GAP_TOKENS:
        return "new session, " + span(BOUNDARY_EDGES_H, token - GAP_NEW_SESSION, "h")
    return {PAD: "padding", BOS: "start"}.get(token, "?")


@dataclass
class EventLog:
    """Events grouped in streams (one per user), in time order: stream ``u`` is rows ``indptr[u]:indptr[u + 1]``.

    ``sessions`` numbers sessions through the log (so a change of number within a stream is a
    session boundary); ``ts`` is None when the source has no times (plain item sequences), and
    ``end`` is the store's last event time, the point beyond which no label is known.
    """

    users: np.ndarray  # (n_users,) object: pseudonyms, or sequence numbers for plain sequences
    indptr: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (n,) object: item id, None for an event without an item
    event_types: np.ndarray  # (n,) object: canonical type, None when unknown
    sessions: np.ndarray  # (n,) int64
    ts: np.ndarray | None = None  # (n,) float64 unix seconds
    devices: np.ndarray | None = None  # (n,) object, None where missing
    channels: np.ndarray | None = None  # (n,) object
    end: float | None = None  # unix seconds of the store's last event
    gap: float = 1800.0  # the session gap in seconds (sessions near ``end`` may still be going on)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def events(self) -> int:
        return int(self.indptr[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def take(self, streams: Sequence[int] | np.ndarray) -> EventLog:
        """The log of these streams only, in the order given."""
        streams = np.asarray(streams, dtype=np.int64)
        starts, lengths = self.indptr[streams], self.lengths[streams]
        rows = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(int(lengths.sum()))
        return self._rows(rows, self.users[streams], lengths)

    def keep(self, mask: np.ndarray) -> EventLog:
        """The log without the events where ``mask`` is False (streams left empty are dropped)."""
        rows = np.flatnonzero(mask)
        stream = np.repeat(np.arange(len(self)), self.lengths)[rows]
        lengths = np.bincount(stream, minlength=len(self))
        kept = lengths > 0
        return self._rows(rows, self.users[kept], lengths[kept])

    def _rows(self, rows: np.ndarray, users: np.ndarray, lengths: np.ndarray) -> EventLog:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return replace(self, users=users, indptr=np.r_[0, np.cumsum(lengths)].astype(np.int64), items=self.items[rows],
                       event_types=self.event_types[rows], sessions=self.sessions[rows], ts=pick(self.ts),
                       devices=pick(self.devices), channels=pick(self.channels))

    def stream_of(self, user: str) -> int:
        where = np.flatnonzero(self.users == user)
        if not len(where):
            raise JourneymapError(f"No events of user '{user}' in this log.")
        return int(where[0])

    def boundaries(self) -> tuple[np.ndarray, np.ndarray]:
        """``(first, new_session)``: events opening their stream, and events opening a session: (n,) bool each."""
        n = self.events
        first = np.zeros(n, dtype=bool)
        first[self.indptr[:-1][self.lengths > 0]] = True
        new_session = np.ones(n, dtype=bool)
        new_session[1:] = self.sessions[1:] != self.sessions[:-1]
        return first, new_session | first


# -- building logs ---------------------------------------------------------------------------------
def read_event_log(store: str | Path, gap: str | timedelta | None = None, settings: Any = None,
                   user_id: str | None = None) -> EventLog:
    """Every event of the store (with or without an item), one stream per user, in time order.

    Sessions come from ``sessionized_sql`` (the source's ids, else ``gap`` of inactivity); a
    user's sessions follow each other by their first event, events within one by time, ties by
    event id. ``user_id`` (a pseudonym) reads one user; ``end`` is always the whole store's.
    """
    from journeymap.config import Settings, parse_duration
    from journeymap.store import Store
    from journeymap.store._store import sessionized_sql

    if isinstance(gap, str):
        gap = parse_duration(gap, "session gap")
    gap = gap or (settings or Settings.load()).session_gap
    where, params = ("WHERE user_id = ?", [user_id]) if user_id is not None else ("", [])
    with Store(store, read_only=True) as st:
        frame = st.con.execute(f"""
            SELECT user_id, session_key, epoch_us(ts) AS us, event_type, item_id, device, channel
            FROM (SELECT *, min(ts) OVER (PARTITION BY session_key) AS session_start FROM {sessionized_sql(gap)} {where})
            ORDER BY user_id, session_start, session_key, ts, event_id""", params).df()
        end = st.con.execute("SELECT epoch_us(max(ts)) FROM events").fetchall()[0][0]
    if frame.empty and user_id is None:
        raise JourneymapError(f"The store {store} has no events; ingest some with `journeymap ingest FILE --store STORE`.")
    users = frame["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, dtype=np.int64)
    keys = frame["session_key"].to_numpy()
    sessions = np.cumsum(np.r_[True, keys[1:] != keys[:-1]]) - 1 if len(keys) else np.zeros(0, dtype=np.int64)

    def text(column: str) -> np.ndarray:
        values = frame[column].to_numpy(dtype=object)
        return np.where(pd.isna(values), None, values)

    return EventLog(users=users[starts].astype(object), indptr=np.r_[starts, len(frame)].astype(np.int64),
                    items=text("item_id"), event_types=text("event_type"), sessions=sessions.astype(np.int64),
                    ts=frame["us"].to_numpy(dtype=np.float64) / 1e6, devices=text("device"), channels=text("channel"),
                    end=None if end is None else end / 1e6, gap=gap.total_seconds())


def log_from_sequences(sequences: Sequence[Sequence[Any]], event_types: Sequence[Sequence[str]] | None = None) -> EventLog:
    """Plain sessions (item lists, optionally with their event types) as a log: one stream per session, no times."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    n = int(lengths.sum())
    items = np.empty(n, dtype=object)
    items[:] = [i for s in sequences for i in s]
    kinds = np.empty(n, dtype=object)
    if event_types is not None:
        kinds[:] = [str(t) for s in event_types for t in s]
    users = np.empty(len(sequences), dtype=object)
    users[:] = [str(i) for i in range(len(sequences))]
    return EventLog(users=users, indptr=np.r_[0, np.cumsum(lengths)].astype(np.int64), items=items,
                    event_types=kinds, sessions=np.repeat(np.arange(len(sequences)), lengths))


def log_from_events(events: Any, gap: str | timedelta = timedelta(minutes=30), user: str = "user") -> EventLog:
    """One user's events as a log: a DataFrame or a list of dicts with ``ts`` and any of ``item_id``
    (or ``item``), ``event_type``, ``session_id``, ``device``, ``channel``.

    Events are put in time order; sessions are the given ``session_id`` values, else a new one after
    ``gap`` of inactivity. Without ``ts`` the events are taken as one session in the order given.
    """
    from journeymap.config import parse_duration

    frame = events if isinstance(events, pd.DataFrame) else pd.DataFrame(list(events))
    frame = frame.rename(columns={"item": "item_id"}).reset_index(drop=True)
    if isinstance(gap, str):
        gap = parse_duration(gap, "session gap")

    def column(name: str) -> np.ndarray:
        if name not in frame:
            return np.full(len(frame), None, dtype=object)
        values = frame[name].to_numpy(dtype=object)
        return np.where(pd.isna(values), None, values)

    ts = None
    if "ts" in frame and len(frame):
        try:
            stamps = pd.to_datetime(frame["ts"], utc=True)
        except (ValueError, TypeError) as exc:
            raise JourneymapError(f"The events' 'ts' must be times like '2024-03-01 12:00:00'; {exc}.") from None
        order = np.argsort(stamps.to_numpy(), kind="stable")
        frame = frame.iloc[order].reset_index(drop=True)
        ts = (stamps.iloc[order] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    if "session_id" in frame and frame["session_id"].notna().all():
        keys = frame["session_id"].astype(str).to_numpy()
        sessions = np.cumsum(np.r_[True, keys[1:] != keys[:-1]]) - 1
    elif ts is not None:
        sessions = np.cumsum(np.r_[True, np.diff(ts) > gap.total_seconds()]) - 1
    else:
        sessions = np.zeros(len(frame), dtype=np.int64)
    users = np.empty(1, dtype=object)
    users[0] = user
    return EventLog(users=users, indptr=np.array([0, len(frame)], dtype=np.int64), items=column("item_id"),
                    event_types=column("event_type"), sessions=np.asarray(sessions, dtype=np.int64), ts=ts,
                    devices=column("device"), channels=column("channel"), gap=gap.total_seconds())


def split_users(n: int, shares: Sequence[float], seed: int) -> list[np.ndarray]:
    """Stream indices shuffled with ``seed`` and cut into parts of these shares (the rest last): sorted each."""
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([int(round(s * n)) for s in shares])
    return [np.sort(part) for part in np.split(order, np.minimum(cuts, n))]


# -- labels ----------------------------------------------------------------------------------------
@dataclass
class Labels:
    """Fine-tuning labels of every event of a log (the prediction made right after it): (n,) each, -1 = none."""

    next_item_row: np.ndarray  # int64: the row of the next event with an item in the stream
    next_action: np.ndarray  # object: the next event's type, LEAVE, or None (unknown)
    purchase: np.ndarray  # int8: 1/0 the session buys after this cut; -1 not a cut before the first purchase
    churn: np.ndarray  # int8: 1/0 no return within the horizon after this session; -1 not a session end or unknown


def labelled(log: EventLog, churn_days: float = 7.0) -> Labels:
    """The labels of every event of ``log`` (see the module docstring for each definition)."""
    n = log.events
    first, new_session = log.boundaries()
    stream = np.repeat(np.arange(len(log)), log.lengths)
    last_in_stream = np.zeros(n, dtype=bool)
    last_in_stream[log.indptr[1:][log.lengths > 0] - 1] = True
    session_end = np.r_[new_session[1:], True] | last_in_stream  # the next event, if any, opens a new session

    # next item: the nearest later row with an item, in the same stream
    item_rows = np.flatnonzero([i is not None for i in log.items])
    later = np.searchsorted(item_rows, np.arange(n), side="right")
    next_row = np.where(later < len(item_rows), item_rows[np.minimum(later, max(len(item_rows) - 1, 0))], -1) \
        if len(item_rows) else np.full(n, -1, dtype=np.int64)
    next_row[(next_row >= 0) & (stream[np.maximum(next_row, 0)] != stream)] = -1

    # next action; a user's last session may still be going on unless the store runs a session gap past it
    complete = ~last_in_stream
    if log.ts is None:
        complete[:] = True
    elif log.end is not None:
        complete |= log.ts + log.gap <= log.end
    next_type = np.r_[log.event_types[1:], None].astype(object) if n else log.event_types[:0]
    typed_next = np.array([t is not None for t in next_type], dtype=bool)
    action = np.full(n, None, dtype=object)
    inside = ~session_end & typed_next
    action[inside] = next_type[inside]
    action[session_end & complete] = LEAVE

    # purchase within the session, at cuts earlier than its first purchase
    purchase = np.full(n, -1, dtype=np.int8)
    if n:
        session_id = np.cumsum(new_session) - 1
        n_sessions = int(session_id[-1]) + 1
        when = log.ts if log.ts is not None else np.arange(n, dtype=np.float64)  # without times, the order
        is_purchase = log.event_types == PURCHASE
        first_buy = np.full(n_sessions, np.inf)
        np.minimum.at(first_buy, session_id[is_purchase], when[is_purchase])
        finished = np.zeros(n_sessions, dtype=bool)
        finished[session_id[session_end]] = complete[session_end]
        typed = np.zeros(n_sessions, dtype=bool)
        typed[session_id[[t is not None for t in log.event_types]]] = True
        buys = np.isfinite(first_buy)
        cut = (when < first_buy[session_id]) & (finished | buys)[session_id] & typed[session_id]
        purchase[cut] = buys[session_id[cut]]

    # churn at session ends: does the user stay away longer than the horizon?
    churn = np.full(n, -1, dtype=np.int8)
    if log.ts is not None and n:
        horizon = churn_days * 86400.0
        ends = np.flatnonzero(session_end)
        away = np.where(last_in_stream[ends], np.inf, log.ts[np.minimum(ends + 1, n - 1)] - log.ts[ends])
        returned = away <= horizon
        seen = log.ts[ends] + horizon <= log.end if log.end is not None else np.zeros(len(ends), dtype=bool)
        known = returned | seen
        churn[ends[known]] = ~returned[known]
    return Labels(next_row.astype(np.int64), action, purchase, churn)


# -- tokens ----------------------------------------------------------------------------------------
class Field:
    """The values of one categorical field and their tokens (``FIRST_VALUE`` onwards, in the order given)."""

    def __init__(self, values: Sequence[str]) -> None:
        self.values = [str(v) for v in values]
        self._index = pd.Index(self.values)

    def __len__(self) -> int:
        return len(self.values) + FIRST_VALUE

    def encode(self, values: np.ndarray | None, n: int) -> np.ndarray:
        if values is None:
            return np.full(n, MISSING, dtype=np.int64)
        present = np.array([v is not None for v in values], dtype=bool)
        out = np.full(len(values), MISSING, dtype=np.int64)
        if present.any():
            found = self._index.get_indexer(np.asarray(values[present]).astype(str))
            out[present] = np.where(found >= 0, found + FIRST_VALUE, UNKNOWN)
        return out

    @classmethod
    def build(cls, values: np.ndarray | None, order: Sequence[str] = ()) -> Field:
        """The distinct values seen: those in ``order`` first (in that order), then the rest sorted."""
        seen = set() if values is None else {str(v) for v in values if v is not None}
        return cls([v for v in order if v in seen] + sorted(seen - set(order)))


@dataclass
class Tokens:
    """A log as token arrays, each stream opened by a start token: stream ``u`` is ``indptr[u]:indptr[u + 1]``.

    Position ``t`` holds event ``t - 1`` of its stream (0 is the start token), and the targets at
    ``t`` are what comes after it: the next token of every field (pre-training) and the labels.
    """

    indptr: np.ndarray  # (n_streams + 1,)
    item: np.ndarray  # (N,) int64 each
    kind: np.ndarray
    gap: np.ndarray
    device: np.ndarray
    channel: np.ndarray
    row: np.ndarray  # (N,) the event's row in the log, -1 at start tokens
    next_item_any: np.ndarray  # pre-training targets: the next event's item, type and gap token, -1 = none
    next_kind: np.ndarray
    next_gap: np.ndarray
    gap_at_least: np.ndarray  # at a stream's last event, when its session is over: the store ends this gap token later
    next_item: np.ndarray  # the next item's vocabulary index (not token), -1 = none, -2 = an item the vocabulary lacks
    next_item_row: np.ndarray  # the next item's row in the log, -1 = none
    next_action: np.ndarray  # type index (token - FIRST_VALUE), n_types = leave, -1 = none
    purchase: np.ndarray  # 1/0, -1 = none
    churn: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1


def censored_gaps(log: EventLog) -> np.ndarray:
    """For each stream's last event whose session is over, the session-boundary gap token that the
    store's end falls in: the next event, if any, comes at least that late (-1 elsewhere): (n,).

    Pre-training scores these as censored targets, so "not back before the store ends" is learned
    from behaviour alone, as a survival model would, instead of being dropped.
    """
    out = np.full(log.events, -1, dtype=np.int64)
    if log.ts is None or log.end is None or not log.events:
        return out
    last = log.indptr[1:][log.lengths > 0] - 1
    waited = log.end - log.ts[last]
    over = waited > log.gap
    out[last[over]] = GAP_NEW_SESSION + np.searchsorted(BOUNDARY_EDGES_H, waited[over] / 3600.0, side="right")
    return out


def item_tokens(vocab: Vocabulary, items: np.ndarray) -> np.ndarray:
    """Item tokens: ``FIRST_VALUE + vocabulary index``, MISSING for no item, UNKNOWN for one the vocabulary lacks."""
    out = np.full(len(items), MISSING, dtype=np.int64)
    present = np.array([i is not None for i in items], dtype=bool)
    if present.any():
        index = vocab.index_of(items[present].tolist())
        out[present] = np.where(index >= 0, index + FIRST_VALUE, UNKNOWN)
    return out


def tokenize(log: EventLog, vocab: Vocabulary, kinds: Field, devices: Field, channels: Field,
             churn_days: float = 7.0, labels: Labels | None = None) -> Tokens:
    """The log as tokens with every target, a start token opening each stream."""
    n, streams = log.events, len(log)
    labels = labels or labelled(log, churn_days)
    first, new_session = log.boundaries()
    position = np.arange(n) + np.repeat(np.arange(streams), log.lengths) + 1  # room for one start token per stream
    starts = log.indptr[:-1] + np.arange(streams)
    total = n + streams

    def spread(values: np.ndarray, start_value: int) -> np.ndarray:
        out = np.full(total, start_value, dtype=np.int64)
        out[position] = values
        return out

    item = spread(item_tokens(vocab, log.items), BOS)
    kind = spread(kinds.encode(log.event_types, n), BOS)
    gap = spread(gap_tokens(log.ts, new_session, first), BOS)
    row = spread(np.arange(n), -1)
    last = np.zeros(total, dtype=bool)
    last[np.r_[starts[1:], total] - 1] = True

    def shifted(tokens: np.ndarray) -> np.ndarray:
        out = np.r_[tokens[1:], -1]
        out[last] = -1
        return out

    # next item: its row in the log and its vocabulary index; at a start token, the stream's first item
    next_item_row = spread(labels.next_item_row, -1)
    item_rows = np.flatnonzero([i is not None for i in log.items])
    opening = np.searchsorted(item_rows, log.indptr[:-1])
    if len(item_rows):
        candidate = item_rows[np.minimum(opening, len(item_rows) - 1)]
        inside = (opening < len(item_rows)) & (candidate < log.indptr[1:])
        next_item_row[starts[inside]] = candidate[inside]
    index = item_tokens(vocab, log.items) - FIRST_VALUE  # (n,) >= 0 known, -1 unknown
    has_next = next_item_row >= 0
    next_item = np.full(total, -1, dtype=np.int64)
    next_item[has_next] = np.where(index[next_item_row[has_next]] >= 0, index[next_item_row[has_next]], -2)

    action_index = {v: i for i, v in enumerate(kinds.values)}
    action_index[LEAVE] = len(kinds.values)
    actions = np.array([action_index.get(a, -1) if a is not None else -1 for a in labels.next_action], dtype=np.int64)
    next_action = spread(actions, -1)
    first_kind = kind[np.minimum(starts + 1, total - 1)] - FIRST_VALUE
    next_action[starts] = np.where((log.lengths > 0) & (first_kind >= 0), first_kind, -1)
    return Tokens(
        indptr=np.r_[starts, total].astype(np.int64), item=item, kind=kind, gap=gap,
        device=spread(devices.encode(log.devices, n), BOS), channel=spread(channels.encode(log.channels, n), BOS),
        row=row, next_item_any=shifted(item), next_kind=shifted(kind), next_gap=shifted(gap),
        gap_at_least=spread(censored_gaps(log), -1), next_item=next_item,
        next_item_row=next_item_row,
        next_action=next_action, purchase=spread(labels.purchase.astype(np.int64), -1),
        churn=spread(labels.churn.astype(np.int64), -1))
