"""`journeymap report`: the journey report as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from journeymap.commands._options import (
    ChannelOpt, ConfigOpt, DeviceOpt, FromOpt, JsonOpt, SegmentOpt, StoreOpt, ToOpt, WhereOpt, out, print_json,
)


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        store: StoreOpt,
        out_path: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
        steps: Annotated[Optional[str], typer.Option("--steps", help="Main funnel steps, comma-separated (default: view, cart, checkout, purchase as present).")] = None,
        config: ConfigOpt = None,
        start: FromOpt = None,
        end: ToOpt = None,
        device: DeviceOpt = None,
        channel: ChannelOpt = None,
        where: WhereOpt = None,
        segment: SegmentOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Write the journey report: map, funnel, paths, drop-offs, attribution, retention, personas."""
        from journeymap.config import Settings
        from journeymap.journeys import Filters
        from journeymap.journeys._report import build_report

        filters = Filters.parse(start, end, device, channel, where, segment)
        step_list = [s.strip() for s in steps.split(",") if s.strip()] if steps else None
        result = build_report(store, out_path, Settings.load(config), filters, step_list)
        if as_json:
            print_json(result.to_dict())
            return
        for section in result.sections:
            out.print(f"[bold]{section.title}[/]: {section.sentence}", highlight=False)
        out.print(f"wrote {result.path} in {result.seconds:.1f} s (opens offline)", highlight=False)
