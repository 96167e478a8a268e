"""Do users come back? Cohort retention, lifecycle states and stickiness, per day, week or month.

Periods are ``date_trunc`` of the UTC timestamp (weeks start on Monday). Everything is computed in
DuckDB over ``journey_events``, so filters apply: with ``--from`` a user's "first" activity is the
first one inside the window. The last period in the data is usually partial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd

from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Journeys, lit, require_events

PERIODS = ("day", "week", "month")
KINDS = ("first_time", "recurring")
STATES = ("new", "returning", "resurrecting", "dormant")
_DAYS_IN = {"week": 7, "month": 31}


def _day(value: Any) -> date:
    return value.date() if hasattr(value, "date") and callable(value.date) else value


# ---------------------------------------------------------------------------------------------
# Cohort retention


@dataclass(frozen=True)
class Cohort:
    """One cohort: its start period, its size, and how many of it were retained k periods later."""

    cohort: date
    users: int  # the denominator of every rate in the row
    retained: list[int | None]  # None: period cohort + k is not in the data yet

    @property
    def rates(self) -> list[float | None]:
        return [None if n is None else n / self.users for n in self.retained]

    def to_dict(self) -> dict[str, Any]:
        return {"cohort": self.cohort.isoformat(), "users": self.users, "retained": self.retained,
                "rates": self.rates}


@dataclass
class RetentionResult:
    """Cohort retention table: rows are cohorts, column k is period cohort + k."""

    period: str
    kind: str
    event: str | None
    return_event: str | None
    periods: int
    cohorts: list[Cohort]
    _members: pd.DataFrame = field(repr=False)  # user_id, cohort (one row per cohort occurrence)
    _returns: pd.DataFrame = field(repr=False)  # user_id, cohort, k

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "kind": self.kind, "event": self.event, "return_event": self.return_event,
                "periods": self.periods, "cohorts": [c.to_dict() for c in self.cohorts]}

    def to_frame(self) -> pd.DataFrame:
        """One row per cohort and k: cohort, users (denominator), k, retained, rate."""
        rows = [{"cohort": c.cohort, "users": c.users, "k": k, "retained": n, "rate": r}
                for c in self.cohorts for k, (n, r) in enumerate(zip(c.retained, c.rates))]
        return pd.DataFrame(rows, columns=["cohort", "users", "k", "retained", "rate"])

    def figure(self):
        """A heatmap of retention rates, cohorts down, periods since the cohort across."""
        import plotly.graph_objects as go

        y = [f"{c.cohort.isoformat()} ({c.users:,})" for c in self.cohorts]
        z = [[None if r is None else 100 * r for r in c.rates] for c in self.cohorts]
        text = [["" if n is None else f"{n:,}" for n in c.retained] for c in self.cohorts]
        fig = go.Figure(go.Heatmap(
            z=z, x=[f"{self.period} {k}" for k in range(self.periods)], y=y, text=text,
            texttemplate="%{z:.0f}%", colorscale="Blues", zmin=0, zmax=100, colorbar_title="% retained",
            hovertemplate="cohort %{y}<br>%{x}: %{text} users, %{z:.1f}%<extra></extra>",
        ))
        what = "first " + (self.event or "event") if self.kind == "first_time" else (self.event or "any event")
        fig.update_layout(title=f"{self.kind.replace('_', '-')} retention by {self.period}: cohort = {what}, "
                                f"returned = {self.return_event or 'any event'} (cohort size in brackets)",
                          yaxis_autorange="reversed")
        return fig

    def users(self, cohort: str | date, k: int | None = None) -> list[str]:
        """The users of a cohort (k=None) or those of it retained k periods later."""
        day = date.fromisoformat(cohort) if isinstance(cohort, str) else cohort
        if day not in {c.cohort for c in self.cohorts}:
            raise JourneymapError(f"No {self.period} cohort starts on {day.isoformat()}; cohorts are "
                                  f"{', '.join(c.cohort.isoformat() for c in self.cohorts[:5])}...")
        if k is None:
            frame = self._members[self._members["cohort"] == day]
        else:
            frame = self._returns[(self._returns["cohort"] == day) & (self._returns["k"] == k)]
        return sorted(set(frame["user_id"].tolist()))


def retention(journeys: Journeys, period: str = "week", kind: str = "first_time", event: str | None = None,
              return_event: str | None = None, periods: int = 8) -> RetentionResult:
    """Cohort retention. first_time: a user's cohort is the period of their first ``event``;
    recurring: every period in which they did ``event`` starts a cohort occurrence. Retained at k:
    did ``return_event`` in period cohort + k (both default to any event; k=0 is the cohort period)."""
    _check_period(period, PERIODS, "retention()")
    if kind not in KINDS:
        raise JourneymapError(f"The retention kind must be 'first_time' or 'recurring'. Got '{kind}'.")
    if periods < 1:
        raise JourneymapError(f"The number of periods to follow must be at least 1. Got {periods}.")
    _check_events(journeys, event, return_event)
    require_events(journeys)
    unit = period
    starts = (f"SELECT user_id, min(date_trunc('{unit}', ts))::DATE AS cohort FROM journey_events "
              f"WHERE {_is(event)} GROUP BY user_id") if kind == "first_time" else (
              f"SELECT DISTINCT user_id, date_trunc('{unit}', ts)::DATE AS cohort FROM journey_events WHERE {_is(event)}")
    base = f"""
        , starts AS ({starts}),
        back AS (SELECT DISTINCT user_id, date_trunc('{unit}', ts)::DATE AS p FROM journey_events
                 WHERE {_is(return_event)}),
        returns AS (SELECT s.user_id, s.cohort, date_diff('{unit}', s.cohort, b.p) AS k
                    FROM starts s JOIN back b ON b.user_id = s.user_id AND b.p >= s.cohort
                    WHERE date_diff('{unit}', s.cohort, b.p) < {int(periods)})"""
    members = journeys.query(f"{base} SELECT user_id, cohort FROM starts").df()
    returns = journeys.query(f"{base} SELECT user_id, cohort, k FROM returns").df()
    sizes = journeys.query(f"""{base}
        SELECT cohort, count(*) AS users,
               date_diff('{unit}', cohort, (SELECT max(date_trunc('{unit}', ts))::DATE FROM journey_events)) AS seen
        FROM starts GROUP BY cohort ORDER BY cohort""").fetchall()
    cells = journeys.query(f"{base} SELECT cohort, k, count(*) FROM returns GROUP BY ALL").fetchall()
    counts = {(_day(c), int(k)): int(n) for c, k, n in cells}
    cohorts = [Cohort(_day(c), int(n), [counts.get((_day(c), k), 0) if k <= seen else None for k in range(periods)])
               for c, n, seen in sizes]
    for frame in (members, returns):
        frame["cohort"] = pd.to_datetime(frame["cohort"]).dt.date
    return RetentionResult(period, kind, event, return_event, periods, cohorts, members, returns)


# ---------------------------------------------------------------------------------------------
# Lifecycle


@dataclass
class LifecycleResult:
    """Per period: new, returning and resurrecting users, and dormant ones as a negative count."""

    period: str
    event: str | None
    rows: list[dict[str, Any]]  # {"period", "new", "returning", "resurrecting", "dormant", "active"}
    _states: pd.DataFrame = field(repr=False)  # user_id, period, state

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "event": self.event,
                "periods": [{**r, "period": r["period"].isoformat()} for r in self.rows]}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["period", *STATES, "active"])

    def figure(self):
        """Stacked bars: the three active states up, dormant down."""
        import plotly.graph_objects as go

        colors = {"new": "#2a9d8f", "returning": "#264653", "resurrecting": "#e9c46a", "dormant": "#e76f51"}
        x = [r["period"] for r in self.rows]
        fig = go.Figure([go.Bar(name=s, x=x, y=[r[s] for r in self.rows], marker_color=colors[s]) for s in STATES])
        fig.update_layout(barmode="relative", title=f"Lifecycle by {self.period} (active users = new + returning + "
                                                    f"resurrecting; dormant shown below zero)",
                          yaxis_title="users")
        return fig

    def users(self, period: str | date, state: str) -> list[str]:
        """The users in a lifecycle state in a period (dormant: active the period before, not this one)."""
        if state not in STATES:
            raise JourneymapError(f"A lifecycle state is one of {', '.join(STATES)}. Got '{state}'.")
        day = date.fromisoformat(period) if isinstance(period, str) else period
        frame = self._states[(self._states["period"] == day) & (self._states["state"] == state)]
        return sorted(set(frame["user_id"].tolist()))


def lifecycle(journeys: Journeys, period: str = "week", event: str | None = None) -> LifecycleResult:
    """PostHog's lifecycle: new = first activity ever (in the filtered data) in this period;
    returning = active this period and the previous one; resurrecting = active this period, not the
    previous one, but before; dormant = active the previous period but not this one (negative)."""
    _check_period(period, PERIODS, "lifecycle()")
    _check_events(journeys, event)
    require_events(journeys)
    step = f"INTERVAL 1 {period}"
    states = journeys.query(f"""
        , act AS (SELECT DISTINCT user_id, date_trunc('{period}', ts)::DATE AS p FROM journey_events WHERE {_is(event)}),
        first AS (SELECT user_id, min(p) AS first FROM act GROUP BY user_id),
        last AS (SELECT max(p) AS last FROM act)
        SELECT a.user_id, a.p AS period,
               CASE WHEN a.p = f.first THEN 'new' WHEN prev.user_id IS NOT NULL THEN 'returning'
                    ELSE 'resurrecting' END AS state
        FROM act a JOIN first f USING (user_id)
        LEFT JOIN act prev ON prev.user_id = a.user_id AND prev.p = (a.p - {step})::DATE
        UNION ALL
        SELECT a.user_id, (a.p + {step})::DATE, 'dormant'
        FROM act a LEFT JOIN act nxt ON nxt.user_id = a.user_id AND nxt.p = (a.p + {step})::DATE
        WHERE nxt.user_id IS NULL AND (a.p + {step})::DATE <= (SELECT last FROM last)
        ORDER BY 2, 3, 1""").df()
    calendar = journeys.query(f"""
        , act AS (SELECT date_trunc('{period}', ts)::DATE AS p FROM journey_events WHERE {_is(event)})
        SELECT unnest(generate_series(min(p)::TIMESTAMP, max(p)::TIMESTAMP, {step}))::DATE FROM act""").fetchall()
    states["period"] = pd.to_datetime(states["period"]).dt.date
    counts = states.groupby(["period", "state"]).size().to_dict()
    rows = []
    for (p,) in calendar:
        p = _day(p)
        if p is None:
            continue
        row: dict[str, Any] = {"period": p, **{s: int(counts.get((p, s), 0)) for s in STATES}}
        row["active"] = row["new"] + row["returning"] + row["resurrecting"]
        row["dormant"] = -row["dormant"]
        rows.append(row)
    return LifecycleResult(period, event, rows, states)


# ---------------------------------------------------------------------------------------------
# Stickiness


@dataclass
class StickinessResult:
    """How many days of each period its active users were active: users[d - 1] active on d days."""

    period: str
    event: str | None
    users_by_days: list[int]  # over all periods: user-periods active on exactly 1, 2, ... days
    by_period: list[dict[str, Any]]  # {"period", "active", "users": [...]}
    _days: pd.DataFrame = field(repr=False)  # user_id, period, days

    @property
    def max_days(self) -> int:
        return _DAYS_IN[self.period]

    @property
    def total(self) -> int:
        return sum(self.users_by_days)

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "event": self.event, "days": list(range(1, self.max_days + 1)),
                "users": self.users_by_days, "user_periods": self.total,
                "share": [n / self.total if self.total else None for n in self.users_by_days],
                "by_period": [{**r, "period": r["period"].isoformat()} for r in self.by_period]}

    def to_frame(self) -> pd.DataFrame:
        """One row per period and number of active days."""
        rows = [{"period": r["period"], "days": d + 1, "users": n, "active": r["active"],
                 "share": n / r["active"] if r["active"] else None}
                for r in self.by_period for d, n in enumerate(r["users"])]
        return pd.DataFrame(rows, columns=["period", "days", "users", "active", "share"])

    def figure(self):
        """Bars: user-periods by number of active days, with their share of all active user-periods."""
        import plotly.graph_objects as go

        days = list(range(1, self.max_days + 1))
        share = [n / self.total if self.total else 0 for n in self.users_by_days]
        fig = go.Figure(go.Bar(x=days, y=self.users_by_days, customdata=share,
                               hovertemplate="%{x} days: %{y} (%{customdata:.1%})<extra></extra>"))
        fig.update_layout(title=f"Stickiness: active days per {self.period} ({self.total:,} active user-{self.period}s)",
                          xaxis_title=f"days active in the {self.period}", yaxis_title=f"user-{self.period}s")
        return fig

    def users(self, days: int, period: str | date | None = None) -> list[str]:
        """The users active on exactly ``days`` days of a period (of any period when None)."""
        frame = self._days[self._days["days"] == days]
        if period is not None:
            day = date.fromisoformat(period) if isinstance(period, str) else period
            frame = frame[frame["period"] == day]
        return sorted(set(frame["user_id"].tolist()))


def stickiness(journeys: Journeys, period: str = "week", event: str | None = None) -> StickinessResult:
    """For each user and period they were active in: on how many distinct days (UTC) of it."""
    _check_period(period, tuple(_DAYS_IN), "stickiness()",
                  hint=" (it counts active days within each period, so a day is too short)")
    _check_events(journeys, event)
    require_events(journeys)
    frame = journeys.query(f"""
        SELECT user_id, date_trunc('{period}', ts)::DATE AS period, count(DISTINCT ts::DATE) AS days
        FROM journey_events WHERE {_is(event)} GROUP BY ALL ORDER BY period, user_id""").df()
    frame["period"] = pd.to_datetime(frame["period"]).dt.date
    max_days = _DAYS_IN[period]
    counts = frame.groupby(["period", "days"]).size().to_dict()
    by_period = []
    for p in sorted(frame["period"].unique()):
        users = [int(counts.get((p, d), 0)) for d in range(1, max_days + 1)]
        by_period.append({"period": p, "active": sum(users), "users": users})
    overall = [sum(r["users"][d] for r in by_period) for d in range(max_days)]
    return StickinessResult(period, event, overall, by_period, frame)


# ---------------------------------------------------------------------------------------------


def _is(event: str | None) -> str:
    return "TRUE" if event is None else f"event_type = {lit(event)}"


def _check_period(period: str, allowed: tuple[str, ...], what: str, hint: str = "") -> None:
    if period not in allowed:
        raise JourneymapError(f"The period of {what} must be one of {', '.join(allowed)}{hint}. Got '{period}'.")


def _check_events(journeys: Journeys, *events: str | None) -> None:
    known = set(journeys.settings.vocabulary.event_types)
    for event in events:
        if event is not None and event not in known:
            raise JourneymapError(f"Unknown event type '{event}': use one of {', '.join(sorted(known))}.")


__all__ = ["Cohort", "LifecycleResult", "RetentionResult", "StickinessResult", "lifecycle", "retention",
           "stickiness"]
