"""Sequences as models see them: a vocabulary of item ids, and sessions encoded as flat arrays.

A model's input is a list of sessions, each a list of item ids in click order. Item ids are
integers or text, as the source gives them (never mixed); the vocabulary orders them by training
popularity, so "ties go to the more popular item" is simply "ties go to the lower index".
``read_sessions`` reads the store's sessions (the one session definition, ``sessionized_sql``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from journeymap.exceptions import JourneymapError


@dataclass(frozen=True)
class Encoded:
    """Sequences as vocabulary indices: sequence ``i`` is ``items[indptr[i]:indptr[i + 1]]``.

    An item the vocabulary does not know is ``-1``, kept in place so positions stay true.
    """

    indptr: np.ndarray  # (n + 1,) int64
    items: np.ndarray  # (total,) int64, -1 = unknown item

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def rows(self) -> np.ndarray:
        """The sequence number of every position: (total,)."""
        return np.repeat(np.arange(len(self)), self.lengths)

    def positions(self) -> np.ndarray:
        """The 1-based position of every element in its sequence: (total,)."""
        return np.arange(len(self.items)) - np.repeat(self.indptr[:-1], self.lengths) + 1

    def last(self) -> np.ndarray:
        """Each sequence's last item (``-1`` when it is empty or unknown): (n,)."""
        out = np.full(len(self), -1, dtype=np.int64)
        nonempty = self.lengths > 0
        out[nonempty] = self.items[self.indptr[1:][nonempty] - 1]
        return out

    def __getitem__(self, rows: slice) -> Encoded:
        start, stop, _ = rows.indices(len(self))
        indptr = self.indptr[start:stop + 1]
        return Encoded(indptr - indptr[0], self.items[indptr[0]:indptr[-1]])


class Vocabulary:
    """The items a model knows, most popular first (``counts`` are training occurrences)."""

    def __init__(self, items: np.ndarray, counts: np.ndarray) -> None:
        self.items = items
        self.counts = counts
        self._index = pd.Index(items)

    @classmethod
    def build(cls, sequences: Sequence[Sequence[Any]]) -> Vocabulary:
        flat = _flat_ids(sequences)
        if len(flat) == 0:
            raise JourneymapError("fit() needs at least one item; the training sequences are all empty.")
        codes, uniques = pd.factorize(flat)  # codes in order of first appearance
        counts = np.bincount(codes)
        order = np.argsort(-counts, kind="stable")  # ties keep first appearance
        return cls(np.asarray(uniques)[order], counts[order].astype(np.int64))

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, sequences: Sequence[Sequence[Any]]) -> Encoded:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        flat = _flat_ids(sequences)
        if len(flat) == 0:
            return Encoded(indptr, np.zeros(0, dtype=np.int64))
        if flat.dtype.kind != self.items.dtype.kind and not (flat.dtype.kind in "OU" and self.items.dtype.kind in "OU"):
            return Encoded(indptr, np.full(len(flat), -1, dtype=np.int64))  # ints never match text ids
        return Encoded(indptr, self._index.get_indexer(flat).astype(np.int64))

    def index_of(self, ids: Sequence[Any]) -> np.ndarray:
        """Vocabulary index of each id, ``-1`` for an unknown one: (n,)."""
        return self.encode([[i] for i in ids]).items

    def to_arrays(self) -> dict[str, np.ndarray]:
        items = self.items.astype(str) if self.items.dtype == object else self.items
        return {"items": items, "counts": self.counts}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Vocabulary:
        return cls(arrays["items"], arrays["counts"])


def _flat_ids(sequences: Sequence[Sequence[Any]]) -> np.ndarray:
    """All ids of all sequences in one array: int64 for integer ids, text otherwise."""
    flat = list(chain.from_iterable(sequences))
    if not flat:
        return np.zeros(0, dtype=np.int64)
    array = np.asarray(flat)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "U" and all(isinstance(v, str) for v in flat):  # numpy turns [1, "a"] into text
        return array.astype(object)
    kinds = sorted({type(v).__name__ for v in flat})
    raise JourneymapError(
        f"Item ids must be all integers or all text; got {', '.join(kinds)}. "
        "Convert them to one type (text is always safe) before fit or predict.")


def check_sequences(sequences: Any, event_types: Any = None, what: str = "sequences") -> list:
    """The sequences as a list of lists, or an error saying what a sequence must look like."""
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise JourneymapError(f"The {what} must be a list of item-id lists, like [[1, 2, 3], [2, 5]]. "
                              f"Got {type(sequences).__name__}.")
    out = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise JourneymapError(f"Each of the {what} must be a list of item ids; number {i} is "
                                  f"{type(seq).__name__} {seq!r:.40}. Wrap a single session in a list: [[...]].")
        out.append(list(seq))
    if event_types is not None:
        if len(event_types) != len(out) or any(len(t) != len(s) for t, s in zip(event_types, out)):
            raise JourneymapError(f"event_types must give one event type per item of the {what} "
                                  "(the same shape as the item lists).")
    return out


@dataclass
class Session:
    """One session read from the store: its items (in order) with event types and times."""

    key: str
    user_id: str
    items: list[str]
    event_types: list[str]
    ts: list[datetime]

    @property
    def start(self) -> datetime:
        return self.ts[0]

    @property
    def end(self) -> datetime:
        return self.ts[-1]


def read_sessions(store: str | Path, gap: str | timedelta | None = None, event_types: Sequence[str] | None = None,
                  settings: Any = None, user_id: str | None = None) -> list[Session]:
    """The store's sessions with at least one item event, ordered by their last event.

    Sessions come from ``sessionized_sql`` (the source's session ids, else a new session after
    ``gap`` of inactivity; default from the settings). Within a session, events are in time order
    (ties by event id, as every journey analysis orders them). Events without an item are left out;
    ``event_types`` keeps only those types (default: every event with an item); ``user_id`` (a
    pseudonym) reads one user's sessions.
    """
    from journeymap.config import Settings, parse_duration
    from journeymap.store import Store
    from journeymap.store._store import sessionized_sql

    if isinstance(gap, str):
        gap = parse_duration(gap, "session gap")
    gap = gap or (settings or Settings.load()).session_gap
    where = "item_id IS NOT NULL"
    params: list[Any] = []
    if event_types:
        where += f" AND event_type IN ({', '.join('?' for _ in event_types)})"
        params = list(event_types)
    if user_id is not None:
        where += " AND user_id = ?"
        params.append(user_id)
    with Store(store, read_only=True) as st:
        frame = st.con.execute(
            f"SELECT session_key, user_id, event_type, item_id, ts FROM {sessionized_sql(gap)} "
            f"WHERE {where} ORDER BY session_key, ts, event_id", params).df()
    if frame.empty and user_id is not None:
        return []
    if frame.empty:
        kinds = f" of type {', '.join(event_types)}" if event_types else ""
        raise JourneymapError(f"The store {store} has no events with an item{kinds}; a next-item model "
                              "needs item events (ingest some with `journeymap ingest FILE --store STORE`).")
    keys = frame["session_key"].to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    bounds = np.r_[starts, len(frame)]
    users, types, items = (frame[c].to_numpy() for c in ("user_id", "event_type", "item_id"))
    times = frame["ts"].dt.to_pydatetime()
    sessions = [Session(keys[a], users[a], items[a:b].tolist(), types[a:b].tolist(), list(times[a:b]))
                for a, b in zip(bounds[:-1], bounds[1:])]
    sessions.sort(key=lambda s: (s.end, s.key))
    return sessions
