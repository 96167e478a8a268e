"""``journeymap graph``: the journey map, a directly-follows graph of labels within sessions."""

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


def _edge(text: str) -> tuple[str, str]:
    source, sep, target = text.partition(",")
    if not sep or not source.strip() or not target.strip():
        raise JourneymapError(f"--edge takes SOURCE,TARGET, like product_view,add_to_cart. Got '{text}'.")
    return source.strip(), target.strip()


def graph(
    store: StoreOpt,
    by: Annotated[str, typer.Option("--by", help="Node label: event_type, stage, category, device, channel or properties.KEY.")] = "event_type",
    min_count: Annotated[int, typer.Option("--min-count", help="Leave out edges with fewer transitions.")] = 1,
    collapse_repeats: Annotated[bool, typer.Option("--collapse-repeats", help="Merge consecutive equal labels first.")] = False,
    edge: Annotated[str | None, typer.Option("--edge", help="With --save-segment: the users behind this edge SOURCE,TARGET.")] = None,
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
    """The journey map: what customers do next, with counts, probabilities and time between steps."""
    from journeymap.journeys import save_segment as save
    from journeymap.journeys._graph import SESSION_START, transition_graph

    chosen = _edge(edge) if edge else None
    if chosen and not save_segment:
        raise JourneymapError("--edge picks whose users to save, so it needs --save-segment NAME as well.")
    if save_segment and engine != "duckdb":
        raise JourneymapError("--save-segment writes into the DuckDB store; run it without --engine spark.")
    with open_journeys(store, config, start, end, device, channel, where, segment, gap, engine) as journeys:
        result = transition_graph(journeys, by=by, min_edge_count=min_count, collapse_repeats=collapse_repeats)
        if save_segment:
            if chosen:
                result.edge(*chosen)  # says so when the edge is not in the graph
            users = result.users(*chosen) if chosen else result.users(SESSION_START)
    data = result.to_dict()
    if save_segment:
        what = f"the {chosen[0]} -> {chosen[1]} edge" if chosen else "the journey map"
        size = save(store, save_segment, users, f"users behind {what} by {by}")
        data["segment"] = {"name": save_segment, "users": size}
    if as_json:
        print_json(data)
        return
    nodes = Table(title=f"Journey map by {by}: {result.sessions:,} sessions", title_justify="left")
    for column in ("node", "count", "users", "mean step"):
        nodes.add_column(column, justify="left" if column == "node" else "right")
    for n in result.nodes:
        nodes.add_row(n.name, f"{n.count:,}", f"{n.users:,}", f"{n.mean_step:.1f}")
    out.print(nodes)
    edges = Table(title=f"Edges ({len(result.edges):,}, most frequent first)", title_justify="left")
    for column in ("source", "target", "count", "users", "P(out)", "P(in)", "median s", "p95 s"):
        edges.add_column(column, justify="left" if column in ("source", "target") else "right")
    seconds = lambda v: "-" if v is None else f"{v:,.0f}"
    for e in result.edges:
        edges.add_row(e.source, e.target, f"{e.count:,}", f"{e.users:,}", f"{e.probability:.1%}",
                      f"{e.probability_in:.1%}", seconds(e.median_seconds), seconds(e.p95_seconds))
    out.print(edges)
    if save_segment:
        out.print(f"saved segment '{save_segment}' with {data['segment']['users']:,} users", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("graph")(graph)
