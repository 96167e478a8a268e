"""One user's profile computed now, from the store, in tens of milliseconds: for a live service whose
stored profiles trail the latest events.

``update_profiles`` keeps every user's profile equal to a rebuild, but each run derives all users
(seconds on a large store), so a service runs it every few seconds at most. In between, the profile
of a user with new events is computed here: that user's statistics from their events (the build's
own SQL, restricted to them) and their derived fields at the time a rebuild would use (the store's
latest event), so every field that depends on the user alone equals a rebuild's. The fields fitted
on or ranked against the whole population (RFM quintiles, BG/NBD and Gamma-Gamma lifetime value,
the segment, model outputs) keep the values of the last update, which the next update refreshes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from journeymap.profiles._build import (
    COLUMNS,
    MODEL_COLUMNS,
    Lifecycle,
    _derive_sql,
    _Options,
    _state_sql,
    has_profiles,
    profiles_meta,
)
from journeymap.profiles._lifetime import OUTPUTS
from journeymap.profiles._summary import SUMMARY_FIELDS, summarize

# Kept from the last update: each needs every user's numbers.
POPULATION_FIELDS = ("r_score", "f_score", "m_score", "rfm", *OUTPUTS, "segment", "segment_id", *MODEL_COLUMNS)


_STATE_COLUMNS: list[tuple[str, str]] = []  # profile_state's (name, type), fixed by the build's DDL


def live_profile_row(con, user: str, meta: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any] | None, datetime | None]:
    """(the user's profile row, as of the store's latest event), or (None, None) when the user has
    no events or the store no profiles yet. ``con``: a connection to the store; ``meta``: its
    ``profiles_meta``, when the caller has it at hand."""
    if meta is None:
        meta = profiles_meta(con) if has_profiles(con) else None
    saved = (meta or {}).get("options")
    if not saved:
        return None, None
    options = _Options(float(saved["half_life_days"]), float(saved["gap_seconds"]), Lifecycle(**saved["lifecycle"]))
    cutoff = con.execute("SELECT max(ts) FROM events").fetchall()[0][0]
    if cutoff is None:
        return None, None
    # The state query's columns are positional (the build inserts it into profile_state): name and
    # type them as the table does, so that the derived fields have the stored profile's types.
    if not _STATE_COLUMNS:
        _STATE_COLUMNS.extend(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                          "WHERE table_name = 'profile_state' ORDER BY ordinal_position").fetchall())
    # The user ($1) and the time ($2) are bound. The user's events are read once (a scan of the
    # user_id column, 5-9 ms per million events here): the build's query reads its events CTE
    # several times. Of the rest (about 50 ms on the 1M-event store), DuckDB spends half planning
    # the two large queries (a prepared statement saved nothing: it was planned again) and half
    # running a dozen small aggregates.
    state = _state_sql("$2::TIMESTAMP", options, "user_id = $1").replace("WITH events AS (",
                                                                         "WITH events AS MATERIALIZED (", 1)
    typed = ", ".join(f"CAST({name} AS {kind}) AS {name}" for name, kind in _STATE_COLUMNS)
    names = ", ".join(name for name, _ in _STATE_COLUMNS)
    sql = _derive_sql("$2::TIMESTAMP", options, state=f"SELECT {typed} FROM ({state}) AS __state({names})")
    # execute, not con.sql: a relation is planned when made and again when read (18 ms more here).
    result = con.execute(sql, [user, cutoff])
    names = [d[0] for d in result.description]
    found = result.fetchall()
    if not found:
        return None, None
    row = dict(zip(names, found[0]))
    stored = con.execute(f"SELECT {', '.join(POPULATION_FIELDS)} FROM profiles WHERE user_id = ?", [user]).fetchall()
    kept = dict(zip(POPULATION_FIELDS, stored[0])) if stored else {}
    for name in POPULATION_FIELDS:
        row[name] = kept.get(name)
    row["summary"] = summarize({name: row[name] for name in SUMMARY_FIELDS})
    return {name: row[name] for name in COLUMNS}, cutoff
