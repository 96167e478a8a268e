"""Multi-touch attribution: how much of the conversions each touchpoint (channel, ...) earns.

Definitions (every model reads the same paths):

* Touch: one per session, the touchpoint value (``channel`` by default; any event column, or
  ``properties.KEY``) of the session's first event that carries one; a session with none
  counts as the touch ``(none)``. Sessions are journey_events' ``session_key``, ordered by start.
* Conversion: a session with at least one event of the conversion type (default ``purchase``),
  counted once per session however many such events it holds; its time is its first such event.
* Converting path: the touches of the user's sessions after their previous converting session,
  up to and including this one, keeping only sessions that start within the lookback window
  (default 30d) before the conversion; the converting session itself is always kept.
* Non-converting path: the user's sessions after their last conversion (all sessions for users
  who never convert), within the lookback window before the last session's start. Only the
  Markov model reads these (they are its transitions to ``null``).

Models; every one hands out exactly ``conversions`` credit in total:

* ``first`` / ``last``: the whole conversion to the first / last touch of its path.
* ``linear``: an equal split over the path's touches (a touchpoint touching twice gets 2 shares).
* ``position``: 40% first, 40% last, 20% split over the middle touches (50/50 for two touches).
* ``time_decay``: weights 2 ** (-age / 7 days), age = conversion time - session start.
* ``markov`` (order k): states are the last k touches (shorter tuples at the start of a path),
  plus ``start``, ``conversion`` and ``null``, with transition probabilities counted over all
  paths (converting and not). P(conversion) is the absorption probability into ``conversion``
  from ``start``, from the linear system (I - Q) x = r (Q: transient-to-transient, r: transient
  to conversion), not from matrix powers. The removal effect of a touchpoint is
  1 - P(conversion with every state containing it sent to ``null``) / P(conversion); credits are
  removal effects scaled to sum to the conversions.
* ``shapley``: the cooperative game v(S) = conversions whose path's set of distinct touchpoints
  is a subset of S (Zhao et al. 2018). v is a sum of unanimity games (one per conversion, on its
  touch set), so the exact Shapley value is: each conversion splits equally over its distinct
  touchpoints. That is exact for any number of touchpoints, so no sampling is needed.

Raw credit follows volume: a channel with many sessions earns much. ``lift`` (credit share /
session share) says how much a touchpoint earns per session it brings, the base rate being 1.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from journeymap.config import parse_duration
from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Journeys, jsonable, lit, require_events, seconds_between

MODELS = ("first", "last", "linear", "position", "time_decay", "markov", "shapley")
HALF_LIFE_DAYS = 7.0  # time-decay: a touch a week before the conversion counts half
NONE = "(none)"  # the touch of a session whose events carry no touchpoint value

_COLUMNS = ("event_type", "session_id", "item_id", "category", "brand", "price", "quantity", "channel",
            "device", "query", "text", "rating", "stage")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Paths:
    """The journeys every model reads: one row per path, touches in session order."""

    touchpoint: str
    conversion: str
    lookback: timedelta
    users: list[str]  # pseudonym per path
    converted: list[bool]
    touches: list[tuple[str, ...]]
    ages: list[tuple[float, ...]]  # days from each session's start to the conversion (or last session)
    sessions: dict[str, int]  # sessions per touchpoint, after filters (the lift denominator)

    @property
    def conversions(self) -> int:
        return sum(self.converted)

    def converting(self) -> Counter:
        """Converting paths, identical ones counted together."""
        return Counter(t for t, c in zip(self.touches, self.converted) if c)


@dataclass
class AttributionResult:
    """Credit per touchpoint (summing to ``conversions``) under one model, with its users."""

    model: str
    touchpoint: str
    conversion: str
    lookback: timedelta
    conversions: int
    paths: int  # converting paths (one per conversion)
    non_converting_paths: int
    credits: dict[str, float]  # touchpoint -> credit, largest first
    sessions: dict[str, int]  # touchpoint -> sessions after filters
    order: int | None = None  # markov only
    removal_effects: dict[str, float] | None = None  # markov only
    conversion_probability: float | None = None  # markov only
    user_index: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def share(self) -> dict[str, float]:
        return {k: v / self.conversions for k, v in self.credits.items()}

    @property
    def lift(self) -> dict[str, float | None]:
        """Credit share over session share: above 1, the touchpoint earns more than its traffic."""
        total = sum(self.sessions.values())
        return {k: (self.share[k] / (self.sessions[k] / total) if self.sessions.get(k) else None)
                for k in self.credits}

    def users(self, touchpoint: str) -> list[str]:
        """The users (pseudonyms) whose converting paths include this touchpoint, sorted."""
        if touchpoint not in self.credits:
            raise JourneymapError(
                f"No touchpoint '{touchpoint}' in this attribution; expected one of {', '.join(self.credits)}.")
        return list(self.user_index.get(touchpoint, []))

    def all_users(self) -> list[str]:
        """Every user behind the credits: those with a converting path."""
        return sorted({u for us in self.user_index.values() for u in us})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "touchpoint": self.touchpoint,
            "conversion": self.conversion,
            "lookback": _duration_text(self.lookback),
            "conversions": self.conversions,
            "paths": self.paths,
            "non_converting_paths": self.non_converting_paths,
            "credits": self.credits,
            "share": self.share,
            "sessions": self.sessions,
            "lift": {k: jsonable(v) for k, v in self.lift.items()},
            "users": {k: len(v) for k, v in self.user_index.items()},
        }
        if self.model == "markov":
            data.update(order=self.order, removal_effects=self.removal_effects,
                        conversion_probability=self.conversion_probability)
        return data

    def to_frame(self):
        import pandas as pd

        lift = self.lift
        frame = pd.DataFrame({
            "touchpoint": list(self.credits),
            "credit": list(self.credits.values()),
            "share": list(self.share.values()),
            "sessions": [self.sessions.get(k, 0) for k in self.credits],
            "lift": [lift[k] for k in self.credits],
            "users": [len(self.user_index.get(k, [])) for k in self.credits],
        })
        if self.removal_effects is not None:
            frame["removal_effect"] = [self.removal_effects[k] for k in self.credits]
        return frame

    def figure(self):
        import plotly.graph_objects as go

        frame = self.to_frame()
        fig = go.Figure(go.Bar(
            x=frame["touchpoint"], y=frame["credit"],
            text=[f"{s:.1%}" for s in frame["share"]], textposition="outside",
            customdata=np.stack([frame["sessions"], frame["lift"].astype(float)], axis=-1),
            hovertemplate="%{x}<br>credit %{y:.1f} (%{text} of conversions)<br>"
                          "sessions %{customdata[0]:,}<br>lift %{customdata[1]:.2f}<extra></extra>",
        ))
        label = f"{self.model} (order {self.order})" if self.model == "markov" else self.model
        fig.update_layout(
            title=f"{label} attribution of {self.conversions:,} {self.conversion} conversions by {self.touchpoint} "
                  f"(lookback {_duration_text(self.lookback)})",
            xaxis_title=self.touchpoint, yaxis_title="credited conversions")
        return fig


def attribution(journeys: Journeys, model: str = "markov", conversion: str = "purchase",
                touchpoint: str = "channel", lookback: str | timedelta = "30d", order: int = 1) -> AttributionResult:
    """Credit each touchpoint with a part of the conversions under ``model`` (see the module docstring)."""
    model = _check_model(model)
    order = _check_order(order)
    return _attribute(journey_paths(journeys, conversion, touchpoint, lookback), model, order)


def compare(journeys: Journeys, models: tuple[str, ...] | list[str] = MODELS, conversion: str = "purchase",
            touchpoint: str = "channel", lookback: str | timedelta = "30d", order: int = 1):
    """Credits of several models side by side: one row per touchpoint, one column per model."""
    import pandas as pd

    models = [_check_model(m) for m in models]
    order = _check_order(order)
    paths = journey_paths(journeys, conversion, touchpoint, lookback)
    columns = {m: _attribute(paths, m, order).credits for m in models}
    frame = pd.DataFrame(columns).fillna(0.0)
    frame.index.name = "touchpoint"
    return frame.sort_values(models[0], ascending=False)


def journey_paths(journeys: Journeys, conversion: str = "purchase", touchpoint: str = "channel",
                  lookback: str | timedelta = "30d") -> Paths:
    """Converting and non-converting paths of touches, built in SQL (see the module docstring)."""
    if isinstance(lookback, str):
        lookback = parse_duration(lookback, "lookback window")
    elif lookback.total_seconds() <= 0:
        raise JourneymapError(f"The lookback window must be a positive duration like '30d'. Got '{lookback}'.")
    expr = _touch_expr(touchpoint)
    require_events(journeys)
    present = journeys.query(
        f"SELECT count(*) FILTER (WHERE event_type = {lit(conversion)}), count(*) FROM journey_events").fetchall()[0]
    if not present[0]:
        types = [r[0] for r in journeys.query(
            "SELECT event_type FROM journey_events GROUP BY 1 ORDER BY count(*) DESC LIMIT 8").fetchall()]
        raise JourneymapError(
            f"Attribution needs conversions, but no '{conversion}' events are in the store after the filters "
            f"({present[1]:,} events seen). Pass --conversion with an event type that occurs, e.g. one of: "
            f"{', '.join(types) or 'none'}.")
    # journeys.query() prefixes "WITH journey_events AS (...)", so this SQL goes on with ", name AS".
    rows = journeys.query(f"""
        , sessions AS (
            SELECT user_id, session_key, min(ts) AS started,
                   coalesce(first(CAST({expr} AS VARCHAR) ORDER BY ts, step)
                            FILTER (WHERE {expr} IS NOT NULL), {lit(NONE)}) AS touch,
                   min(ts) FILTER (WHERE event_type = {lit(conversion)}) AS converted_at
            FROM journey_events GROUP BY user_id, session_key
        ), ordered AS (
            SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY started, session_key) AS idx FROM sessions
        ), ends AS (
            -- a converting path ends at its session and starts after the previous converting session
            SELECT user_id, TRUE AS converted, converted_at AS at, idx AS last_idx,
                   coalesce(lag(idx) OVER (PARTITION BY user_id ORDER BY idx), 0) AS prev_idx
            FROM ordered WHERE converted_at IS NOT NULL
            UNION ALL
            -- a non-converting path: the sessions after the user's last conversion (or all of them)
            SELECT user_id, FALSE, max(started), max(idx),
                   coalesce(max(idx) FILTER (WHERE converted_at IS NOT NULL), 0)
            FROM ordered GROUP BY user_id
            HAVING max(idx) > coalesce(max(idx) FILTER (WHERE converted_at IS NOT NULL), 0)
        )
        SELECT e.user_id, e.converted, list(o.touch ORDER BY o.idx) AS touches,
               list({seconds_between('e.at', 'o.started')} / 86400.0 ORDER BY o.idx) AS ages
        FROM ends e JOIN ordered o
          ON o.user_id = e.user_id AND o.idx > e.prev_idx AND o.idx <= e.last_idx
         AND (o.idx = e.last_idx OR epoch_us(o.started) >= epoch_us(e.at) - {lookback // timedelta(microseconds=1)})
        GROUP BY e.user_id, e.converted, e.last_idx
        ORDER BY e.user_id, e.last_idx
    """).fetchall()
    sessions = dict(journeys.query(f"""
        SELECT touch, count(*) FROM (
            SELECT coalesce(first(CAST({expr} AS VARCHAR) ORDER BY ts, step)
                            FILTER (WHERE {expr} IS NOT NULL), {lit(NONE)}) AS touch
            FROM journey_events GROUP BY user_id, session_key) GROUP BY touch""").fetchall())
    return Paths(touchpoint, conversion, lookback, [r[0] for r in rows], [bool(r[1]) for r in rows],
                 [tuple(r[2]) for r in rows], [tuple(max(a, 0.0) for a in r[3]) for r in rows], sessions)


# -- models: each maps Paths to {touchpoint: credit} summing to the conversions ------------------

def _rule_credits(paths: Paths, model: str) -> dict[str, float]:
    """first, last, linear, position and time_decay: per-path weights over the path's touches."""
    credits: dict[str, float] = defaultdict(float)
    for touches, ages, converted in zip(paths.touches, paths.ages, paths.converted):
        if not converted:
            continue
        n = len(touches)
        if model == "first":
            weights = np.eye(n)[0]
        elif model == "last":
            weights = np.eye(n)[-1]
        elif model == "linear":
            weights = np.full(n, 1.0 / n)
        elif model == "position":
            if n <= 2:
                weights = np.full(n, 1.0 / n)
            else:
                weights = np.full(n, 0.2 / (n - 2))
                weights[0] = weights[-1] = 0.4
        else:  # time_decay
            weights = 0.5 ** (np.asarray(ages) / HALF_LIFE_DAYS)
            weights = weights / weights.sum()
        for touch, w in zip(touches, weights):
            credits[touch] += float(w)
    return dict(credits)


def _shapley_credits(paths: Paths) -> dict[str, float]:
    """Exact Shapley values of v(S) = #conversions whose touch set is a subset of S.

    v = sum over conversions of the unanimity game on the conversion's touch set T, whose Shapley
    value is 1/|T| for each member of T and 0 otherwise; Shapley values add over games.
    """
    credits: dict[str, float] = defaultdict(float)
    for touches, count in paths.converting().items():
        members = set(touches)
        for touch in members:
            credits[touch] += count / len(members)
    return dict(credits)


@dataclass
class MarkovChain:
    """An absorbing Markov chain over touch states counted from paths (order k)."""

    states: list[tuple[str, ...]]  # transient states; index 0 is the empty tuple, standing for start
    Q: Any  # (n, n) sparse: transient -> transient probabilities
    r: np.ndarray  # (n,) transient -> conversion probabilities

    @classmethod
    def fit(cls, paths: Paths, order: int) -> MarkovChain:
        index: dict[tuple[str, ...], int] = {(): 0}
        counts: Counter = Counter()  # (from, to) -> count; to = -1 conversion, -2 null
        for (touches, converted), n in Counter(zip(paths.touches, paths.converted)).items():
            prev = 0
            for i in range(len(touches)):
                state = touches[max(0, i - order + 1): i + 1]
                j = index.setdefault(state, len(index))
                counts[prev, j] += n
                prev = j
            counts[prev, -1 if converted else -2] += n
        size = len(index)
        out = np.zeros(size)
        for (i, _), n in counts.items():
            out[i] += n
        rows, cols, probs = [], [], []
        r = np.zeros(size)
        for (i, j), n in counts.items():
            if j == -1:
                r[i] += n / out[i]
            elif j >= 0:
                rows.append(i)
                cols.append(j)
                probs.append(n / out[i])
        from scipy import sparse

        Q = sparse.csr_matrix((probs, (rows, cols)), shape=(size, size))
        return cls(list(index), Q, r)

    def absorption(self, removed: set[int] | frozenset[int] = frozenset()) -> np.ndarray:
        """P(absorbed in conversion) from each transient state, solving (I - Q) x = r.

        Removed states are sent straight to null: their rows of Q and r become zero, so x = 0 there.
        """
        from scipy import sparse
        from scipy.sparse.linalg import spsolve

        keep = np.ones(len(self.states))
        keep[list(removed)] = 0.0
        D = sparse.diags(keep)
        A = (sparse.identity(len(self.states)) - D @ self.Q).tocsc()
        x = spsolve(A, keep * self.r)
        return np.atleast_1d(np.asarray(x, dtype=float))

    def conversion_probability(self, removed: set[int] | frozenset[int] = frozenset()) -> float:
        return float(self.absorption(removed)[0])


def _markov_credits(paths: Paths, order: int) -> tuple[dict[str, float], dict[str, float], float]:
    chain = MarkovChain.fit(paths, order)
    base = chain.conversion_probability()
    touchpoints = sorted({t for s in chain.states for t in s})
    effects = {}
    for touch in touchpoints:
        removed = {i for i, s in enumerate(chain.states) if touch in s}
        effects[touch] = 1.0 - chain.conversion_probability(removed) / base
    total = sum(effects.values())
    credits = {t: paths.conversions * e / total for t, e in effects.items()}
    return credits, effects, base


def _attribute(paths: Paths, model: str, order: int) -> AttributionResult:
    effects, probability = None, None
    if model == "markov":
        credits, effects, probability = _markov_credits(paths, order)
    elif model == "shapley":
        credits = _shapley_credits(paths)
    else:
        credits = _rule_credits(paths, model)
    ranked = dict(sorted(credits.items(), key=lambda kv: (-kv[1], kv[0])))
    index: dict[str, set[str]] = defaultdict(set)
    for user, touches, converted in zip(paths.users, paths.touches, paths.converted):
        if converted:
            for touch in set(touches):
                index[touch].add(user)
    return AttributionResult(
        model=model, touchpoint=paths.touchpoint, conversion=paths.conversion, lookback=paths.lookback,
        conversions=paths.conversions, paths=paths.conversions,
        non_converting_paths=len(paths.converted) - paths.conversions,
        credits=ranked, sessions={k: paths.sessions.get(k, 0) for k in ranked},
        order=order if model == "markov" else None,
        removal_effects={k: effects[k] for k in ranked} if effects is not None else None,
        conversion_probability=probability,
        user_index={k: sorted(index[k]) for k in ranked},
    )


# -- checks -----------------------------------------------------------------------------------------

def _check_model(model: str) -> str:
    name = str(model).strip().lower().replace("-", "_")
    name = {"time": "time_decay", "position_based": "position", "u_shaped": "position"}.get(name, name)
    if name not in MODELS:
        raise JourneymapError(f"The attribution model must be one of {', '.join(MODELS)}. Got '{model}'.")
    return name


def _check_order(order: int) -> int:
    if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= 4:
        raise JourneymapError(f"The Markov order must be a whole number from 1 to 4. Got '{order}'.")
    return order


def _touch_expr(touchpoint: str) -> str:
    """SQL for the touchpoint: an events column, or properties.KEY for a JSON property."""
    if touchpoint in _COLUMNS:
        return touchpoint
    if touchpoint.startswith("properties."):
        key = touchpoint.removeprefix("properties.")
        if _KEY.match(key):
            return f"(properties->>{lit('$.' + key)})"
    raise JourneymapError(
        f"The touchpoint must be an event column ({', '.join(_COLUMNS)}) or properties.KEY with KEY made of "
        f"letters, digits and '_'. Got '{touchpoint}'.")


def _duration_text(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
