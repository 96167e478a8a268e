"""Conversion funnels: how many users (or sessions) go from one event type to the next, how fast,
and who drops off where. PostHog-like semantics, all in DuckDB SQL over ``journey_events``.

Semantics
---------
* Entity: ``per="user"`` follows all of a user's events; ``per="session"`` each session apart
  (``session_key``). An entity *enters* at its first occurrence of step 1, and the conversion
  ``window`` (default one day) runs from that entry.
* ``order="ordered"``: each later step is the first event of its type after the previous matched
  step (other events may happen in between), within the window.
  ``order="strict"``: the steps must be consecutive events of the entity, nothing in between.
  ``order="any"``: the count at step k is the entities that did steps 1..k in any order, all
  within one window: for each step the occurrence nearest the entry (within the window before or
  after it) is taken, and the steps 1..k must span no more than the window.
* Ties: events with the same timestamp are ordered as the funnel lists their types (then by
  event id), so a tie never breaks a conversion and results do not depend on storage order.
* Optional steps (never the first or last): an entity that skips one still counts for the later
  steps. The optional step's own count is those who did it in order: in ``ordered`` mode,
  between the required steps around it; in ``strict`` mode, as the next event.
* Rates and times of a step are measured from the previous *required* step: ``rate_from_previous``
  is count / that step's count, ``median_seconds_from_previous`` the exact median of the time
  between the two matched events (in ``any`` mode, of how much later steps 1..k were complete
  than the steps before). ``step_windows={"purchase": "30m"}`` caps that time for a step
  (ordered and strict modes only).
* Exclusion: an entity that does an excluded event between its entry and its last matched step
  is dropped from the funnel altogether (from every count, ``entered`` included).
* Breakdown: each entity is labelled with its entry event's value of a ``journey_events`` column
  or of ``properties.KEY`` (missing values read ``(none)``); every value gets the same steps, and
  ``lift`` = the value's conversion / the whole funnel's conversion.
* Time to convert runs from the first to the last matched step of converted entities;
  ``over_time`` counts entries and conversions per day or week of entry.

``FunnelResult.users(step)`` / ``dropped(step)`` name the entities behind each count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from typing import Any

import duckdb
import pandas as pd

from journeymap.config import parse_duration
from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Journeys, jsonable, lit, require_events, seconds_between

__all__ = ["FunnelResult", "FunnelStep", "funnel"]

ORDERS = ("ordered", "strict", "any")
PER = ("user", "session")
PERIODS = ("day", "week")
NONE_VALUE = "(none)"
PERCENTILES = (10, 25, 50, 75, 90)
# Histogram edges people read at a glance, cut at the window (seconds).
_EDGES = (0, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400,
          14 * 86400, 30 * 86400)


@dataclass(frozen=True)
class FunnelStep:
    """One step's figures; ``previous`` is the index of the step its rate and time are measured from."""

    index: int
    name: str
    optional: bool
    count: int
    rate_from_start: float | None
    rate_from_previous: float | None
    median_seconds_from_previous: float | None
    previous: int | None
    dropped: int  # entities at the previous required step that did not reach this one

    def to_dict(self) -> dict[str, Any]:
        return {k: jsonable(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class BreakdownValue:
    value: str
    entered: int
    converted: int
    conversion_rate: float | None
    lift: float | None  # conversion_rate / the whole funnel's conversion_rate
    steps: list[FunnelStep]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "entered": self.entered, "converted": self.converted,
                "conversion_rate": jsonable(self.conversion_rate), "lift": jsonable(self.lift),
                "steps": [s.to_dict() for s in self.steps]}


@dataclass
class FunnelResult:
    """A funnel's figures, its denominators, and the entities behind every count."""

    steps: list[FunnelStep]
    entered: int
    converted: int
    window: str
    order: str
    per: str
    exclude: tuple[str, ...] = ()
    step_windows: dict[str, str] = field(default_factory=dict)
    breakdown: str | None = None
    breakdown_values: list[BreakdownValue] = field(default_factory=list)
    time_to_convert: dict[str, Any] = field(default_factory=dict)
    over_time: str | None = None
    over_time_rows: list[dict[str, Any]] = field(default_factory=list)
    _load: Callable[[], pd.DataFrame] | None = field(default=None, repr=False, compare=False)
    _entities: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def entities(self) -> pd.DataFrame:
        """One row per entity: entity, user_id, value (breakdown), r0..r{n-1} (reached step k).
        Fetched from the store on first use, so ask while its Journeys is open."""
        if self._entities is None:
            self._entities = self._load() if self._load else pd.DataFrame()
        return self._entities

    @property
    def conversion_rate(self) -> float | None:
        return self.converted / self.entered if self.entered else None

    # -- who is behind a number ------------------------------------------------------------
    def _index(self, step: int | str) -> int:
        if isinstance(step, int) and not isinstance(step, bool):
            if 0 <= step < len(self.steps):
                return step
        else:
            for s in self.steps:
                if s.name == step:
                    return s.index
        names = ", ".join(f"{s.index}={s.name}" for s in self.steps)
        raise JourneymapError(f"No funnel step {step!r}; give a step name or a 0-based index ({names}).")

    def _pick(self, mask: pd.Series, value: str | None, owners: bool) -> list[str]:
        frame = self.entities
        if value is not None:
            mask = mask & (frame["value"] == value)
        column = "user_id" if owners else "entity"
        return sorted(set(frame.loc[mask, column]))

    def users(self, step: int | str = -1, value: str | None = None, owners: bool = False) -> list[str]:
        """The entities counted at a step (name or 0-based index; default the last): user
        pseudonyms, or session keys when per='session' (``owners=True`` gives their users)."""
        k = len(self.steps) - 1 if step == -1 else self._index(step)
        if self.entities.empty:
            return []
        return self._pick(self.entities[f"r{k}"], value, owners)

    def dropped(self, step: int | str, value: str | None = None, owners: bool = False) -> list[str]:
        """The entities that reached the previous required step but not this one."""
        k = self._index(step)
        prev = self.steps[k].previous
        if prev is None or self.entities.empty:
            return []
        frame = self.entities
        return self._pick(frame[f"r{prev}"] & ~frame[f"r{k}"], value, owners)

    # -- outputs ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "steps": [s.to_dict() for s in self.steps],
            "entered": self.entered,
            "converted": self.converted,
            "conversion_rate": jsonable(self.conversion_rate),
            "window": self.window,
            "order": self.order,
            "per": self.per,
            "exclude": list(self.exclude),
            "step_windows": dict(self.step_windows),
            "time_to_convert": self.time_to_convert,
        }
        if self.breakdown:
            data["breakdown"] = {"by": self.breakdown, "values": [v.to_dict() for v in self.breakdown_values]}
        if self.over_time:
            data["over_time"] = {"period": self.over_time, "rows": self.over_time_rows}
        return data

    def to_frame(self) -> pd.DataFrame:
        """One row per step; with a breakdown, per value too (the whole as value '(all)')."""
        rows = [{"value": "(all)", **s.to_dict()} for s in self.steps]
        for v in self.breakdown_values:
            rows += [{"value": v.value, **s.to_dict(), "lift": v.lift} for s in v.steps]
        frame = pd.DataFrame(rows)
        return frame if self.breakdown else frame.drop(columns="value")

    def figure(self):
        """Bars of the share of entrants reaching each step (grouped by value with a breakdown)."""
        import plotly.graph_objects as go

        labels = [f"{s.index + 1}. {s.name}" + (" (optional)" if s.optional else "") for s in self.steps]
        groups = [("all", self.entered, self.steps)] + [(v.value, v.entered, v.steps) for v in self.breakdown_values]
        fig = go.Figure()
        for name, entered, steps in groups:
            fig.add_bar(x=labels, y=[s.rate_from_start for s in steps], name=f"{name} (n={entered:,})",
                        text=[f"{s.count:,}" for s in steps], textposition="outside",
                        customdata=[[s.rate_from_previous, s.median_seconds_from_previous] for s in steps],
                        hovertemplate="%{x}<br>%{text} reached, %{y:.1%} of entrants"
                                      "<br>%{customdata[0]:.1%} of previous<extra>%{fullData.name}</extra>")
        fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_title=f"share of entering {self.per}s",
                          title=f"Funnel ({self.order}, window {self.window}, per {self.per})"
                                + (f" by {self.breakdown}" if self.breakdown else ""))
        return fig


# ---------------------------------------------------------------------------------------------
def funnel(journeys: Journeys, steps: Sequence[str], window: str | timedelta = "1d", order: str = "ordered",
           per: str = "user", exclude: Iterable[str] = (), optional: Iterable[str | int] = (),
           breakdown: str | None = None, step_windows: Mapping[str | int, str | timedelta] | None = None,
           over_time: str | None = None) -> FunnelResult:
    """The funnel through ``steps`` (canonical event types); see the module docstring."""
    vocab = journeys.settings.vocabulary
    steps = [_event_type(vocab, s, "steps") for s in steps]
    if len(steps) < 2:
        raise JourneymapError(f"A funnel needs at least 2 steps, like page_view,purchase. Got {len(steps)}.")
    win = parse_duration(window, "'window' parameter of funnel()") if not isinstance(window, timedelta) else window
    _choice("order", order, ORDERS)
    _choice("per", per, PER)
    if over_time is not None:
        _choice("over_time", over_time, PERIODS)
    excluded = tuple(dict.fromkeys(_event_type(vocab, e, "exclude") for e in exclude))
    clash = [e for e in excluded if e in steps]
    if clash:
        raise JourneymapError(f"Event type '{clash[0]}' is both a step and excluded; drop it from one of them.")
    if order == "any" and len(set(steps)) < len(steps):
        raise JourneymapError("An any-order funnel cannot repeat a step; use order='ordered' for repeats.")

    n = len(steps)
    opt = {k for o in optional for k in _positions(steps, o, "optional")}
    if 0 in opt or n - 1 in opt:
        raise JourneymapError("The first and last steps of a funnel cannot be optional.")
    sw: dict[int, float] = {}
    for key, text in (step_windows or {}).items():
        seconds = (text if isinstance(text, timedelta) else
                   parse_duration(text, f"step window of '{key}'")).total_seconds()
        for k in _positions(steps, key, "step_windows"):
            if k == 0:
                raise JourneymapError("The first step has no step window; the funnel's window starts there.")
            sw[k] = seconds
    if sw and order == "any":
        raise JourneymapError("Step windows need an order; use order='ordered' or 'strict' with step_windows.")

    require_events(journeys)
    value_sql = _breakdown_sql(journeys, breakdown) if breakdown else "NULL"
    sql = _entity_sql(steps, opt, win.total_seconds(), sw, order, per, excluded, value_sql)
    # A per-user funnel reads plain events unless it breaks down by a session column.
    sessions = per == "session" or breakdown in ("session_key", "stage", "stage_order", "step")
    try:
        rows = journeys.query(f"{sql}\n{_summary_sql(n, win, breakdown, over_time)}", sessions=sessions).df()
    except duckdb.Error as exc:  # pragma: no cover - a bug here, reported plainly
        raise JourneymapError(f"The funnel query failed: {exc}") from exc
    keep = ["entity", "user_id", "value"] + [f"r{k}" for k in range(n)]

    def load() -> pd.DataFrame:  # the entities behind the counts, fetched when first asked for
        try:
            return journeys.query(f"{sql}\nSELECT {', '.join(keep)} FROM ent", sessions=sessions).df()
        except duckdb.ConnectionException:
            raise JourneymapError("The store behind this funnel is closed; ask for its users inside "
                                  "`with Journeys.open(...)`, before the store closes.") from None

    return _summarize(rows, load, steps, opt, win, order, per, excluded, sw, breakdown, over_time)


def _event_type(vocab, name: str, what: str) -> str:
    canonical = vocab.canonical(str(name).strip())
    if canonical is None:
        raise JourneymapError(f"Unknown event type '{name}' in the funnel's {what}; "
                              f"expected one of {', '.join(vocab.event_types)}.")
    return canonical


def _choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise JourneymapError(f"The '{what}' parameter of funnel() must be one of "
                              f"{', '.join(map(repr, allowed))}. Got {value!r}.")


def _positions(steps: list[str], key: str | int, what: str) -> list[int]:
    if isinstance(key, int) and not isinstance(key, bool):
        if 0 <= key < len(steps):
            return [key]
    elif key in steps:
        return [k for k, s in enumerate(steps) if s == key]
    raise JourneymapError(f"'{key}' in {what} is not one of the funnel's steps ({', '.join(steps)}).")


def _breakdown_sql(journeys: Journeys, breakdown: str) -> str:
    if breakdown.startswith("properties."):
        key = breakdown[len("properties."):]
        if not key:
            raise JourneymapError("A properties breakdown needs a key, like properties.coupon.")
        return f"properties->>{lit('$.' + key)}"
    columns = journeys.event_columns() + ["session_key", "stage", "stage_order", "step"]
    if breakdown not in columns or breakdown in ("properties", "event_id"):
        choices = ", ".join(c for c in columns if c not in ("properties", "event_id"))
        raise JourneymapError(f"Cannot break a funnel down by '{breakdown}'; use one of {choices} "
                              "or properties.KEY.")
    return f'CAST("{breakdown}" AS VARCHAR)'


def _entity_sql(steps: list[str], opt: set[int], window: float, sw: dict[int, float], order: str, per: str,
                excluded: tuple[str, ...], value_sql: str) -> str:
    """One row per entity: entity, user_id, value, t0, and per step k: r{k} (reached), d{k}
    (seconds from the previous required step), plus ttc (seconds from first to last step)."""
    n = len(steps)
    entity = "user_id" if per == "user" else "session_key"
    rank = "CASE event_type " + " ".join(f"WHEN {lit(s)} THEN {steps.index(s)}" for s in dict.fromkeys(steps)) \
        + f" ELSE {n} END"
    # Strict needs every event to know what is consecutive; the others only the named types.
    names = list(dict.fromkeys(steps + list(excluded)))
    keep = "TRUE" if order == "strict" else f"event_type IN ({', '.join(map(lit, names))})"
    W = f"INTERVAL {window} SECOND"
    # An event's place in its entity's sequence is (ts, rank, event_id), numbered by a window as
    # ``pos``. An ordered funnel of distinct steps with no exclusion can skip that window (the
    # largest cost): there a later step's rank is always higher, so "after the previous matched
    # event" is exactly ``ts >= its ts``, and the matched event's ts can stand in for its pos.
    by_ts = order == "ordered" and len(set(steps)) == n and not excluded
    if by_ts:
        ctes = [f"""ev AS (
        SELECT {entity} AS entity, user_id, ts, event_type, {value_sql} AS value, ts AS pos, event_id
        FROM journey_events WHERE {keep})""",
                f"""m0 AS (
        SELECT entity, arg_min(user_id, (ts, event_id)) AS user_id, arg_min(value, (ts, event_id)) AS value,
               min(ts) AS p, min(ts) AS t
        FROM ev WHERE event_type = {lit(steps[0])} GROUP BY entity)"""]
        after, before = ">=", "<="
    else:
        ctes = [f"""ev AS (
        SELECT {entity} AS entity, user_id, ts, event_type, {value_sql} AS value,
               row_number() OVER (PARTITION BY {entity} ORDER BY ts, {rank}, event_id) AS pos
        FROM journey_events WHERE {keep})""",
                f"""m0 AS (
        SELECT entity, arg_min(user_id, pos) AS user_id, arg_min(value, pos) AS value,
               min(pos) AS p, arg_min(ts, pos) AS t
        FROM ev WHERE event_type = {lit(steps[0])} GROUP BY entity)"""]
        after, before = ">", "<"
    ctes.append("c0 AS (SELECT entity, t AS t0, p AS ap, t AS rt FROM m0)")
    required = [k for k in range(n) if k not in opt]
    prev_req = {k: max(r for r in required if r < k) for k in range(1, n)}
    chain = {0: "c0"}  # the chain state each step starts from: entity, t0, ap (anchor pos), rt (last required ts)
    if order == "any":
        for k in range(1, n):
            ctes.append(f"""m{k} AS (
        SELECT c.entity, min_by(e.pos, (abs(epoch_us(e.ts) - epoch_us(c.t0)), e.pos)) AS p,
               min_by(e.ts, (abs(epoch_us(e.ts) - epoch_us(c.t0)), e.pos)) AS t
        FROM c0 c JOIN ev e ON e.entity = c.entity AND e.event_type = {lit(steps[k])}
             AND e.ts BETWEEN c.t0 - {W} AND c.t0 + {W}
        GROUP BY c.entity)""")
    else:
        deferred = []
        for k in range(1, n):
            cur = chain[k - 1]
            cap = f" AND e.ts <= c.rt + INTERVAL {sw[k]} SECOND" if k in sw else ""
            match = f"""FROM {{src}} c JOIN ev e ON e.entity = c.entity AND e.event_type = {lit(steps[k])}
             AND {{cond}} AND e.ts <= c.t0 + {W}{cap}"""
            pick = "SELECT c.entity, min(e.pos) AS p, arg_min(e.ts, e.pos) AS t"
            if order == "strict":
                ctes.append(f"m{k} AS ({pick} {match.format(src=cur, cond='e.pos = c.ap + 1')} GROUP BY c.entity)")
                if k in opt:  # taken when it is the next event; the chain moves past it
                    ctes.append(f"c{k} AS (SELECT c.entity, c.t0, coalesce(m.p, c.ap) AS ap, c.rt "
                                f"FROM {cur} c LEFT JOIN m{k} m USING (entity))")
                    chain[k] = f"c{k}"
                    continue
            elif k in opt:  # between the required steps around it, once those are matched
                nxt = min(r for r in required if r > k)
                deferred.append(f"""m{k} AS ({pick}
        FROM {cur} c LEFT JOIN m{nxt} x ON x.entity = c.entity
             JOIN ev e ON e.entity = c.entity AND e.event_type = {lit(steps[k])}
             AND e.pos {after} c.ap AND (x.p IS NULL OR e.pos {before} x.p) AND e.ts <= c.t0 + {W}{cap}
        GROUP BY c.entity)""")
                chain[k] = cur
                continue
            else:
                ctes.append(f"m{k} AS ({pick} {match.format(src=cur, cond=f'e.pos {after} c.ap')} GROUP BY c.entity)")
            ctes.append(f"c{k} AS (SELECT c.entity, c.t0, m.p AS ap, m.t AS rt FROM {cur} c JOIN m{k} m USING (entity))")
            chain[k] = f"c{k}"
        ctes += deferred

    # Reached flags and completion times. Required step k is reached when matched (and, for
    # 'any', all required steps up to k span at most the window); optional ones need their
    # previous required step too.
    cols, reached, done = [], {0: "TRUE"}, {0: "m0.t"}
    for k in range(1, n):
        pr = prev_req[k]
        if order == "any":
            upto = [r for r in required if r <= pr] + [k]
            ts = ", ".join(f"m{r}.t" for r in upto)
            ok = " AND ".join(f"m{r}.p IS NOT NULL" for r in upto)
            reached[k] = f"({ok} AND {seconds_between(f'greatest({ts})', f'least({ts})')} <= {window})"
            done[k] = f"greatest({ts})"
        else:
            reached[k] = f"(m{k}.p IS NOT NULL AND {reached[pr]})"
            done[k] = f"m{k}.t"
    for k in range(n):
        cols.append(f"coalesce({reached[k]}, FALSE) AS r{k}")
        cols.append(f"m{k}.p AS p{k}")
        if k:
            cols.append(f"CASE WHEN {reached[k]} THEN {seconds_between(done[k], done[prev_req[k]])} END AS d{k}")
    last = n - 1
    first_t = "m0.t" if order != "any" else "least(" + ", ".join(f"m{r}.t" for r in required) + ")"
    cols.append(f"CASE WHEN {reached[last]} THEN {seconds_between(done[last], first_t)} END AS ttc")
    joins = " ".join(f"LEFT JOIN m{k} ON m{k}.entity = m0.entity" for k in range(1, n))
    ctes.append(f"""f AS (
        SELECT m0.entity, m0.user_id, coalesce(m0.value, {lit(NONE_VALUE)}) AS value, m0.t AS t0, {', '.join(cols)}
        FROM m0 {joins})""")
    body = "ent AS (SELECT f.* EXCLUDE (" + ", ".join(f"p{k}" for k in range(n)) + ") FROM f"
    if excluded:
        matched = ", ".join(f"CASE WHEN r{k} THEN p{k} END" for k in range(n))
        body += f"""
        WHERE NOT EXISTS (
            SELECT 1 FROM ev x WHERE x.entity = f.entity AND x.event_type IN ({', '.join(map(lit, excluded))})
              AND x.pos > least({matched}) AND x.pos < greatest({matched}))"""
    # journeys.query() opens the WITH clause (journey_events), so these CTEs continue it.
    return ", " + ",\n".join(ctes) + ",\n" + body + ")"


def _bins(win: timedelta) -> list[tuple[float, float]]:
    top = win.total_seconds()
    edges = [e for e in _EDGES if e < top] + [int(top) if top == int(top) else top]
    return list(pairwise(edges))


def _summary_sql(n: int, win: timedelta, breakdown: str | None, over_time: str | None) -> str:
    """One aggregate over ``ent``: the whole funnel, each breakdown value and each period of entry,
    with counts, exact medians, the time-to-convert distribution and its histogram."""
    last = n - 1
    bins = _bins(win)
    aggs = ([f"count_if(r{k}) AS c{k}" for k in range(n)]
            + [f"median(d{k}) FILTER (WHERE r{k}) AS med{k}" for k in range(1, n)]
            + ["count(ttc) FILTER (WHERE r{0}) AS ttc_n, avg(ttc) FILTER (WHERE r{0}) AS ttc_mean".format(last)]
            + [f"quantile_cont(ttc, {p / 100}) FILTER (WHERE r{last}) AS ttc_p{p}" for p in PERCENTILES]
            + [f"count_if(r{last} AND ttc >= {lo} AND ttc {'<' if i < len(bins) - 1 else '<='} {hi}) AS bin{i}"
               for i, (lo, hi) in enumerate(bins)])
    sets = ["()"] + (["(value)"] if breakdown else []) + (["(period)"] if over_time else [])
    period = f"CAST(date_trunc('{over_time}', t0) AS DATE)" if over_time else "CAST(NULL AS DATE)"
    by_value = "grouping(value)" if breakdown else "1"
    by_period = "grouping(period)" if over_time else "1"
    value = "value" if breakdown else "NULL"
    period_col = "period" if over_time else "NULL"
    return f"""SELECT {by_value} AS by_value, {by_period} AS by_period, {value} AS value, {period_col} AS period,
               count(*) AS entered, {', '.join(aggs)}
        FROM (SELECT *, {period} AS period FROM ent) t
        GROUP BY GROUPING SETS ({', '.join(sets)})"""


def _summarize(rows: pd.DataFrame, load: Callable[[], pd.DataFrame], steps: list[str], opt: set[int],
               win: timedelta, order: str, per: str, excluded: tuple[str, ...], sw: dict[int, float],
               breakdown: str | None, over_time: str | None) -> FunnelResult:
    """Steps, rates and distributions from the aggregate rows of ``_summary_sql``."""
    n = len(steps)
    required = [k for k in range(n) if k not in opt]
    prev_req = {k: max(r for r in required if r < k) for k in range(1, n)}

    def number(value: Any) -> float | None:
        return None if value is None or pd.isna(value) else float(value)

    def steps_of(row) -> list[FunnelStep]:
        out = []
        entered = int(row["entered"])
        for k in range(n):
            count = int(row[f"c{k}"])
            pr = prev_req.get(k)
            base = int(row[f"c{pr}"]) if pr is not None else None
            out.append(FunnelStep(
                index=k, name=steps[k], optional=k in opt, count=count,
                rate_from_start=count / entered if entered else None,
                rate_from_previous=(count / base if base else None) if pr is not None else None,
                median_seconds_from_previous=number(row[f"med{k}"]) if k else None,
                previous=pr, dropped=(base - count) if base is not None else 0))
        return out

    whole_rows = rows[(rows["by_value"] == 1) & (rows["by_period"] == 1)]
    whole = whole_rows.iloc[0] if len(whole_rows) else None
    if whole is None or not int(whole["entered"]):
        all_steps = [FunnelStep(k, steps[k], k in opt, 0, None, None, None, prev_req.get(k), 0) for k in range(n)]
        entered = 0
    else:
        all_steps, entered = steps_of(whole), int(whole["entered"])
    converted = all_steps[-1].count
    base_rate = converted / entered if entered else None

    values = []
    if breakdown:
        by_value = rows[rows["by_value"] == 0].sort_values(["entered", "value"], ascending=[False, True])
        for _, row in by_value.iterrows():
            v_steps = steps_of(row)
            v_rate = v_steps[-1].count / int(row["entered"]) if int(row["entered"]) else None
            values.append(BreakdownValue(str(row["value"]), int(row["entered"]), v_steps[-1].count, v_rate,
                                         v_rate / base_rate if base_rate and v_rate is not None else None, v_steps))

    bins = _bins(win)
    time_to_convert = {
        "count": int(whole["ttc_n"]) if whole is not None else 0,
        "mean_seconds": number(whole["ttc_mean"]) if whole is not None else None,
        "percentiles": {f"p{p}": number(whole[f"ttc_p{p}"]) if whole is not None else None for p in PERCENTILES},
        "histogram": [{"from_seconds": lo, "to_seconds": hi, "count": int(whole[f"bin{i}"]) if whole is not None else 0}
                      for i, (lo, hi) in enumerate(bins)],
    }

    periods = []
    if over_time:
        for _, row in rows[rows["by_period"] == 0].sort_values("period").iterrows():
            e, c = int(row["entered"]), int(row[f"c{n - 1}"])
            periods.append({"period": pd.Timestamp(row["period"]).date().isoformat(), "entered": e, "converted": c,
                            "conversion_rate": c / e if e else None})

    return FunnelResult(
        steps=all_steps, entered=entered, converted=converted, window=_duration_text(win), order=order, per=per,
        exclude=excluded, step_windows={steps[k]: _duration_text(timedelta(seconds=s)) for k, s in sw.items()},
        breakdown=breakdown, breakdown_values=values, time_to_convert=time_to_convert,
        over_time=over_time, over_time_rows=periods, _load=load)


def _duration_text(d: timedelta) -> str:
    seconds = d.total_seconds()
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
