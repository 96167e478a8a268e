"""The journey map: a directly-follows graph of what customers do next, within each session.

Nodes are labels (event types, stages, categories, ... ) with ``session_start`` and ``session_end``;
edges count consecutive pairs. The whole graph is one set-based query (a ``lead()`` window and a
grouping-sets aggregate), so it scales like a plain group-by; ``users()`` answers who is behind an edge.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Journeys, jsonable, lit, require_events, seconds_between

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

SESSION_START = "session_start"
SESSION_END = "session_end"
MISSING = "(none)"  # the label of an event whose --by column is empty
COLUMNS = ("event_type", "stage", "category", "device", "channel")
_PROPERTY = re.compile(r"^properties\.([A-Za-z_][A-Za-z0-9_]{0,63})$")


def label_sql(by: str, what: str = "transition_graph()") -> str:
    """The SQL expression over journey_events that labels an event for ``by``."""
    if by in COLUMNS:
        return f"coalesce(CAST({by} AS VARCHAR), {lit(MISSING)})"
    match = _PROPERTY.match(by)
    if match:
        return f"coalesce(properties->>{lit('$.' + match.group(1))}, {lit(MISSING)})"
    raise JourneymapError(
        f"The 'by' parameter of {what} must be one of {', '.join(COLUMNS)} or properties.KEY "
        f"(KEY made of letters, digits and '_'). Got '{by}'.")


def sequence_sql(label: str, collapse_repeats: bool) -> str:
    """CTEs ending in ``seq(session_key, user_id, label, first_ts, last_ts, ord)``: one row per
    element of each session's label sequence, ordered by ``ord``. With ``collapse_repeats`` a run
    of equal consecutive labels is one element spanning ``first_ts`` .. ``last_ts``."""
    labeled = f"labeled AS (SELECT session_key, user_id, ts, step, {label} AS label FROM journey_events)"
    if not collapse_repeats:
        return labeled + ", seq AS (SELECT session_key, user_id, label, ts AS first_ts, ts AS last_ts, step AS ord FROM labeled)"
    # Gaps and islands: within a run, step minus the label's own row number is constant.
    return labeled + """, runs AS (
        SELECT *, step - row_number() OVER (PARTITION BY session_key, label ORDER BY step) AS run
        FROM labeled
    ), seq AS (
        SELECT session_key, any_value(user_id) AS user_id, label, min(ts) AS first_ts, max(ts) AS last_ts,
               min(step) AS ord
        FROM runs GROUP BY session_key, label, run
    )"""


def transitions_sql(label: str, collapse_repeats: bool) -> str:
    """CTEs ending in ``transitions(session_key, user_id, source, target, seconds, pos)``:
    every consecutive pair of a session's sequence, plus session_start -> first and last -> session_end.
    ``seconds`` runs from the end of the source element to the start of the target (NULL at the ends)."""
    return sequence_sql(label, collapse_repeats) + f""", moves AS (
        SELECT session_key, user_id, label, last_ts,
               row_number() OVER w AS pos, lead(label) OVER w AS next_label, lead(first_ts) OVER w AS next_ts
        FROM seq WINDOW w AS (PARTITION BY session_key ORDER BY ord)
    ), transitions AS (
        SELECT session_key, user_id, label AS source, coalesce(next_label, {lit(SESSION_END)}) AS target,
               {seconds_between('next_ts', 'last_ts')} AS seconds, pos
        FROM moves
        UNION ALL
        SELECT session_key, user_id, {lit(SESSION_START)}, label, NULL, 0 FROM moves WHERE pos = 1
    )"""


def column_of(journeys: Journeys, sql: str, what: str) -> list[str]:
    """The first column of a query over journey_events, with a clear error once the store is closed."""
    try:
        return [row[0] for row in journeys.query(sql).fetchall()]
    except duckdb.ConnectionException:
        raise JourneymapError(f"The store behind this {what} is closed; ask for its users inside "
                              "`with Journeys.open(...)`, before the store closes.") from None


@dataclass(frozen=True)
class Node:
    name: str
    count: int  # events with this label (sessions, for session_start and session_end)
    users: int
    mean_step: float  # average position in the session, for the left-to-right layout


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    count: int
    users: int
    probability: float  # count / all transitions out of source
    probability_in: float  # count / all transitions into target
    median_seconds: float | None  # None on session_start / session_end edges
    p95_seconds: float | None


@dataclass
class TransitionGraph:
    """A directly-follows graph of the journeys. ``users()`` and ``sessions()`` re-query the open
    store, so call them before the Journeys they came from is closed."""

    by: str
    collapse_repeats: bool
    min_edge_count: int
    sessions: int
    nodes: list[Node]
    edges: list[Edge]
    journeys: Journeys | None = field(default=None, repr=False, compare=False)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise JourneymapError(f"The graph has no node '{name}'; its nodes are {', '.join(n.name for n in self.nodes)}.")

    def edge(self, source: str, target: str) -> Edge:
        for edge in self.edges:
            if edge.source == source and edge.target == target:
                return edge
        raise JourneymapError(
            f"The graph has no edge {source} -> {target}"
            + (f" with at least {self.min_edge_count} transitions" if self.min_edge_count > 1 else "") + ".")

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "collapse_repeats": self.collapse_repeats,
            "min_edge_count": self.min_edge_count,
            "sessions": self.sessions,
            "nodes": [{k: jsonable(v) for k, v in asdict(n).items()} for n in self.nodes],
            "edges": [{k: jsonable(v) for k, v in asdict(e).items()} for e in self.edges],
        }

    def to_frame(self) -> pd.DataFrame:
        """The edges, one row each, most frequent first."""
        import pandas as pd

        return pd.DataFrame([asdict(e) for e in self.edges], columns=list(Edge.__dataclass_fields__))

    def _who(self, column: str, source: str, target: str | None) -> list[str]:
        if self.journeys is None:
            raise JourneymapError("This graph was built without an open store; build it with transition_graph(journeys).")
        where = f"source = {lit(source)}" + (f" AND target = {lit(target)}" if target is not None else "")
        if source == SESSION_END and target is None:  # session_end is never a source
            where = f"target = {lit(SESSION_END)}"
        return column_of(self.journeys, f", {transitions_sql(label_sql(self.by), self.collapse_repeats)} "
                         f"SELECT DISTINCT {column} FROM transitions WHERE {where} ORDER BY 1", "graph")

    def users(self, source: str, target: str | None = None) -> list[str]:
        """The pseudonymous users behind an edge (or behind a node when target is None), sorted."""
        return self._who("user_id", source, target)

    def sessions_of(self, source: str, target: str | None = None) -> list[str]:
        """The session keys behind an edge (or a node), sorted."""
        return self._who("session_key", source, target)

    def step_matrix(self, max_steps: int = 10) -> StepMatrix:
        """Share of sessions at each label at each step (retentioneering's step matrix)."""
        if self.journeys is None:
            raise JourneymapError("This graph was built without an open store; build it with transition_graph(journeys).")
        return step_matrix(self.journeys, by=self.by, max_steps=max_steps, collapse_repeats=self.collapse_repeats)

    def figure(self, max_edges: int = 60) -> go.Figure:
        """A network: nodes left to right by average step, edge width by count, numbers on hover.
        Only the ``max_edges`` most frequent edges are drawn, to stay legible."""
        import plotly.graph_objects as go

        x = {n.name: n.mean_step for n in self.nodes}
        y: dict[str, float] = {}
        columns: dict[int, list[str]] = {}
        for n in sorted(self.nodes, key=lambda n: (-n.count, n.name)):
            columns.setdefault(round(n.mean_step), []).append(n.name)
        for names in columns.values():
            for i, name in enumerate(names):
                y[name] = (i - (len(names) - 1) / 2) * (1 if round(x[name]) % 2 else -1)
        drawn = [e for e in self.edges if e.source in x and e.target in x][:max_edges]
        top = max((e.count for e in drawn), default=1)
        fig = go.Figure()
        for e in drawn:
            bend = 0.15 if e.source == e.target else 0.0
            fig.add_trace(go.Scatter(
                x=[x[e.source], (x[e.source] + x[e.target]) / 2 + bend, x[e.target]],
                y=[y[e.source], (y[e.source] + y[e.target]) / 2 + bend, y[e.target]],
                mode="lines", line={"width": 1 + 9 * e.count / top, "color": "rgba(90,110,160,0.45)"},
                hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(
            x=[(x[e.source] + x[e.target]) / 2 + (0.15 if e.source == e.target else 0) for e in drawn],
            y=[(y[e.source] + y[e.target]) / 2 + (0.15 if e.source == e.target else 0) for e in drawn],
            mode="markers", marker={"size": 6, "color": "rgba(90,110,160,0.6)"}, showlegend=False,
            hovertext=[f"{e.source} → {e.target}<br>{e.count:,} transitions, {e.users:,} users<br>"
                       f"{e.probability:.1%} of {e.source} exits, {e.probability_in:.1%} of {e.target} entries"
                       + (f"<br>median {e.median_seconds:,.0f}s, p95 {e.p95_seconds:,.0f}s"
                          if e.median_seconds is not None else "") for e in drawn],
            hoverinfo="text"))
        biggest = max((n.count for n in self.nodes), default=1)
        fig.add_trace(go.Scatter(
            x=[x[n.name] for n in self.nodes], y=[y[n.name] for n in self.nodes], mode="markers+text",
            text=[n.name for n in self.nodes], textposition="top center", showlegend=False,
            marker={"size": [12 + 30 * (n.count / biggest) ** 0.5 for n in self.nodes], "color": "#4062bb"},
            hovertext=[f"{n.name}<br>{n.count:,} events, {n.users:,} users<br>mean step {n.mean_step:.1f}"
                       for n in self.nodes], hoverinfo="text"))
        fig.update_layout(
            title=f"Journey map by {self.by}: {self.sessions:,} sessions"
                  + (f" ({len(drawn)} of {len(self.edges)} edges drawn)" if len(drawn) < len(self.edges) else ""),
            xaxis={"title": "average step in session", "zeroline": False},
            yaxis={"visible": False}, plot_bgcolor="white")
        return fig


def transition_graph(journeys: Journeys, by: str = "event_type", min_edge_count: int = 1,
                     collapse_repeats: bool = False) -> TransitionGraph:
    """The directly-follows graph of labels within sessions, with session_start and session_end.

    Probabilities are computed over all transitions, before edges under ``min_edge_count`` are dropped.
    """
    label = label_sql(by)
    if int(min_edge_count) < 1:
        raise JourneymapError(f"The 'min_edge_count' parameter of transition_graph() must be 1 or more. Got {min_edge_count}.")
    require_events(journeys)
    rows = journeys.query(f""", {transitions_sql(label, collapse_repeats)}, agg AS (
            SELECT source, target, grouping(target) AS is_node, count(*) AS count,
                   count(DISTINCT user_id) AS users, quantile_cont(seconds, [0.5, 0.95]) AS q, avg(pos) AS mean_step
            FROM transitions GROUP BY GROUPING SETS ((source, target), (source))
        )
        SELECT source, target, is_node, count, users, q[1], q[2], mean_step,
               count / sum(CASE WHEN is_node = 0 THEN count END) OVER (PARTITION BY source),
               count / sum(CASE WHEN is_node = 0 THEN count END) OVER (PARTITION BY target)
        FROM agg
        ORDER BY is_node, count DESC, source, target""").fetchall()
    nodes, edges = [], []
    for source, target, is_node, count, users, median, p95, mean_step, p_out, p_in in rows:
        if is_node:
            nodes.append(Node(source, count, users, float(mean_step)))
        elif count >= min_edge_count:
            edges.append(Edge(source, target, count, users, float(p_out), float(p_in), median, p95))
    start = next((n for n in nodes if n.name == SESSION_START), None)
    sessions = start.count if start else 0
    if start:
        last = max(n.mean_step for n in nodes)
        nodes.append(Node(SESSION_END, start.count, start.users, float(last) + 1))
    nodes.sort(key=lambda n: (n.mean_step, n.name))
    return TransitionGraph(by, collapse_repeats, int(min_edge_count), sessions, nodes, edges, journeys)


@dataclass(frozen=True)
class StepCell:
    step: int
    label: str
    sessions: int
    share: float  # of all sessions


@dataclass
class StepMatrix:
    """Share of sessions at each label at step k; ``session_end`` holds sessions already over."""

    by: str
    max_steps: int
    sessions: int
    cells: list[StepCell]
    journeys: Journeys | None = field(default=None, repr=False, compare=False)
    collapse_repeats: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "max_steps": self.max_steps, "sessions": self.sessions,
                "collapse_repeats": self.collapse_repeats, "cells": [asdict(c) for c in self.cells]}

    def to_frame(self) -> pd.DataFrame:
        """Labels as rows, steps 1..max_steps as columns, shares as values (0 where none)."""
        import pandas as pd

        frame = pd.DataFrame([asdict(c) for c in self.cells], columns=list(StepCell.__dataclass_fields__))
        table = frame.pivot_table(index="label", columns="step", values="share", fill_value=0.0)
        return table.reindex(columns=range(1, self.max_steps + 1), fill_value=0.0)

    def figure(self) -> go.Figure:
        import plotly.graph_objects as go

        table = self.to_frame()
        fig = go.Figure(go.Heatmap(z=table.values, x=list(table.columns), y=list(table.index),
                                   colorscale="Blues", hovertemplate="step %{x}, %{y}: %{z:.1%}<extra></extra>"))
        fig.update_layout(title=f"Step matrix by {self.by}: share of {self.sessions:,} sessions",
                          xaxis_title="step")
        return fig

    def users(self, step: int, label: str) -> list[str]:
        """The users whose session is at ``label`` at ``step`` (for session_end: ended before it)."""
        if self.journeys is None:
            raise JourneymapError("This step matrix was built without an open store.")
        seq = sequence_sql(label_sql(self.by, "step_matrix()"), self.collapse_repeats)
        pos = """positioned AS (SELECT session_key, user_id, label,
                  row_number() OVER (PARTITION BY session_key ORDER BY ord) AS pos FROM seq)"""
        if label == SESSION_END:
            where = f"""session_key IN (SELECT session_key FROM positioned GROUP BY session_key
                         HAVING max(pos) < {int(step)})"""
        else:
            where = f"pos = {int(step)} AND label = {lit(label)}"
        return column_of(self.journeys, f", {seq}, {pos} SELECT DISTINCT user_id FROM positioned WHERE {where} ORDER BY 1",
                         "step matrix")


def step_matrix(journeys: Journeys, by: str = "event_type", max_steps: int = 10,
                collapse_repeats: bool = False) -> StepMatrix:
    """For k in 1..max_steps, the share of sessions whose k-th element is each label;
    sessions shorter than k count under session_end, so each column sums to 1."""
    label = label_sql(by, "step_matrix()")
    if int(max_steps) < 1:
        raise JourneymapError(f"The 'max_steps' parameter of step_matrix() must be 1 or more. Got {max_steps}.")
    require_events(journeys)
    k = int(max_steps)
    steps = "(VALUES " + ", ".join(f"({i})" for i in range(2, k + 1)) + ")" if k > 1 else "(SELECT 2 WHERE FALSE)"
    rows = journeys.query(f""", {sequence_sql(label, collapse_repeats)}, positioned AS (
            SELECT session_key, label, row_number() OVER (PARTITION BY session_key ORDER BY ord) AS pos,
                   count(*) OVER (PARTITION BY session_key) AS length
            FROM seq
        ), total AS (SELECT count(DISTINCT session_key) AS n FROM positioned),
        cells AS (
            SELECT pos AS step, label, count(*) AS sessions FROM positioned WHERE pos <= {k} GROUP BY ALL
            UNION ALL
            SELECT s.step, {lit(SESSION_END)}, count(*) FROM {steps} s(step)
              JOIN (SELECT DISTINCT session_key, length FROM positioned WHERE pos = 1) p ON p.length < s.step
            GROUP BY s.step
        )
        SELECT step, label, sessions, sessions / (SELECT n FROM total), (SELECT n FROM total)
        FROM cells ORDER BY step, sessions DESC, label""").fetchall()
    sessions = rows[0][4] if rows else 0
    cells = [StepCell(int(s), lbl, int(n), float(share)) for s, lbl, n, share, _ in rows]
    return StepMatrix(by, k, int(sessions), cells, journeys, collapse_repeats)
