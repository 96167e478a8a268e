"""`journeymap profiles`, `profile` and `segments`: build or update user profiles, show one, cluster them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from journeymap.commands._options import ConfigOpt, JsonOpt, StoreOpt, out, print_json


def register(app: typer.Typer) -> None:
    app.command("profiles")(profiles_command)
    app.command("profile")(profile_command)
    app.command("segments")(segments_command)


def profiles_command(
    store: StoreOpt,
    as_of: Annotated[str | None, typer.Option("--as-of", help="UTC time the profiles describe (default: the store's last event).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Recompute every user instead of only those with new events.")] = False,
    half_life: Annotated[float | None, typer.Option("--half-life", help="Days after which an event counts half in the affinities (default 30, or the last build's).")] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="A behaviour model file (journeymap train --store STORE --model behaviour --out M): after the build, fill every profile's embedding, purchase_propensity and churn_propensity from it, as of the store's latest event; later builds keep them until the next --model run.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build or update every user's profile (RFM, CLV, affinities, lifecycle, summary) in the store.

    With --model, also score every user with a behaviour model: journeymap profiles -s shop.duckdb -m behaviour.npz
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from journeymap.config import Settings
    from journeymap.profiles import build_profiles, score_profiles, update_profiles

    settings = Settings.load(config)
    if model is not None:  # a missing or wrong model fails here, before the build
        from journeymap.profiles._model_fields import behaviour_model

        behaviour_model(model, store)
    err = Console(stderr=True)
    progress = Progress(TextColumn("[bold]profiles[/]"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)
    scored = None
    with progress:
        task = progress.add_task("starting", total=1.0)

        def advance(what: str, done: float) -> None:
            progress.update(task, description=what, completed=done)

        run = build_profiles if full else update_profiles
        options = {} if half_life is None else {"half_life_days": half_life}
        result = run(store, as_of, settings=settings, progress=advance, **options)
        if model is not None:
            scored = score_profiles(store, model, settings, progress=advance)
    data = result.to_dict()
    if scored is not None:
        data["model_fields"] = scored.to_dict()
    if as_json:
        print_json(data)
        return
    how = "rebuilt" if result.mode == "full" else "updated"
    why = f" ({result.reason})" if result.reason else ""
    out.print(f"{how} profiles of {result.user_count:,} users as of {data['as_of']}{why}: "
              f"{result.recomputed:,} recomputed, {result.removed:,} removed, in {result.seconds:.1f} s",
              highlight=False)
    out.print("  lifecycle: " + ", ".join(f"{k} {v:,}" for k, v in data["lifecycle"].items()), highlight=False)
    out.print("  latest session: " + ", ".join(f"{k} {v:,}" for k, v in data["funnel_stage"].items()),
              highlight=False)
    clv = data["clv"]
    if clv.get("bgnbd"):
        out.print(f"  lifetime value: BG/NBD and Gamma-Gamma fitted on {clv['buyers']:,} buyers", highlight=False)
    if clv.get("note"):
        out.print(f"  lifetime value: {clv['note']}", highlight=False)
    if scored is not None:
        out.print(f"  model fields: {scored.profiles:,} profiles scored by {model} (embedding of {scored.dim}, "
                  f"purchase and churn propensity, as of {scored.events_to}) in {scored.seconds:.1f} s",
                  highlight=False)
    out.print(f"  show one: journeymap profile --store {store} --user RAW_ID", highlight=False)


def profile_command(
    store: StoreOpt,
    user: Annotated[str | None, typer.Option("--user", "-u", help="The user's id as in your source data (pseudonymized with the configured secret).")] = None,
    pseudonym: Annotated[str | None, typer.Option("--pseudonym", help="The stored pseudonym instead of a raw id.")] = None,
    vector: Annotated[bool, typer.Option("--content-vector", help="Add the user's content vector (item-text space).")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one user's profile: counts, value, affinities, lifecycle, segment and a plain summary."""
    from journeymap.config import Settings
    from journeymap.exceptions import JourneymapError
    from journeymap.profiles import profile

    if (user is None) == (pseudonym is None):
        raise JourneymapError("Give the user with --user RAW_ID (the id in your data) or --pseudonym PSEUDONYM.")
    settings = Settings.load(config)
    result = profile(store, pseudonym, raw_id=user, settings=settings, content=vector) if user is not None else \
        profile(store, pseudonym, settings=settings, content=vector)
    data = result.to_dict()
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]{result.user}[/]  ({result.lifecycle.replace('_', ' ')}"
              + (f", segment {result.segment}" if result.segment else "") + ")", highlight=False)
    out.print(result.summary, highlight=False)
    bought = f"{result.purchases:,} purchase{'' if result.purchases == 1 else 's'}" + ("" if result.monetary is None else f" worth {result.monetary:,.2f}")
    clv = "-" if result.clv_1y is None else f"{result.clv_1y:,.2f}"
    sessions = f"{result.sessions:,} session{'' if result.sessions == 1 else 's'}"
    out.print(f"  {result.events:,} events, {sessions}, {bought}; RFM {result.rfm or '-'}; "
              f"1-year CLV {clv}" + (f" ({result.clv_note})" if result.clv_note else ""), highlight=False)
    for label, items in (("categories", result.top_categories), ("brands", result.top_brands)):
        if items:
            out.print(f"  top {label}: " + ", ".join(f"{a.name} ({a.share:.0%})" for a in items), highlight=False)


def segments_command(
    store: StoreOpt,
    k: Annotated[int | None, typer.Option("--k", help="A fixed number of segments (default: chosen by silhouette over 3..8).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Write membership to this .csv or .parquet file.")] = None,
    content: Annotated[bool | None, typer.Option("--content/--no-content", help="Use item-text content vectors (default: when the catalog has names).")] = None,
    image_encoder: Annotated[str | None, typer.Option("--image-encoder", help="Also cluster on the pictures of what users viewed: an image encoder as module:Class (e.g. journeymap.items:ColourHistogramEncoder).")] = None,
    save_segments: Annotated[bool, typer.Option("--save-segments", help="Also save each as a named segment (profile-segment-ID) for --segment filters.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the clustering.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Cluster the profiles into segments, name and describe each, and save every user's segment."""
    from journeymap.profiles import segments

    result = segments(store, k=k, content=content, image_encoder=image_encoder, random_state=seed)
    data = result.to_dict()
    if out_path is not None:
        data["out"] = str(result.export(out_path))
    if save_segments:
        data["saved"] = result.save_as_segments(store)
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table("id", "name", "users", "share", "conversion", "mean spend", "description",
                  title=f"{result.k} segments of {len(result.assignments):,} profiles (k by {result.criterion})",
                  title_justify="left")
    for s in result.segments:
        table.add_row(str(s.id), s.name, f"{s.size:,}", f"{s.share:.1%}", f"{s.conversion_rate:.1%}",
                      f"{s.mean_monetary:,.2f}", s.description)
    out.print(table)
    out.print(f"content vectors: {'used' if result.content else 'not used'} ({result.content_note})", highlight=False)
    if out_path is not None:
        out.print(f"wrote membership to {data['out']}", highlight=False)
    for name, size in data.get("saved", {}).items():
        out.print(f"saved segment '{name}' ({size:,} users)", highlight=False)
