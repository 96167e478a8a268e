"""``GET /v1/journeys/{graph,funnel,attribution,retention,paths}``: the journey analytics over the live store.

Query parameters are the CLI's options (``--min-count`` is ``min_count``, a repeatable option is a
repeated parameter), and the body is the JSON of the CLI's ``--json``: both call the same library
functions with the same arguments. Each analysis reads one snapshot of the store (one read
transaction), so events arriving meanwhile never make its numbers disagree with each other.
Saving segments writes to the store and stays with the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import duckdb
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from journeymap.config import parse_duration
from journeymap.exceptions import JourneymapError
from journeymap.serve._auth import Read
from journeymap.serve._service import Service, ServiceDep
from journeymap.store import Store

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])


class _OpenStore(Store):
    """A Store over a connection the service already has (see ``Service.reader``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:  # noqa: D107 - no file to open
        self.path = path
        self.con = con
        self.read_only = True

    def close(self) -> None:  # the service closes its own connection
        pass


@dataclass
class Filters:
    """The filters every analysis takes (the CLI's --from, --to, --device, --channel, --where, --segment, --gap)."""

    start: str | None
    end: str | None
    device: str | None
    channel: str | None
    where: list[str] | None
    segment: str | None
    gap: str | None


def _filters(
    start: Annotated[str | None, Query(alias="from", description="Only events at or after this UTC time (2024-01-31[ 13:00]).")] = None,
    end: Annotated[str | None, Query(alias="to", description="Only events before this UTC time.")] = None,
    device: Annotated[str | None, Query(description="Only these devices, comma-separated.")] = None,
    channel: Annotated[str | None, Query(description="Only these channels, comma-separated.")] = None,
    where: Annotated[list[str] | None, Query(description="Event property filter KEY=VALUE, repeatable.")] = None,
    segment: Annotated[str | None, Query(description="Only users of this saved segment.")] = None,
    gap: Annotated[str | None, Query(description="Inactivity that starts a new session, e.g. 30m (default from config).")] = None,
) -> Filters:
    return Filters(start, end, device, channel, where, segment, gap)


FiltersDep = Annotated[Filters, Depends(_filters)]


@contextmanager
def open_journeys(service: Service, f: Filters) -> Iterator[Any]:
    """``Journeys.open`` over the service's store: same filters, same checks, one read snapshot."""
    from journeymap.journeys import Filters as JourneyFilters
    from journeymap.journeys import Journeys
    from journeymap.journeys._base import has_segments

    filters = JourneyFilters.parse(f.start, f.end, f.device, f.channel, f.where, f.segment)
    gap = parse_duration(f.gap, "session gap") if f.gap else None
    with service.reader() as con:
        con.begin()
        try:
            journeys = Journeys(_OpenStore(con, service.store_path), service.settings, filters, gap)
            if filters.segment and (not has_segments(con) or not con.execute(
                    "SELECT count(*) FROM segments WHERE name = ?", [filters.segment]).fetchall()[0][0]):
                raise JourneymapError(f"No segment named '{filters.segment}' in {service.store_path}; save one with "
                                      "--save-segment on an analysis.")
            yield journeys
        finally:
            con.rollback()


def _json(data: Any) -> Response:
    # The CLI's serialisation (print_json), so the values are the same.
    return Response(json.dumps(data, default=str), media_type="application/json")


@router.get("/graph")
def graph(
    _: Read, service: ServiceDep, f: FiltersDep,
    by: Annotated[str, Query(description="Node label: event_type, stage, category, device, channel or properties.KEY.")] = "event_type",
    min_count: Annotated[int, Query(description="Leave out edges with fewer transitions.")] = 1,
    collapse_repeats: Annotated[bool, Query(description="Merge consecutive equal labels first.")] = False,
) -> Response:
    """The journey map: what customers do next, with counts, probabilities and time between steps."""
    from journeymap.journeys._graph import transition_graph

    with open_journeys(service, f) as journeys:
        result = transition_graph(journeys, by=by, min_edge_count=min_count, collapse_repeats=collapse_repeats)
    return _json(result.to_dict())


@router.get("/funnel")
def funnel(
    _: Read, service: ServiceDep, f: FiltersDep,
    steps: Annotated[str, Query(description="Event types in funnel order, comma-separated, e.g. product_view,add_to_cart,purchase.")],
    window: Annotated[str, Query(description="Conversion window from entry, e.g. 30m, 1h, 7d.")] = "1d",
    order: Annotated[str, Query(description="ordered (others may come between), strict (consecutive) or any.")] = "ordered",
    per: Annotated[str, Query(description="Count users or sessions.")] = "user",
    exclude: Annotated[list[str] | None, Query(description="Drop entities doing this event type between entry and their last step.")] = None,
    optional: Annotated[list[str] | None, Query(description="A step that may be skipped without losing the later steps.")] = None,
    breakdown: Annotated[str | None, Query(description="Split by the entry event's column or properties.KEY.")] = None,
    step_window: Annotated[list[str] | None, Query(description="STEP=DURATION: most time from the previous step; repeatable.")] = None,
    over_time: Annotated[str | None, Query(description="Entries and conversions per day or week.")] = None,
) -> Response:
    """Funnel: count, rate from start and from the previous step, and median time, per step."""
    from journeymap.commands.funnel import _split, step_windows
    from journeymap.journeys._funnel import funnel as run

    windows = step_windows(step_window)
    with open_journeys(service, f) as journeys:
        result = run(journeys, _split([steps]), window=window, order=order, per=per, exclude=_split(exclude),
                     optional=_split(optional), breakdown=breakdown, step_windows=windows, over_time=over_time)
    return _json(result.to_dict())


@router.get("/attribution")
def attribution(
    _: Read, service: ServiceDep, f: FiltersDep,
    conversion: Annotated[str, Query(description="Event type that counts as a conversion (once per session).")] = "purchase",
    touchpoint: Annotated[str, Query(description="Event column or properties.KEY of each session's first event.")] = "channel",
    model: Annotated[str, Query(description="first, last, linear, position, time_decay, markov or shapley.")] = "markov",
    order: Annotated[int, Query(description="Markov order: how many past touches a state remembers.")] = 1,
    lookback: Annotated[str, Query(description="Only touches this long before a conversion, e.g. 30d.")] = "30d",
) -> Response:
    """Credit each touchpoint with a share of the conversions (markov, shapley, first, last, ...)."""
    from journeymap.journeys._attribution import attribution as run

    with open_journeys(service, f) as journeys:
        result = run(journeys, model=model, conversion=conversion, touchpoint=touchpoint, lookback=lookback, order=order)
    return _json(result.to_dict())


@router.get("/retention")
def retention(
    _: Read, service: ServiceDep, f: FiltersDep,
    view: Annotated[str, Query(description="retention (cohorts), lifecycle or stickiness.")] = "retention",
    period: Annotated[str, Query(description="day, week or month.")] = "week",
    kind: Annotated[str, Query(description="first_time or recurring cohorts.")] = "first_time",
    event: Annotated[str | None, Query(description="Event that starts a cohort or counts as active (default any).")] = None,
    return_event: Annotated[str | None, Query(description="Event that counts as coming back (default any).")] = None,
    periods: Annotated[int, Query(description="Periods to follow each cohort, from 0.")] = 8,
) -> Response:
    """Do users come back: cohort retention, lifecycle (new/returning/resurrecting/dormant) or stickiness."""
    from journeymap.commands.retention import VIEWS
    from journeymap.journeys import _retention as lib

    if view not in VIEWS:
        raise JourneymapError(f"--view must be one of {', '.join(VIEWS)}. Got '{view}'.")
    with open_journeys(service, f) as journeys:
        if view == "retention":
            result = lib.retention(journeys, period, kind, event, return_event, periods)
        elif view == "lifecycle":
            result = lib.lifecycle(journeys, period, event)
        else:
            result = lib.stickiness(journeys, period, event)
    return _json(result.to_dict())


@router.get("/paths")
def paths(
    _: Read, service: ServiceDep, f: FiltersDep,
    start_at: Annotated[str | None, Query(alias="start", description="Paths begin at the first occurrence of this label.")] = None,
    end_at: Annotated[str | None, Query(alias="end", description="Paths end at the last occurrence of this label.")] = None,
    steps: Annotated[int, Query(description="Labels per path, anchor included.")] = 5,
    top: Annotated[int, Query(description="How many of the most common paths to show.")] = 20,
    rename: Annotated[list[str] | None, Query(description="Clean labels: regex PATTERN=NEW, repeatable, applied in order.")] = None,
    no_collapse: Annotated[bool, Query(description="Keep consecutive repeats of a label.")] = False,
    by: Annotated[str, Query(description="Label: event_type, stage, category, device, channel or properties.KEY.")] = "event_type",
) -> Response:
    """The top paths after start (or before end), cleaned, with Sankey data."""
    from journeymap.commands.paths import _renames
    from journeymap.journeys._paths import paths as run

    if (start_at is None) == (end_at is None):
        raise JourneymapError("paths takes exactly one of --start LABEL or --end LABEL. "
                              f"Got {'both' if start_at is not None else 'neither'}.")
    renames = _renames(rename or [])
    with open_journeys(service, f) as journeys:
        result = run(journeys, start=start_at, end=end_at, steps=steps, top=top, rename=renames,
                     collapse_repeats=not no_collapse, by=by)
    return _json(result.to_dict())
