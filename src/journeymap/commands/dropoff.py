"""`journeymap dropoff`: who dropped after a funnel step, where they went next, and the drivers."""

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


def register(app: typer.Typer) -> None:
    app.command("dropoff")(dropoff)


def dropoff(
    store: StoreOpt,
    steps: Annotated[str, typer.Option("--steps", help="The ordered funnel, comma-separated event types.")],
    at: Annotated[str, typer.Option("--at", help="The step whose reachers are split into converted and dropped.")],
    window: Annotated[str, typer.Option("--window", help="Time from entry to complete the funnel, e.g. 1d.")] = "1d",
    per: Annotated[str, typer.Option("--per", help="Match the funnel per 'session' or per 'user'.")] = "session",
    top: Annotated[int, typer.Option("--top", help="Drivers to show each way.")] = 10,
    min_support: Annotated[int, typer.Option("--min-support", help="Least entities with (and without) a feature.")] = 30,
    prior: Annotated[float, typer.Option("--prior", help="Added to each cell of the 2x2 table.")] = 1.0,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level for the p-values and CIs.")] = 0.05,
    config: ConfigOpt = None, start: FromOpt = None, end: ToOpt = None, device: DeviceOpt = None,
    channel: ChannelOpt = None, where: WhereOpt = None, segment: SegmentOpt = None, gap: GapOpt = None,
    save_segment: SaveSegmentOpt = None, as_json: JsonOpt = False,
) -> None:
    """Who dropped after reaching a funnel step, where they went next, and what drives converting."""
    from journeymap.journeys import save_segment as save
    from journeymap.journeys._dropoff import dropoff as run

    with open_journeys(store, config, start, end, device, channel, where, segment, gap) as journeys:
        result = run(journeys, steps, at, window=window, per=per, top=top, min_support=min_support,
                     prior=prior, alpha=alpha)
    data = result.to_dict()
    if save_segment:
        users = result.users("dropped")
        save(store, save_segment, users, f"dropped after {at} in {steps}")
        data["segment"] = {"name": save_segment, "users": len(users)}
    if as_json:
        print_json(data)
        return
    out.print(f"{' → '.join(result.steps)}, at {at}, per {per}: {result.reached:,} reached, "
              f"{result.converted:,} converted ({result.conversion_rate:.1%}), {result.dropped:,} dropped",
              highlight=False)
    nxt = Table("next after dropping", "count", "share of dropped", title_justify="left")
    for row in result.next:
        nxt.add_row(row["event"], f"{row['count']:,}", f"{row['share']:.1%}")
    out.print(nxt)
    for name, drivers in (("positive", result.positive), ("negative", result.negative)):
        table = Table(title=f"{name} drivers (base rate {result.conversion_rate:.1%})", title_justify="left",
                      box=None, padding=(0, 1))
        table.add_column("feature", overflow="fold")
        for header in ("conv", "drop", "rate", "lift", "OR", f"{1 - alpha:.0%} CI", "p"):
            table.add_column(header, no_wrap=True)
        for d in drivers:
            table.add_row(d.feature, f"{d.converted:,}", f"{d.dropped:,}", f"{d.conversion_rate:.1%}",
                          f"{d.lift:.2f}", f"{d.odds_ratio:.2f}", f"{d.ci_low:.2f}–{d.ci_high:.2f}",
                          f"{d.p_value:.2g}" + ("" if d.significant else " (ns)"))
        out.print(table)
    if save_segment:
        out.print(f"saved {data['segment']['users']:,} dropped users as segment '{save_segment}'", highlight=False)
