"""Train/test splits of public session logs, built exactly as the papers that report on them did.

* ``diginetica_srgnn(csv)``: SR-GNN's ``datasets/preprocess.py`` (Wu et al. 2019) on a Diginetica
  ``train-item-views.csv`` (or the sample shipped with SR-GNN): clicks of a session ordered by
  ``timeframe``; a session's date is its ``eventdate``; sessions of one click dropped; items seen
  fewer than 5 times dropped, then sessions left with fewer than 2 clicks; sessions dated after the
  last date minus 7 days are test, those before are training (sessions dated exactly on the split
  day are in neither, as in SR-GNN); test clicks on items absent from training removed, then test
  sessions shorter than 2 dropped; every prefix of a test session is a test case. One deliberate
  difference: dates are read as UTC (SR-GNN used the machine's local time zone, whose daylight
  saving can move a session across the split).
* ``session_rec(train, test)``: the time-split files of session-rec (Ludewig & Jannach), e.g. the
  YooChoose "rsc15 100k" sample: tab-separated ``SessionId, ItemId, Time``; clicks ordered by time
  within a session, training sessions ordered by their last click; every prefix of a test session is
  a test case (session-rec evaluates every next click the same way).
"""

from __future__ import annotations

import calendar
import csv
import operator
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from journeymap.evaluation._srgnn import TestCases
from journeymap.exceptions import FormatError


@dataclass
class SessionSplit:
    """Training sessions (oldest first) and next-item test cases, with how they were made."""

    name: str
    train: list[list]
    test: TestCases
    description: str

    def stats(self) -> dict[str, Any]:
        items = {i for s in self.train for i in s}
        groups = set(self.test.groups or [])
        return {"name": self.name, "train_sessions": len(self.train), "train_clicks": sum(map(len, self.train)),
                "items": len(items), "test_sessions": len(groups) or None, "test_cases": len(self.test)}


def diginetica_srgnn(path: str | Path, min_item_count: int = 5, test_days: int = 7) -> SessionSplit:
    """SR-GNN's preprocessing of Diginetica item views (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"No Diginetica item-views file at {path}.")
    needed = ("session_id", "item_id", "timeframe", "eventdate")
    clicks: dict[str, list[tuple[str, int]]] = {}
    dates: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=";")
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise FormatError(f"{path} line 1: expected a ';'-separated Diginetica item-views header with "
                              f"{', '.join(needed)}; missing {', '.join(missing)}.")
        current, current_date = None, None
        for number, row in enumerate(reader, start=2):
            session = row["session_id"]
            try:
                offset = int(row["timeframe"])
                day = calendar.timegm(time.strptime(row["eventdate"], "%Y-%m-%d"))
            except (TypeError, ValueError):
                raise FormatError(f"{path} line {number}: expected an integer timeframe and an eventdate like "
                                  f"2016-05-09; got {row['timeframe']!r} and {row['eventdate']!r}.") from None
            if current_date is not None and session != current:
                dates[current] = current_date  # a session's date: its last row's (SR-GNN)
            current, current_date = session, day
            clicks.setdefault(session, []).append((row["item_id"], offset))
        if current is not None:
            dates[current] = current_date
    sessions = {s: [item for item, _ in sorted(c, key=operator.itemgetter(1))] for s, c in clicks.items()}
    sessions = {s: c for s, c in sessions.items() if len(c) > 1}
    counts: dict[str, int] = {}
    for seq in sessions.values():
        for item in seq:
            counts[item] = counts.get(item, 0) + 1
    kept = {}
    for s, seq in sessions.items():
        filtered = [i for i in seq if counts[i] >= min_item_count]
        if len(filtered) >= 2:
            kept[s] = filtered
    dated = [(s, d) for s, d in dates.items() if s in kept]
    if not dated:
        raise FormatError(f"{path}: no session has two clicks on items seen at least {min_item_count} times.")
    split = max(d for _, d in dated) - 86400 * test_days
    train_ids = sorted([x for x in dated if x[1] < split], key=operator.itemgetter(1))
    test_ids = sorted([x for x in dated if x[1] > split], key=operator.itemgetter(1))
    train = [kept[s] for s, _ in train_ids]
    known = {i for seq in train for i in seq}
    test_sessions = [t for t in ([i for i in kept[s] if i in known] for s, _ in test_ids) if len(t) >= 2]
    split_day = time.strftime("%Y-%m-%d", time.gmtime(split))
    description = (f"SR-GNN preprocessing of {path.name}: items seen >= {min_item_count} times, sessions >= 2 "
                   f"clicks; training sessions dated before {split_day}, test sessions after it (last {test_days} "
                   f"days); {len(test_sessions)} test sessions, every prefix a test case.")
    return SessionSplit(path.stem, train, TestCases.from_sessions(test_sessions), description)


def session_rec(train_path: str | Path, test_path: str | Path) -> SessionSplit:
    """session-rec's prepared time split (tab-separated SessionId, ItemId, Time)."""
    train, _ = _session_rec_file(Path(train_path))
    test, _ = _session_rec_file(Path(test_path))
    description = (f"session-rec time split: {Path(train_path).name} for training, every prefix of the "
                   f"sessions of {Path(test_path).name} a test case.")
    return SessionSplit(Path(train_path).stem.replace("_train_full", ""), train,
                        TestCases.from_sessions(test), description)


def _session_rec_file(path: Path) -> tuple[list[list[int]], list[float]]:
    import pandas as pd

    if not path.exists():
        raise FormatError(f"No session-rec file at {path}.")
    frame = pd.read_csv(path, sep="\t", dtype={"SessionId": "int64", "ItemId": "int64", "Time": "float64"})
    missing = {"SessionId", "ItemId", "Time"} - set(frame.columns)
    if missing:
        raise FormatError(f"{path} line 1: expected the tab-separated header SessionId, ItemId, Time; "
                          f"missing {', '.join(sorted(missing))}.")
    frame = frame.sort_values(["SessionId", "Time"], kind="stable")
    grouped = frame.groupby("SessionId", sort=True)
    ends = grouped["Time"].max()
    items = grouped["ItemId"].agg(list)
    order = ends.sort_values(kind="stable").index  # sessions by their last click, oldest first
    return [items[s] for s in order], [float(ends[s]) for s in order]
