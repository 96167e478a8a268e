"""``journeymap paths``: the most common paths from a starting point or to an ending point."""

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
    SaveSegmentOpt,
    SegmentOpt,
    StoreOpt,
    ToOpt,
    WhereOpt,
    open_journeys,
    out,
    print_json,
)
from journeymap.exceptions import JourneymapError


def _renames(pairs: list[str]) -> dict[str, str]:
    renames: dict[str, str] = {}
    for pair in pairs:
        pattern, sep, new = pair.rpartition("=")
        if not sep or not pattern:
            raise JourneymapError(f"--rename takes PATTERN=NEW, like '^(page|product)_view$=browse'. Got '{pair}'.")
        renames[pattern] = new
    return renames


def paths(
    store: StoreOpt,
    start_at: Annotated[str | None, typer.Option("--start", help="Paths begin at the first occurrence of this label.")] = None,
    end_at: Annotated[str | None, typer.Option("--end", help="Paths end at the last occurrence of this label.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Labels per path, anchor included.")] = 5,
    top: Annotated[int, typer.Option("--top", help="How many of the most common paths to show.")] = 20,
    rename: Annotated[list[str] | None, typer.Option("--rename", help="Clean labels: regex PATTERN=NEW, repeatable, applied in order.")] = None,
    no_collapse: Annotated[bool, typer.Option("--no-collapse", help="Keep consecutive repeats of a label.")] = False,
    by: Annotated[str, typer.Option("--by", help="Label: event_type, stage, category, device, channel or properties.KEY.")] = "event_type",
    start: FromOpt = None,
    end: ToOpt = None,
    device: DeviceOpt = None,
    channel: ChannelOpt = None,
    where: WhereOpt = None,
    segment: SegmentOpt = None,
    gap: GapOpt = None,
    save_segment: SaveSegmentOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The top paths after --start (or before --end), cleaned, with Sankey data in --json."""
    from journeymap.journeys import save_segment as save
    from journeymap.journeys._paths import paths as run

    if (start_at is None) == (end_at is None):
        raise JourneymapError("paths takes exactly one of --start LABEL or --end LABEL. "
                              f"Got {'both' if start_at is not None else 'neither'}.")
    renames = _renames(rename or [])
    with open_journeys(store, config, start, end, device, channel, where, segment, gap) as journeys:
        result = run(journeys, start=start_at, end=end_at, steps=steps, top=top, rename=renames,
                     collapse_repeats=not no_collapse, by=by)
    data = result.to_dict()
    anchor = f"--start {start_at}" if start_at is not None else f"--end {end_at}"
    if save_segment:
        size = save(store, save_segment, result.all_users(), f"users with a session on paths {anchor} by {by}")
        data["segment"] = {"name": save_segment, "users": size}
    if as_json:
        print_json(data)
        return
    table = Table(title=f"Top paths {anchor} by {by}, {steps} steps: {result.anchored_sessions:,} of "
                        f"{result.sessions:,} sessions reach it", title_justify="left")
    for column in ("path", "sessions", "share", "users", "median s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for p in result.paths:
        table.add_row(" → ".join(p.labels), f"{p.sessions:,}", f"{p.share:.1%}", f"{p.users:,}",
                      "-" if p.median_seconds is None else f"{p.median_seconds:,.0f}")
    out.print(table)
    if not result.anchored_sessions:
        label = start_at if start_at is not None else end_at
        out.print(f"No session has '{label}' after cleaning; check the label (and any --rename).", highlight=False)
    if save_segment:
        out.print(f"saved segment '{save_segment}' with {data['segment']['users']:,} users", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("paths")(paths)
