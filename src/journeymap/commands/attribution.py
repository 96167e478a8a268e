"""``journeymap attribution``: credit per touchpoint under one attribution model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from journeymap.commands._options import (
    ChannelOpt,
    ConfigOpt,
    DeviceOpt,
    EngineOpt,
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


def attribution(
    store: StoreOpt,
    conversion: Annotated[str, typer.Option("--conversion", help="Event type that counts as a conversion (once per session).")] = "purchase",
    touchpoint: Annotated[str, typer.Option("--touchpoint", help="Event column or properties.KEY of each session's first event.")] = "channel",
    model: Annotated[str, typer.Option("--model", "-m", help="first, last, linear, position, time_decay, markov or shapley.")] = "markov",
    order: Annotated[int, typer.Option("--order", help="Markov order: how many past touches a state remembers.")] = 1,
    lookback: Annotated[str, typer.Option("--lookback", help="Only touches this long before a conversion, e.g. 30d.")] = "30d",
    start: FromOpt = None,
    end: ToOpt = None,
    device: DeviceOpt = None,
    channel: ChannelOpt = None,
    where: WhereOpt = None,
    segment: SegmentOpt = None,
    gap: GapOpt = None,
    save_segment: SaveSegmentOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = "duckdb",
    as_json: JsonOpt = False,
) -> None:
    """Credit each touchpoint with a share of the conversions (markov, shapley, first, last, ...)."""
    from journeymap.journeys import save_segment as save
    from journeymap.journeys._attribution import attribution as run

    if save_segment and engine != "duckdb":
        raise JourneymapError("--save-segment writes into the DuckDB store; run it without --engine spark.")
    with open_journeys(store, config, start, end, device, channel, where, segment, gap, engine) as journeys:
        result = run(journeys, model=model, conversion=conversion, touchpoint=touchpoint,
                     lookback=lookback, order=order)
    data = result.to_dict()
    if save_segment:
        size = save(store, save_segment, result.all_users(),
                    f"users with a {conversion} conversion credited by {result.model} attribution")
        data["segment"] = {"name": save_segment, "users": size}
    if as_json:
        print_json(data)
        return
    label = f"{result.model} (order {result.order})" if result.model == "markov" else result.model
    table = Table(title=f"{label} attribution of {result.conversions:,} {conversion} conversions by {touchpoint}, "
                        f"lookback {data['lookback']}", title_justify="left")
    columns = ["touchpoint", "credit", "share", "sessions", "lift", "users"]
    if result.removal_effects is not None:
        columns.append("removal effect")
    for column in columns:
        table.add_column(column, justify="left" if column == "touchpoint" else "right")
    for row in result.to_frame().itertuples(index=False):
        cells = [str(row.touchpoint), f"{row.credit:,.1f}", f"{row.share:.1%}", f"{row.sessions:,}",
                 "-" if row.lift != row.lift or row.lift is None else f"{row.lift:.2f}", f"{row.users:,}"]
        if result.removal_effects is not None:
            cells.append(f"{row.removal_effect:.3f}")
        table.add_row(*cells)
    out.print(table)
    if result.conversion_probability is not None:
        out.print(f"P(conversion) from start: {result.conversion_probability:.4f} over "
                  f"{result.paths + result.non_converting_paths:,} paths", highlight=False)
    if save_segment:
        out.print(f"saved segment '{save_segment}' with {data['segment']['users']:,} users", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("attribution")(attribution)
