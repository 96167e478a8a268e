"""`journeymap personas`: users clustered by their journeys, each persona described in words."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    app.command("personas")(personas_command)


def personas_command(
    store: StoreOpt,
    k: Annotated[int | None, typer.Option("--k", help="A fixed number of personas (default: chosen by silhouette).")] = None,
    k_min: Annotated[int, typer.Option("--k-min", help="Smallest k tried when choosing k.")] = 3,
    k_max: Annotated[int, typer.Option("--k-max", help="Largest k tried when choosing k.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the clustering.")] = 0,
    max_users: Annotated[int | None, typer.Option("--max-users", help="Fit on a sample of this many users; all are assigned.")] = None,
    persona: Annotated[int | None, typer.Option("--persona", help="With --save-segment: the persona id whose users to save.")] = None,
    save_segment: SaveSegmentOpt = None,
    start: FromOpt = None, end: ToOpt = None, device: DeviceOpt = None, channel: ChannelOpt = None,
    where: WhereOpt = None, segment: SegmentOpt = None, gap: GapOpt = None,
    config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """Cluster users into personas by how their journeys look, and describe each one."""
    from journeymap.exceptions import JourneymapError
    from journeymap.journeys import save_segment as save
    from journeymap.journeys._personas import personas

    if save_segment and persona is None:
        raise JourneymapError("--save-segment on personas needs --persona ID to say whose users to save.")
    with open_journeys(store, config, start, end, device, channel, where, segment, gap) as journeys:
        result = personas(journeys, k=k, k_range=(k_min, k_max), random_state=seed, max_users=max_users)
    data = result.to_dict()
    if save_segment:
        users = result.users(persona)
        data["segment"] = {"name": save_segment, "persona": persona,
                           "size": save(store, save_segment, users, f"persona {persona}: {result.personas[persona]['name']}")}
    if as_json:
        print_json(data)
        return
    _print(data, Path(store))


def _print(data: dict, store: Path) -> None:
    from rich.table import Table

    scores = ", ".join(f"{k}: {v:.3f}" for k, v in data["scores"].items() if v is not None)
    title = f"{data['k']} personas among {data['users']} users in {store}"
    table = Table("id", "name", "users", "share", "conversion", "sessions", "what sets them apart",
                  title=title, title_justify="left")
    for p in data["personas"]:
        table.add_row(str(p["id"]), p["name"], str(p["size"]), f"{p['share']:.1%}",
                      f"{p['conversion_rate']:.1%}", f"{p['mean_sessions']:.2f}", p["description"])
    out.print(table)
    if scores:
        out.print(f"k by {data['criterion']} (higher is better): {scores}", highlight=False)
    if "segment" in data:
        s = data["segment"]
        out.print(f"saved segment '{s['name']}': {s['size']} users of persona {s['persona']}", highlight=False)
