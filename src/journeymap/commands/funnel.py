"""`journeymap funnel`: conversion through a list of event types, per step, value and period."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

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


def _split(values: list[str] | None) -> list[str]:
    """Comma-separated and/or repeated option values, in order."""
    return [v.strip() for text in values or [] for v in text.split(",") if v.strip()]


def step_windows(pairs: list[str] | None) -> dict[str, str]:
    """STEP=DURATION option values (comma-separated and/or repeated) as {step: duration}."""
    windows = {}
    for pair in _split(pairs):
        name, sep, text = pair.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise JourneymapError(f"A --step-window takes STEP=DURATION, like purchase=30m. Got '{pair}'.")
        windows[name.strip()] = text.strip()
    return windows


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def funnel_command(
    store: StoreOpt,
    steps: Annotated[str, typer.Option("--steps", help="Event types in funnel order, comma-separated, e.g. "
                                                        "product_view,add_to_cart,purchase.")],
    window: Annotated[str, typer.Option("--window", help="Conversion window from entry, e.g. 30m, 1h, 7d.")] = "1d",
    order: Annotated[str, typer.Option("--order", help="ordered (others may come between), strict "
                                                        "(consecutive) or any.")] = "ordered",
    per: Annotated[str, typer.Option("--per", help="Count users or sessions.")] = "user",
    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", help="Drop entities doing this event type between entry and their last step.")] = None,
    optional: Annotated[Optional[list[str]], typer.Option(
        "--optional", help="A step that may be skipped without losing the later steps.")] = None,
    breakdown: Annotated[Optional[str], typer.Option(
        "--breakdown", help="Split by the entry event's column (device, channel, category...) or properties.KEY.")] = None,
    step_window: Annotated[Optional[list[str]], typer.Option(
        "--step-window", help="STEP=DURATION: most time from the previous step, e.g. purchase=30m; repeatable.")] = None,
    over_time: Annotated[Optional[str], typer.Option("--over-time", help="Entries and conversions per day or week.")] = None,
    save_dropped_at: Annotated[Optional[str], typer.Option(
        "--save-dropped-at", help="With --save-segment: save who dropped at this step instead of who converted.")] = None,
    start: FromOpt = None, end: ToOpt = None, device: DeviceOpt = None, channel: ChannelOpt = None,
    where: WhereOpt = None, segment: SegmentOpt = None, gap: GapOpt = None, config: ConfigOpt = None,
    save_segment: SaveSegmentOpt = None, engine: EngineOpt = "duckdb", as_json: JsonOpt = False,
) -> None:
    """Funnel: count, rate from start and from the previous step, and median time, per step."""
    from journeymap.journeys._base import save_segment as save
    from journeymap.journeys._funnel import funnel

    windows = step_windows(step_window)
    if save_dropped_at and not save_segment:
        raise JourneymapError("--save-dropped-at names whom to save; give the segment's name with --save-segment too.")
    if save_segment and engine != "duckdb":
        raise JourneymapError("--save-segment writes into the DuckDB store; run it without --engine spark.")
    with open_journeys(store, config, start, end, device, channel, where, segment, gap, engine) as journeys:
        result = funnel(journeys, _split([steps]), window=window, order=order, per=per, exclude=_split(exclude),
                        optional=_split(optional), breakdown=breakdown, step_windows=windows, over_time=over_time)
        if save_segment:  # who, asked while the store is open; saved once it is closed
            # Segments hold users: per session, the users owning the sessions.
            if save_dropped_at:
                who, what = result.dropped(save_dropped_at, owners=True), f"dropped at {save_dropped_at}"
            else:
                who, what = result.users(owners=True), f"converted at {result.steps[-1].name}"
    data = result.to_dict()
    if save_segment:
        size = save(store, save_segment, who, f"funnel {steps}: {what}")
        data["segment"] = {"name": save_segment, "users": size, "who": what}
    if as_json:
        print_json(data)
        return
    _print_table(result)
    if save_segment:
        out.print(f"Saved {data['segment']['users']:,} users ({data['segment']['who']}) as segment '{save_segment}'.")


def _print_table(result) -> None:
    from rich.table import Table

    title = (f"Funnel per {result.per} ({result.order}, window {result.window}): {result.entered:,} entered, "
             f"{result.converted:,} converted ({_pct(result.conversion_rate)})")
    table = Table("step", "count", "rate from start", "rate from previous", "median time", title=title,
                  title_justify="left")
    for s in result.steps:
        table.add_row(f"{s.index + 1}. {s.name}" + (" (optional)" if s.optional else ""), f"{s.count:,}",
                      _pct(s.rate_from_start), _pct(s.rate_from_previous), _seconds(s.median_seconds_from_previous))
    out.print(table)
    if result.breakdown_values:
        table = Table(result.breakdown, "entered", "converted", "conversion", "lift",
                      title=f"By {result.breakdown} (lift against {_pct(result.conversion_rate)})", title_justify="left")
        for v in result.breakdown_values:
            table.add_row(v.value, f"{v.entered:,}", f"{v.converted:,}", _pct(v.conversion_rate),
                          "-" if v.lift is None else f"{v.lift:.2f}x")
        out.print(table)
    if result.over_time_rows:
        table = Table(result.over_time, "entered", "converted", "conversion", title="Over time", title_justify="left")
        for row in result.over_time_rows:
            table.add_row(row["period"], f"{row['entered']:,}", f"{row['converted']:,}", _pct(row["conversion_rate"]))
        out.print(table)
    ttc = result.time_to_convert
    if ttc.get("count"):
        p = ttc["percentiles"]
        out.print(f"Time to convert ({ttc['count']:,}): p10 {_seconds(p['p10'])}, p25 {_seconds(p['p25'])}, "
                  f"median {_seconds(p['p50'])}, p75 {_seconds(p['p75'])}, p90 {_seconds(p['p90'])}")


def register(app: typer.Typer) -> None:
    app.command("funnel")(funnel_command)


__all__ = ["register"]
