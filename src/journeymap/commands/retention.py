"""`journeymap retention`: cohort retention, lifecycle states or stickiness per day, week or month."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from journeymap.commands._options import (
    ChannelOpt,
    ConfigOpt,
    DeviceOpt,
    FromOpt,
    GapOpt,
    JsonOpt,
    SegmentOpt,
    StoreOpt,
    ToOpt,
    WhereOpt,
    open_journeys,
    out,
    print_json,
)
from journeymap.exceptions import JourneymapError

VIEWS = ("retention", "lifecycle", "stickiness")


def register(app: typer.Typer) -> None:
    app.command("retention")(retention)


def retention(
    store: StoreOpt,
    view: Annotated[str, typer.Option("--view", help="retention (cohorts), lifecycle or stickiness.")] = "retention",
    period: Annotated[str, typer.Option("--period", help="day, week or month.")] = "week",
    kind: Annotated[str, typer.Option("--kind", help="first_time or recurring cohorts.")] = "first_time",
    event: Annotated[str | None, typer.Option("--event", help="Event that starts a cohort or counts as active (default any).")] = None,
    return_event: Annotated[str | None, typer.Option("--return-event", help="Event that counts as coming back (default any).")] = None,
    periods: Annotated[int, typer.Option("--periods", help="Periods to follow each cohort, from 0.")] = 8,
    config: ConfigOpt = None, start: FromOpt = None, end: ToOpt = None, device: DeviceOpt = None,
    channel: ChannelOpt = None, where: WhereOpt = None, segment: SegmentOpt = None, gap: GapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Do users come back: cohort retention, lifecycle (new/returning/resurrecting/dormant) or stickiness."""
    from journeymap.journeys import _retention as lib

    if view not in VIEWS:
        raise JourneymapError(f"--view must be one of {', '.join(VIEWS)}. Got '{view}'.")
    with open_journeys(store, config, start, end, device, channel, where, segment, gap) as journeys:
        if view == "retention":
            result = lib.retention(journeys, period, kind, event, return_event, periods)
        elif view == "lifecycle":
            result = lib.lifecycle(journeys, period, event)
        else:
            result = lib.stickiness(journeys, period, event)
    if as_json:
        print_json(result.to_dict())
        return
    data = result.to_dict()
    if view == "retention":
        table = Table("cohort", "users", *[f"{period} {k}" for k in range(periods)],
                      title=f"{kind} retention by {period}: % of the cohort (count)", title_justify="left")
        for c in data["cohorts"]:
            table.add_row(c["cohort"], f"{c['users']:,}", *["" if n is None else f"{r:.0%} ({n:,})"
                                                             for n, r in zip(c["retained"], c["rates"])])
    elif view == "lifecycle":
        table = Table(period, "active", "new", "returning", "resurrecting", "dormant",
                      title=f"lifecycle by {period}", title_justify="left")
        for r in data["periods"]:
            table.add_row(r["period"], *[f"{r[k]:,}" for k in ("active", "new", "returning", "resurrecting", "dormant")])
    else:
        table = Table("days active", f"user-{period}s", "share", title=f"stickiness per {period}", title_justify="left")
        for d, n, s in zip(data["days"], data["users"], data["share"]):
            table.add_row(str(d), f"{n:,}", "" if s is None else f"{s:.1%}")
    out.print(table)
