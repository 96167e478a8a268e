"""Options every analysis command shares: the store, filters, session gap, JSON output, segments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

out = Console(soft_wrap=True)

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="The DuckDB store file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only (for scripts).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Config file (default ./journeymap.toml).")]
FromOpt = Annotated[Optional[str], typer.Option("--from", help="Only events at or after this UTC time (2024-01-31[ 13:00]).")]
ToOpt = Annotated[Optional[str], typer.Option("--to", help="Only events before this UTC time.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="Only these devices, comma-separated.")]
ChannelOpt = Annotated[Optional[str], typer.Option("--channel", help="Only these channels, comma-separated.")]
WhereOpt = Annotated[Optional[list[str]], typer.Option("--where", help="Event property filter KEY=VALUE, repeatable.")]
SegmentOpt = Annotated[Optional[str], typer.Option("--segment", help="Only users of this saved segment.")]
GapOpt = Annotated[Optional[str], typer.Option("--gap", help="Inactivity that starts a new session, e.g. 30m (default from config).")]
SaveSegmentOpt = Annotated[Optional[str], typer.Option("--save-segment", help="Save the users behind the result as a segment of this name.")]


def open_journeys(store: Path, config: Path | None = None, start: str | None = None, end: str | None = None,
                  device: str | None = None, channel: str | None = None, where: list[str] | None = None,
                  segment: str | None = None, gap: str | None = None):
    """Open the store for analysis with the command's filters."""
    from journeymap.config import Settings
    from journeymap.journeys import Filters, Journeys

    filters = Filters.parse(start, end, device, channel, where, segment)
    return Journeys.open(store, Settings.load(config), filters, gap)


def print_json(data: Any) -> None:
    out.out(json.dumps(data, indent=2, default=str), highlight=False)
