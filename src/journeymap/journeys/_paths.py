"""Paths: the most common sequences after a starting point or before an ending point (PostHog paths).

Labels are cleaned first (regex renames, then collapsed repeats), each session contributes the
``steps`` labels from the first ``start`` (or up to the last ``end``), and sessions are grouped by
path in SQL. The per-session paths are kept, so ``users(path)`` needs no second pass over events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Journeys, jsonable, lit, require_events
from journeymap.journeys._graph import (
    SESSION_END,
    SESSION_START,
    label_sql,
    sequence_sql,
)

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    import pyarrow as pa


@dataclass(frozen=True)
class TopPath:
    labels: tuple[str, ...]
    sessions: int
    users: int
    share: float  # of the sessions that reach the anchor
    median_seconds: float | None  # from the path's first label to its last (None for one label)


@dataclass(frozen=True)
class SankeyNode:
    id: str  # "position:label"
    position: int  # 1..steps, left to right
    label: str
    sessions: int


@dataclass(frozen=True)
class SankeyLink:
    source: str  # SankeyNode.id
    target: str
    sessions: int


@dataclass
class PathsResult:
    """Top paths from a start (or to an end), with Sankey data over every anchored session."""

    start: str | None
    end: str | None
    steps: int
    by: str
    collapse_repeats: bool
    rename: dict[str, str]
    sessions: int  # all sessions after filters
    anchored_sessions: int  # sessions that contain the anchor: the denominator of share
    paths: list[TopPath]
    sankey_nodes: list[SankeyNode]
    sankey_links: list[SankeyLink]
    per_session: pa.Table | None = field(default=None, repr=False, compare=False)  # session_key, user_id, path

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start, "end": self.end, "steps": self.steps, "by": self.by,
            "collapse_repeats": self.collapse_repeats, "rename": self.rename,
            "sessions": self.sessions, "anchored_sessions": self.anchored_sessions,
            "paths": [{"path": list(p.labels), "sessions": p.sessions, "users": p.users, "share": p.share,
                       "median_seconds": jsonable(p.median_seconds)} for p in self.paths],
            "sankey": {"nodes": [asdict(n) for n in self.sankey_nodes],
                       "links": [asdict(link) for link in self.sankey_links]},
        }

    def to_frame(self) -> pd.DataFrame:
        """The top paths, one row each; ``path`` joins the labels with ' → '."""
        import pandas as pd

        return pd.DataFrame(
            [{"path": " → ".join(p.labels), "steps": len(p.labels), "sessions": p.sessions, "users": p.users,
              "share": p.share, "median_seconds": p.median_seconds} for p in self.paths],
            columns=["path", "steps", "sessions", "users", "share", "median_seconds"])

    def _who(self, column: str, path: Sequence[str] | str) -> list[str]:
        if self.per_session is None:
            raise JourneymapError("This result holds no per-session paths; build it with paths(journeys, ...).")
        labels = [s.strip() for s in path.split("→")] if isinstance(path, str) else list(path)
        con = duckdb.connect()
        try:
            con.register("per_session", self.per_session)
            rows = con.execute(f"SELECT DISTINCT {column} FROM per_session WHERE path = ?::VARCHAR[] ORDER BY 1",
                               [labels]).fetchall()
        finally:
            con.close()
        return [r[0] for r in rows]

    def users(self, path: Sequence[str] | str) -> list[str]:
        """The pseudonymous users with a session on exactly this path (labels, or 'a → b'), sorted."""
        return self._who("user_id", path)

    def sessions_of(self, path: Sequence[str] | str) -> list[str]:
        """The session keys on exactly this path, sorted."""
        return self._who("session_key", path)

    def all_users(self) -> list[str]:
        """Every user with a session that reaches the anchor."""
        if self.per_session is None:
            return []
        return sorted(set(self.per_session.column("user_id").to_pylist()))

    def figure(self) -> go.Figure:
        """A Sankey of every anchored session's path, one column per step."""
        import plotly.graph_objects as go

        index = {n.id: i for i, n in enumerate(self.sankey_nodes)}
        anchor = f"from {self.start}" if self.start is not None else f"to {self.end}"
        fig = go.Figure(go.Sankey(
            arrangement="snap",
            node={"label": [n.label for n in self.sankey_nodes], "pad": 12,
                  "x": [(n.position - 0.5) / self.steps for n in self.sankey_nodes],
                  "customdata": [n.sessions for n in self.sankey_nodes],
                  "hovertemplate": "%{label}: %{customdata:,} sessions<extra></extra>"},
            link={"source": [index[link.source] for link in self.sankey_links],
                  "target": [index[link.target] for link in self.sankey_links],
                  "value": [link.sessions for link in self.sankey_links]},
        ))
        fig.update_layout(title=f"Paths {anchor} by {self.by}, {self.steps} steps: "
                                f"{self.anchored_sessions:,} of {self.sessions:,} sessions")
        return fig


def _rename_sql(label: str, rename: Mapping[str, str]) -> str:
    for pattern, new in rename.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise JourneymapError(f"A rename pattern must be a regular expression; '{pattern}' is not ({exc}).") from None
        label = f"regexp_replace({label}, {lit(pattern)}, {lit(new)}, 'g')"
    return label


def paths(journeys: Journeys, start: str | None = None, end: str | None = None, steps: int = 5, top: int = 20,
          rename: Mapping[str, str] | None = None, collapse_repeats: bool = True,
          by: str = "event_type") -> PathsResult:
    """The ``top`` most common paths of ``steps`` labels from the first ``start`` or up to the last
    ``end`` in each session (exactly one of them), after cleaning labels.

    Renames are regex replacements applied in order, then consecutive equal labels are collapsed.
    A path that reaches the session's end (or, with ``end``, its beginning) within ``steps`` carries
    session_end (or session_start) as its final (first) label, which counts as a step.
    """
    if (start is None) == (end is None):
        raise JourneymapError(
            "paths() takes exactly one of start or end (the label a path begins or ends at). "
            f"Got {'both' if start is not None else 'neither'}.")
    if int(steps) < 1:
        raise JourneymapError(f"The 'steps' parameter of paths() must be 1 or more. Got {steps}.")
    if int(top) < 1:
        raise JourneymapError(f"The 'top' parameter of paths() must be 1 or more. Got {top}.")
    rename = dict(rename or {})
    label = _rename_sql(label_sql(by, "paths()"), rename)
    require_events(journeys)
    steps, top = int(steps), int(top)
    anchor_label = start if start is not None else end
    if start is not None:  # the anchor's first occurrence and the steps - 1 labels after it
        anchor, lo, hi, at_edge, pad = "min", "anchor", f"anchor + {steps - 1}", "max(pos) = any_value(length)", SESSION_END
        padded = f"list_append(labels, {lit(pad)})"
    else:  # the steps - 1 labels before the anchor's last occurrence, and the anchor
        anchor, lo, hi, at_edge, pad = "max", f"anchor - {steps - 1}", "anchor", "min(pos) = 1", SESSION_START
        padded = f"list_prepend({lit(pad)}, labels)"
    try:
        table = journeys.query(f""", {sequence_sql(label, collapse_repeats)}, positioned AS (
                SELECT session_key, user_id, label, first_ts,
                       row_number() OVER (PARTITION BY session_key ORDER BY ord) AS pos,
                       count(*) OVER (PARTITION BY session_key) AS length
                FROM seq
            ), anchored AS (
                SELECT *, {anchor}(CASE WHEN label = {lit(anchor_label)} THEN pos END)
                          OVER (PARTITION BY session_key) AS anchor
                FROM positioned
            ), windowed AS (
                SELECT session_key, any_value(user_id) AS user_id, list(label ORDER BY pos) AS labels,
                       epoch(max(first_ts) - min(first_ts)) AS seconds, {at_edge} AS at_edge
                FROM anchored WHERE pos BETWEEN {lo} AND {hi}
                GROUP BY session_key
            )
            SELECT session_key, user_id,
                   CASE WHEN at_edge AND len(labels) < {steps} THEN {padded} ELSE labels END AS path,
                   CASE WHEN len(labels) > 1 THEN seconds END AS seconds,
                   (SELECT count(DISTINCT session_key) FROM seq) AS all_sessions
            FROM windowed""").to_arrow_table()
        if table.num_rows:
            sessions = table.column("all_sessions")[0].as_py()
        else:  # no session reaches the anchor: count the sessions on their own
            sessions = journeys.query("SELECT count(DISTINCT session_key) FROM journey_events").fetchall()[0][0]
        table = table.drop_columns(["all_sessions"])
    except duckdb.Error as exc:  # e.g. a pattern Python accepts but DuckDB's RE2 does not
        raise JourneymapError(f"The paths query failed: {exc}") from None
    con = duckdb.connect()
    try:
        con.register("per_session", table)
        anchored = con.execute("SELECT count(*) FROM per_session").fetchall()[0][0]
        rows = con.execute("""
            SELECT path, count(*) AS sessions, count(DISTINCT user_id) AS users, quantile_cont(seconds, 0.5)
            FROM per_session GROUP BY path ORDER BY sessions DESC, users DESC, path::VARCHAR LIMIT ?""", [top]).fetchall()
        # Sankey positions run 1..steps; an end-anchored path is right-aligned so the anchor is the last column.
        offset = "1" if start is not None else f"{steps} - len(path) + 1"
        nodes = con.execute(f"""
            SELECT k + {offset} AS position, path[k + 1] AS label, count(*) AS sessions
            FROM per_session, range(len(path)) r(k) GROUP BY ALL ORDER BY position, sessions DESC, label""").fetchall()
        links = con.execute(f"""
            SELECT k + {offset} AS position, path[k + 1] AS source, path[k + 2] AS target, count(*) AS sessions
            FROM per_session, range(len(path) - 1) r(k) GROUP BY ALL ORDER BY position, sessions DESC, source, target
            """).fetchall()
    finally:
        con.close()
    top_paths = [TopPath(tuple(p), n, u, n / anchored, median) for p, n, u, median in rows]
    sankey_nodes = [SankeyNode(f"{pos}:{lbl}", int(pos), lbl, n) for pos, lbl, n in nodes]
    sankey_links = [SankeyLink(f"{pos}:{s}", f"{pos + 1}:{t}", n) for pos, s, t, n in links]
    return PathsResult(start, end, steps, by, collapse_repeats, rename, int(sessions), int(anchored),
                       top_paths, sankey_nodes, sankey_links, table)
