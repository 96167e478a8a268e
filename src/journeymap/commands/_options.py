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
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="duckdb (the store) or spark: the same analysis on Spark, reading --store as Parquet "
                     "(a DuckDB store is exported first).")]
SaveSegmentOpt = Annotated[Optional[str], typer.Option("--save-segment", help="Save the users behind the result as a segment of this name.")]


def open_journeys(store: Path, config: Path | None = None, start: str | None = None, end: str | None = None,
                  device: str | None = None, channel: str | None = None, where: list[str] | None = None,
                  segment: str | None = None, gap: str | None = None, engine: str = "duckdb"):
    """Open the store for analysis with the command's filters, on the chosen engine."""
    from journeymap.config import Settings
    from journeymap.exceptions import JourneymapError
    from journeymap.journeys import Filters, Journeys

    filters = Filters.parse(start, end, device, channel, where, segment)
    settings = Settings.load(config)
    if engine == "duckdb":
        return Journeys.open(store, settings, filters, gap)
    if engine != "spark":
        raise JourneymapError(f"--engine takes duckdb or spark. Got '{engine}'.")
    events = Path(store)
    if events.is_file() and events.read_bytes()[8:12] == b"DUCK":  # a store: hand Spark its events as Parquet
        import atexit
        import shutil
        import tempfile

        from journeymap.store import Store

        folder = Path(tempfile.mkdtemp(prefix="journeymap-spark-"))
        atexit.register(shutil.rmtree, folder, True)
        with Store(events, read_only=True) as st:
            events = st.export(folder / "events.parquet")
    return Journeys.on_spark(str(events), settings=settings, filters=filters, gap=gap)


def print_json(data: Any) -> None:
    out.out(json.dumps(data, indent=2, default=str), highlight=False)
