"""Decision logs: one row per decision a policy made, with what it saw, what it could choose, what
it chose, how likely that choice was under the policy, and the reward once joined back.

Readers for journeymap's own log (JSON lines or Parquet, written by ``write_log`` and later by the
live service) and for the Open Bandit Dataset's CSV layout. A bad row is refused with its file,
line, field, what was expected and what arrived; nothing is dropped silently.

A journeymap decision record (one JSON object per line)::

    {"decision_id": "d-1", "ts": "2024-05-01T12:00:00Z", "user": "u_3f2a...",   # user: pseudonym or null
     "context": {"device": "mobile", "sessions_7d": 3},                        # features, optional
     "actions": ["coupon", {"id": "banner", "features": {"discount": 0.1}}],   # the action set
     "action": "coupon", "propensity": 0.25,          # chosen action, its probability when chosen
     "reward": 1.0,                                   # 0/1 or real; null until joined back
     "position": 0}                                   # slot of a multi-slot page, optional (0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from journeymap.exceptions import FormatError

FORMATS = ("journeymap", "obp")
FIELDS = ("decision_id", "ts", "user", "context", "actions", "action", "propensity", "reward", "position")
REQUIRED = ("decision_id", "ts", "actions", "action", "propensity")
OBP_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass
class DecisionLog:
    """Decisions as arrays, ready for off-policy evaluation.

    ``decisions`` has one row per decision (``decision_id, ts, user, position, action, propensity,
    reward, line``; reward NaN: not joined yet); ``context`` the same rows' context features.
    ``actions`` names every action the log offers, in a fixed order: the columns of ``available``
    (the decision's action set; None when every decision offers every action) and of the
    per-decision action features.
    """

    decisions: pd.DataFrame
    context: pd.DataFrame
    actions: tuple[str, ...]
    available: np.ndarray | None = None  # (n, K) bool
    action_features: pd.DataFrame = field(default_factory=pd.DataFrame)  # index: action id; fixed per action
    decision_action_features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, K) float
    source: str = ""
    format: str = "journeymap"

    def __post_init__(self) -> None:
        self._index = {a: k for k, a in enumerate(self.actions)}

    def __len__(self) -> int:
        return len(self.decisions)

    def __repr__(self) -> str:
        return (f"DecisionLog({self.source!r}, format={self.format!r}, decisions={len(self):,}, "
                f"actions={self.n_actions:,})")

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def chosen(self) -> np.ndarray:
        """(n,) index of each decision's chosen action in ``actions``."""
        return self.decisions["action"].map(self._index).to_numpy(dtype=np.int64)

    @property
    def rewarded(self) -> np.ndarray:
        """(n,) True where the reward has been joined back."""
        return self.decisions["reward"].notna().to_numpy()

    def action_index(self, action: Any) -> int:
        """Column of ``action`` in ``actions``; says so when the log never offers it."""
        key = str(action)
        if key not in self._index:
            shown = ", ".join(self.actions[:10]) + (", ..." if len(self.actions) > 10 else "")
            raise FormatError(f"Action '{key}' is not offered anywhere in {self.source or 'the log'}; "
                              f"its actions are {shown}.")
        return self._index[key]

    def availability(self) -> np.ndarray:
        """(n, K) bool: which actions each decision could choose."""
        if self.available is None:
            return np.ones((len(self), self.n_actions), dtype=bool)
        return self.available

    def subset(self, mask: np.ndarray) -> DecisionLog:
        """The decisions where ``mask`` is True, with the same action columns."""
        mask = np.asarray(mask, dtype=bool)
        return DecisionLog(
            decisions=self.decisions[mask].reset_index(drop=True),
            context=self.context[mask].reset_index(drop=True),
            actions=self.actions,
            available=None if self.available is None else self.available[mask],
            action_features=self.action_features,
            decision_action_features={k: v[mask] for k, v in self.decision_action_features.items()},
            source=self.source, format=self.format)

    def summary(self) -> dict[str, Any]:
        rewards = self.decisions["reward"]
        return {"source": self.source, "format": self.format, "decisions": len(self),
                "rewarded": int(rewards.notna().sum()), "pending": int(rewards.isna().sum()),
                "actions": self.n_actions,
                "positions": sorted(int(p) for p in self.decisions["position"].unique()),
                "logged_value": _mean(rewards.dropna().to_numpy(dtype=float))}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


# -- journeymap's own log -------------------------------------------------------------------------
def _bad(source: str, where: str, name: str, expected: str, got: Any) -> FormatError:
    shown = got if isinstance(got, str) else json.dumps(got, default=str)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return FormatError(f"{source}, {where}: field '{name}' must be {expected}. Got {shown!r}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _action_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _check_record(rec: Any, source: str, where: str) -> dict[str, Any]:
    """One journeymap decision record, validated and normalised (ids as strings, ts as UTC)."""
    if not isinstance(rec, Mapping):
        raise FormatError(f"{source}, {where}: a decision must be a JSON object with fields "
                          f"{', '.join(REQUIRED)}. Got {type(rec).__name__}.")
    missing = [k for k in REQUIRED if rec.get(k) is None]
    if missing:
        raise FormatError(f"{source}, {where}: field '{missing[0]}' is required "
                          f"(a decision has {', '.join(REQUIRED)}; reward, user, context and position may be null).")
    decision_id = _action_id(rec["decision_id"])
    if decision_id is None:
        raise _bad(source, where, "decision_id", "a non-empty string or an integer", rec["decision_id"])
    ts = _timestamp(rec["ts"])
    if ts is None:
        raise _bad(source, where, "ts", "an ISO 8601 time like 2024-05-01T12:00:00Z", rec["ts"])
    user = rec.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad(source, where, "user", "a pseudonym string or null", user)
    context = rec.get("context") or {}
    if isinstance(context, str):
        context = _json_field(context, source, where, "context")
    if not isinstance(context, Mapping):
        raise _bad(source, where, "context", "an object of feature: value", context)
    for key, value in context.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise _bad(source, where, f"context.{key}", "a number, string, boolean or null", value)
    actions = rec["actions"]
    if isinstance(actions, str):
        actions = _json_field(actions, source, where, "actions")
    if not isinstance(actions, (list, tuple)) or not actions:
        raise _bad(source, where, "actions", "a non-empty list of action ids or {\"id\": ..., \"features\": {...}}",
                   actions)
    action_set: dict[str, dict[str, Any]] = {}
    for j, item in enumerate(actions):
        features: Any = {}
        if isinstance(item, Mapping):
            features = item.get("features") or {}
            item = item.get("id")
        aid = _action_id(item)
        if aid is None:
            raise _bad(source, where, f"actions[{j}]", "an action id (string or integer)", item)
        if not isinstance(features, Mapping):
            raise _bad(source, where, f"actions[{j}].features", "an object of feature: value", features)
        for key, value in features.items():
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise _bad(source, where, f"actions[{j}].features.{key}", "a number, string, boolean or null", value)
        if aid in action_set:
            raise _bad(source, where, "actions", "a list without repeated actions", f"'{aid}' twice")
        action_set[aid] = dict(features)
    action = _action_id(rec["action"])
    if action is None:
        raise _bad(source, where, "action", "an action id (string or integer)", rec["action"])
    if action not in action_set:
        raise _bad(source, where, "action", f"one of the decision's actions ({', '.join(list(action_set)[:10])})",
                   action)
    propensity = rec["propensity"]
    if not _is_number(propensity) or not 0 < propensity <= 1:
        raise _bad(source, where, "propensity", "the chosen action's probability under the logging policy, in (0, 1]",
                   propensity)
    reward = rec.get("reward")
    if reward is not None and not _is_number(reward):
        raise _bad(source, where, "reward", "a number (0/1 or real) or null while not joined yet", reward)
    position = rec.get("position")
    if position is None:
        position = 0
    elif isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise _bad(source, where, "position", "a slot number >= 0 or null", position)
    return {"decision_id": decision_id, "ts": ts, "user": user, "context": dict(context),
            "actions": action_set, "action": action, "propensity": float(propensity),
            "reward": None if reward is None else float(reward), "position": position}


def _json_field(text: str, source: str, where: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise _bad(source, where, name, "JSON", text) from None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _iter_records(path: Path) -> Iterable[tuple[str, Any]]:
    """(where, record) of a JSON-lines or Parquet decision log."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise FormatError(f"{path}: not a readable Parquet file ({exc}).") from None
        for i, rec in enumerate(table.to_pylist()):
            yield f"row {i + 1}", rec
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                  "a decision log holds one JSON object per line.") from None
            yield f"line {number}", rec


def read_log(path: str | Path, format: str | None = None, item_context: str | Path | None = None) -> DecisionLog:
    """Read a decision log: journeymap's own (``.jsonl`` / ``.parquet``) or the Open Bandit
    Dataset's CSV (``format="obp"``; detected from a ``.csv`` suffix or a campaign folder)."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"Decision log {path} not found.")
    if format is None:
        format = "obp" if path.is_dir() or path.suffix.lower() == ".csv" else "journeymap"
    if format == "obp":
        return read_obp(path, item_context)
    if format != "journeymap":
        raise FormatError(f"A decision log's format is one of {', '.join(FORMATS)}. Got '{format}'.")
    if path.is_dir() or path.suffix.lower() not in (*_JSON_SUFFIXES, ".parquet"):
        raise FormatError(f"A journeymap decision log is a .jsonl or .parquet file. Got {path}; "
                          "for the Open Bandit Dataset's CSV use format 'obp'.")
    return from_records(_iter_records(path), source=str(path))


def from_records(records: Iterable[Any], source: str = "decisions") -> DecisionLog:
    """A DecisionLog from decision records (dicts as in the module docstring), validated.

    ``records`` may also yield ``(where, record)`` pairs, ``where`` naming the line for errors.
    """
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(records):
        where, rec = item if isinstance(item, tuple) else (f"record {i + 1}", item)
        row = _check_record(rec, source, where)
        if row["decision_id"] in seen:
            raise FormatError(f"{source}, {where}: field 'decision_id' must be unique. Got "
                              f"'{row['decision_id']}' again (first at {seen[row['decision_id']]}).")
        seen[row["decision_id"]] = where
        rows.append(row)
        lines.append(where)
    if not rows:
        raise FormatError(f"{source} holds no decisions.")
    actions = tuple(dict.fromkeys(a for row in rows for a in row["actions"]))
    index = {a: k for k, a in enumerate(actions)}
    n, k = len(rows), len(actions)
    available = np.zeros((n, k), dtype=bool)
    raw: dict[str, np.ndarray] = {}  # feature name -> (n, K) object, None where absent
    for i, row in enumerate(rows):
        for aid, features in row["actions"].items():
            available[i, index[aid]] = True
            for name, value in features.items():
                if name not in raw:
                    raw[name] = np.full((n, k), None, dtype=object)
                raw[name][i, index[aid]] = value
    decisions = pd.DataFrame({
        "decision_id": [r["decision_id"] for r in rows],
        "ts": pd.to_datetime([r["ts"] for r in rows], utc=True),
        "user": [r["user"] for r in rows],
        "position": np.array([r["position"] for r in rows], dtype=np.int64),
        "action": [r["action"] for r in rows],
        "propensity": np.array([r["propensity"] for r in rows], dtype=np.float64),
        "reward": np.array([np.nan if r["reward"] is None else r["reward"] for r in rows], dtype=np.float64),
        "line": lines,
    })
    context = pd.DataFrame([r["context"] for r in rows])
    return DecisionLog(decisions=decisions, context=_tidy_context(context), actions=actions,
                       available=None if available.all() else available,
                       decision_action_features=_encode_action_features(raw), source=source,
                       format="journeymap")


def _tidy_context(context: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as floats, the rest as strings (None stays missing)."""
    out = {}
    for name in context.columns:
        col = context[name]
        values = [v for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if values and all(_is_number(v) or isinstance(v, bool) for v in values):
            out[str(name)] = pd.to_numeric(col.astype(object).where(col.notna(), np.nan), errors="coerce").astype(float)
        else:
            out[str(name)] = col.astype(object).map(lambda v: None if v is None or v != v else str(v))
    return pd.DataFrame(out, index=context.index)


def _encode_action_features(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Numeric features as (n, K) floats (NaN where absent); text ones one-hot as ``name=value``."""
    encoded: dict[str, np.ndarray] = {}
    for name, grid in raw.items():
        present = np.array([v is not None for v in grid.ravel()]).reshape(grid.shape)
        values = grid[present]
        if all(_is_number(v) or isinstance(v, bool) for v in values):
            out = np.full(grid.shape, np.nan)
            out[present] = values.astype(float)
            encoded[name] = out
        else:
            for level in sorted({str(v) for v in values}):
                encoded[f"{name}={level}"] = np.where(present, grid.astype(str) == level, np.nan).astype(float)
    return encoded


def write_log(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Validate decision records and write them as JSON lines (or Parquet for a ``.parquet`` path)."""
    path = Path(path)
    rows = []
    for i, rec in enumerate(records):
        row = _check_record(rec, str(path), f"record {i + 1}")
        out = {k: rec.get(k) for k in FIELDS}
        out.update(decision_id=row["decision_id"], ts=row["ts"].isoformat().replace("+00:00", "Z"),
                   action=row["action"])
        rows.append(out)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # context and actions vary in shape from decision to decision: JSON text keeps one schema
        table = pa.Table.from_pylist([{**r, "context": json.dumps(r["context"] or {}),
                                       "actions": json.dumps(r["actions"])} for r in rows])
        pq.write_table(table, path)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, default=str) + "\n")
    return path


# -- Open Bandit Dataset ----------------------------------------------------------------------------
def read_obp(path: str | Path, item_context: str | Path | None = None) -> DecisionLog:
    """One policy-campaign file of the Open Bandit Dataset (``{policy}/{campaign}/{campaign}.csv``,
    or its folder) as a decision log.

    Mapping: each row (one impression of one item in one of 3 slots) is a decision; ``item_id``
    is the action (every item of ``item_context.csv`` is on offer every time), ``position`` the
    slot, ``click`` the reward, ``propensity_score`` the logging propensity of that item in that
    slot; ``user_feature_0..3`` are the context; ``item_context.csv`` gives the features fixed per
    item and ``user-item_affinity_<k>`` the per-decision feature ``user_item_affinity`` of item k.
    The unnamed first column (the row index) is the decision id.
    """
    path = Path(path)
    if path.is_dir():
        path = path / f"{path.name}.csv"
    if not path.is_file():
        raise FormatError(f"Open Bandit file {path} not found (expected {{policy}}/{{campaign}}/{{campaign}}.csv).")
    source = str(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise FormatError(f"{source}: not readable as CSV ({exc}).") from None
    missing = [c for c in OBP_COLUMNS if c not in frame.columns]
    if missing:
        raise FormatError(f"{source}: not in the Open Bandit layout: column(s) {', '.join(missing)} missing "
                          f"(it needs {', '.join(OBP_COLUMNS)}). Got columns {', '.join(frame.columns[:8])}...")
    lines = np.arange(len(frame)) + 2  # the header is line 1
    if len(frame) == 0:
        raise FormatError(f"{source} holds no decisions.")

    items_path = Path(item_context) if item_context is not None else path.parent / "item_context.csv"
    items = _read_item_context(items_path) if items_path.is_file() else None
    item = _numbers(frame, "item_id", source, lines, "an item id (a whole number >= 0)", whole=True, low=0)
    if items is not None:
        unknown = ~np.isin(item, items.index.to_numpy(dtype=np.int64))
        if unknown.any():
            i = int(np.argmax(unknown))
            raise FormatError(f"{source}, line {lines[i]}: field 'item_id' must be an item of {items_path} "
                              f"(0..{items.index.max()}). Got '{frame['item_id'].iloc[i]}'.")
        ids = [int(v) for v in items.index]
    else:
        ids = list(range(int(item.max()) + 1))
    position = _numbers(frame, "position", source, lines, "a slot number (a whole number >= 0)", whole=True, low=0)
    click = _numbers(frame, "click", source, lines, "a number (0/1 click)")
    propensity = _numbers(frame, "propensity_score", source, lines, "a probability in (0, 1]")
    bad = ~((propensity > 0) & (propensity <= 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise FormatError(f"{source}, line {lines[i]}: field 'propensity_score' must be a probability in (0, 1]. "
                          f"Got '{frame['propensity_score'].iloc[i]}'.")
    ts = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise FormatError(f"{source}, line {lines[i]}: field 'timestamp' must be an ISO 8601 time like "
                          f"2019-11-24 00:00:34.762830+00:00. Got '{frame['timestamp'].iloc[i]}'.")
    first = frame.columns[0]
    decision_id = frame[first] if first in ("", "Unnamed: 0") else pd.Series(lines - 2).astype(str)
    dup = decision_id.duplicated()
    if dup.any():
        i = int(np.argmax(dup.to_numpy()))
        raise FormatError(f"{source}, line {lines[i]}: the row index (first column) must be unique. "
                          f"Got '{decision_id.iloc[i]}' again.")
    decisions = pd.DataFrame({
        "decision_id": decision_id.to_numpy(dtype=object), "ts": ts, "user": None,
        "position": position.astype(np.int64), "action": [str(int(v)) for v in item],
        "propensity": propensity, "reward": click, "line": [f"line {n}" for n in lines]})
    users = sorted((c for c in frame.columns if c.startswith("user_feature")), key=_suffix)
    context = frame[users].replace("", None) if users else pd.DataFrame(index=frame.index)
    actions = tuple(str(i) for i in ids)
    affinity_cols = {_suffix(c): c for c in frame.columns if c.startswith("user-item_affinity_")}
    per_decision: dict[str, np.ndarray] = {}
    if affinity_cols:
        grid = np.zeros((len(frame), len(ids)))
        for k, item_id in enumerate(ids):
            if item_id in affinity_cols:
                col = affinity_cols[item_id]
                grid[:, k] = _numbers(frame, col, source, lines, "a number")
        per_decision["user_item_affinity"] = grid
    features = pd.DataFrame(index=list(actions))
    if items is not None:
        features = items.drop(columns=["item_id"], errors="ignore")
        features.index = [str(int(i)) for i in features.index]
        features = features.loc[list(actions)]
    return DecisionLog(decisions=decisions, context=context.reset_index(drop=True), actions=actions,
                       available=None, action_features=features, decision_action_features=per_decision,
                       source=source, format="obp")


def _suffix(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _numbers(frame: pd.DataFrame, name: str, source: str, lines: np.ndarray, expected: str,
             whole: bool = False, low: float | None = None) -> np.ndarray:
    """Column ``name`` as numbers, or an error naming the first bad line."""
    text = frame[name]
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if whole:
        bad |= np.isfinite(values) & (values != np.round(values))
    if low is not None:
        bad |= values < low
    if bad.any():
        i = int(np.argmax(bad))
        raise FormatError(f"{source}, line {lines[i]}: field '{name}' must be {expected}. Got '{text.iloc[i]}'.")
    return values


def _read_item_context(path: Path) -> pd.DataFrame:
    """item_context.csv: item_id plus item_feature_0 (a number) and item_feature_1..3 (categories)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "item_id" not in frame.columns:
        raise FormatError(f"{path}: the item context needs an 'item_id' column. Got {', '.join(frame.columns)}.")
    lines = np.arange(len(frame)) + 2
    ids = _numbers(frame, "item_id", str(path), lines, "an item id (a whole number >= 0)", whole=True, low=0)
    if len(set(ids)) < len(ids):
        raise FormatError(f"{path}: each item_id must appear once.")
    out = {}
    for name in frame.columns:
        if name in ("", "Unnamed: 0", "item_id"):
            continue
        numbers = pd.to_numeric(frame[name], errors="coerce")
        out[name] = numbers.astype(float) if numbers.notna().all() else frame[name].astype(object)
    result = pd.DataFrame(out)
    result.index = ids.astype(np.int64)
    return result.sort_index()
