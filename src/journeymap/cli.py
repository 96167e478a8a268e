"""The ``journeymap`` command: one Typer command per task, each a thin shell over the library.

Errors journeymap raises on purpose print as one sentence (exit code 1), never a traceback;
``--json`` prints only JSON on stdout, with progress on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from journeymap.exceptions import JourneymapError

app = typer.Typer(
    help="journeymap: customer-journey intelligence for e-commerce logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="The DuckDB store file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only (for scripts).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Config file (default ./journeymap.toml).")]


def main() -> None:
    """Entry point: run the app, turning journeymap's own errors into one clear line."""
    try:
        app()
    except JourneymapError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted: nothing was written (an ingest commits only when it completes).")
        sys.exit(130)


def _settings(config: Path | None):
    from journeymap.config import Settings

    return Settings.load(config)


def _print_json(data: Any) -> None:
    out.out(json.dumps(data, indent=2, default=str), highlight=False)


@contextmanager
def _rows_progress(label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A Rich progress line counting rows and rows/s, on stderr."""
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"),
        TextColumn("{task.completed:,.0f} rows"), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), console=err, transient=True, disable=not enabled or not err.is_terminal,
    )
    started = time.perf_counter()
    with progress:
        task = progress.add_task(label, total=None, rate="")

        def advance(n: int) -> None:
            done = progress.tasks[0].completed + n
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=n, rate=f"{rate:,.0f}/s")

        yield advance


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories of files to ingest.")],
    store: StoreOpt,
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="Source format; detected from the header when omitted. See `journeymap formats`.")] = None,
    mapping: Annotated[Optional[Path], typer.Option("--mapping", help="TOML column mapping for --format generic.")] = None,
    map_: Annotated[Optional[list[str]], typer.Option("--map", help="Column mapping FIELD=COLUMN (generic format), repeatable.")] = None,
    event_map: Annotated[Optional[list[str]], typer.Option("--event-map", help="Event name mapping RAW=CANONICAL, repeatable.")] = None,
    ts_format: Annotated[Optional[str], typer.Option("--ts-format", help="strftime format of the timestamp column (generic).")] = None,
    ts_unit: Annotated[Optional[str], typer.Option("--ts-unit", help="Timestamps are Unix time in s, ms or us (generic).")] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="Zone of timestamps that carry none, e.g. Europe/London (default UTC).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate, pseudonymize and store shop logs; bad rows go to quarantine with their reason."""
    from journeymap.events import ingest as run_ingest
    from journeymap.events.adapters.generic import mapping_from_options, parse_pairs

    column_map = mapping_from_options(
        mapping,
        columns=parse_pairs(map_ or [], "--map"),
        event_types=parse_pairs(event_map or [], "--event-map"),
        ts_format=ts_format, ts_unit=ts_unit,
    )
    settings = _settings(config)
    with _rows_progress("ingesting", True) as advance:
        result = run_ingest(paths, store, format=format, mapping=column_map, settings=settings,
                            timezone=timezone, progress=advance)
    if as_json:
        _print_json(result.to_dict())
        return
    table = Table(title=f"Ingested {result.format} into {result.store}", title_justify="left")
    for column in ("file", "read", "stored", "quarantined", "duplicates"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for f in result.files:
        table.add_row(f.path, f"{f.read:,}", f"{f.stored:,}", f"{f.quarantined:,}", f"{f.duplicates:,}")
    if len(result.files) > 1:
        table.add_row("[bold]total", f"{result.read:,}", f"{result.stored:,}",
                      f"{result.quarantined:,}", f"{result.duplicates:,}")
    out.print(table)
    for reason, count in list(result.reasons.items())[:10]:
        out.print(f"  quarantined {count:,} x {reason}", highlight=False)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.quarantined:
        out.print(f"See them with: journeymap sql --store {store} \"SELECT file, line, field, reason FROM quarantine\"",
                  highlight=False)
    out.print(f"{result.seconds:.1f} s", highlight=False)


@app.command()
def info(store: StoreOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Summarise a store: events, users, sessions, event types, time span, quarantine."""
    from journeymap.store import Store

    settings = _settings(config)
    with Store(store, read_only=True) as st:
        summary = st.info(settings.session_gap)
    if as_json:
        _print_json(summary.to_dict())
        return
    _print_info(summary)


def _print_info(summary: Any) -> None:
    out.print(f"[bold]{summary.path}[/]" + ("  (demo: simulated users)" if summary.demo else ""))
    out.print(f"  {summary.events:,} events, {summary.users:,} users, {summary.sessions:,} sessions, "
              f"{summary.items:,} items", highlight=False)
    out.print(f"  from {summary.first_ts} to {summary.last_ts} (UTC)", highlight=False)
    table = Table(show_header=True, box=None, padding=(0, 2))
    table.add_column("event type")
    table.add_column("events", justify="right")
    table.add_column("share", justify="right")
    for name, count in summary.event_types.items():
        table.add_row(name, f"{count:,}", f"{count / max(summary.events, 1):.1%}")
    out.print(table)
    out.print(f"  quarantined rows: {summary.quarantined:,}"
              + (f" ({', '.join(f'{k}: {v:,}' for k, v in summary.quarantine_reasons.items())})"
                 if summary.quarantine_reasons else ""), highlight=False)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL statement; tables: events, quarantine, items, ingests.")],
    store: StoreOpt,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="Rows to print at most (table output).")] = 50,
) -> None:
    """Run a read-only SQL query against the store."""
    from journeymap.store import read_only_query

    columns, rows = read_only_query(store, query)
    if as_json:
        _print_json([dict(zip(columns, row)) for row in rows])
        return
    table = Table(*columns)
    for row in rows[:limit]:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)
    if len(rows) > limit:
        out.print(f"({len(rows):,} rows, {limit} shown; use --limit or --json)")


@app.command()
def export(
    store: StoreOpt,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    table: Annotated[str, typer.Option(help="events, quarantine, items, ingests, profiles, segments or item_vectors.")] = "events",
) -> None:
    """Export a store table to Parquet (for Spark, pandas, Polars, ...)."""
    from journeymap.store import Store

    with Store(store, read_only=True) as st:
        path = st.export(out_path, table)
    out.print(f"wrote {path}")


@app.command()
def pseudonym(
    raw_id: Annotated[str, typer.Argument(help="A user id as it appears in your source data.")],
    store: Annotated[Optional[Path], typer.Option("--store", "-s", help="Also count this user's events in the store.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the pseudonym journeymap stores for a raw user id (needs the secret)."""
    from journeymap.privacy import pseudonymize
    from journeymap.store import Store

    settings = _settings(config)
    value = pseudonymize(raw_id, settings.require_secret())
    data: dict[str, Any] = {"user": value}
    if store is not None:
        with Store(store, read_only=True) as st:
            data["events"] = st.con.execute(
                "SELECT count(*) FROM events WHERE user_id = ?", [value]).fetchall()[0][0]
    if as_json:
        _print_json(data)
    else:
        out.print(value + (f"  ({data['events']:,} events in {store})" if store else ""), highlight=False)


@app.command()
def formats(as_json: JsonOpt = False) -> None:
    """List the source formats ingest understands and the columns that identify each."""
    from journeymap.events.adapters import FORMATS

    rows = []
    for name, factory in FORMATS.items():
        adapter = factory()
        rows.append({"name": name, "title": adapter.title,
                     "files": {r.name: sorted(r.required) for r in adapter.roles}})
    if as_json:
        _print_json(rows)
        return
    table = Table("format", "what", "identified by")
    for row in rows:
        table.add_row(row["name"], row["title"],
                      "\n".join(f"{k}: {', '.join(v)}" for k, v in row["files"].items()))
    out.print(table)


@app.command()
def simulate(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="File to write (.csv or .parquet; with --live, the run's decisions as .jsonl).")],
    users: Annotated[int, typer.Option(help="Number of shoppers.")] = 10_000,
    days: Annotated[int, typer.Option(help="Days of traffic.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same file.")] = 0,
    format: Annotated[str, typer.Option("--format", help="rees46 (CSV in REES46 layout plus extra columns) or parquet.")] = "rees46",
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2024-01-01",
    live: Annotated[bool, typer.Option("--live", help="Send the shoppers to a running service (events, decisions) instead of writing a log.")] = False,
    target: Annotated[Optional[str], typer.Option("--target", help="--live: the service's address, e.g. http://127.0.0.1:8000 (key from $JOURNEYMAP_API_KEY).")] = None,
    rate: Annotated[float, typer.Option("--rate", help="--live: sessions per second.")] = 10.0,
    duration: Annotated[str, typer.Option("--duration", help="--live: how long to run, e.g. 60s or 5m.")] = "60s",
    as_json: JsonOpt = False,
) -> None:
    """Simulate a storefront's log with personas and planted effects, plus a ground-truth JSON."""
    from journeymap.simulator import simulate as run

    if live:
        from journeymap.simulator._live import live_command

        data = live_command(out_path, target, rate, duration, seed)
        if as_json:
            _print_json(data)
        else:
            out.print(f"sent {data['sessions']:,} sessions ({data['events']:,} events, {data['decisions']:,} decisions) "
                      f"to {target} in {data['seconds']:.0f} s; {data['best_action_share'] or 0:.1%} of decisions took "
                      f"the shopper's best action", highlight=False)
            out.print(f"decisions: {data['decisions_file']}  ground truth: {data['truth']}", highlight=False)
        return

    with _rows_progress("simulating", True) as advance:
        result = _simulate(run, users, days, seed, out_path, format, start, advance)
    data = {"path": str(result.path), "truth": str(result.truth_path), "events": result.events,
            "users": result.users, "sessions": result.sessions, "event_counts": result.event_counts}
    if as_json:
        _print_json(data)
    else:
        out.print(f"wrote {result.events:,} events of {result.users:,} users "
                  f"({result.sessions:,} sessions) to {result.path}", highlight=False)
        out.print(f"ground truth: {result.truth_path}", highlight=False)


def _demo_profiles(store: Path) -> tuple[Any, Any]:
    """Profiles of every simulated shopper, then segments of them (with item-text vectors)."""
    from journeymap.config import DEMO_SECRET, Settings
    from journeymap.profiles import build_profiles, segments

    profiles = build_profiles(store, settings=Settings(secret=DEMO_SECRET))
    return profiles, segments(store)


def _truth_by_pseudonym(truth: dict) -> dict[str, str]:
    from journeymap.config import DEMO_SECRET
    from journeymap.privacy import Pseudonymizer

    pseudo = Pseudonymizer(DEMO_SECRET)
    return {pseudo(u): p for u, p in truth["user_personas"].items()}


def _persona_recovery(report: Any, truth: dict) -> float | None:
    """How well the report's personas recover the simulator's planted ones (adjusted Rand index)."""
    from journeymap.config import DEMO_SECRET
    from journeymap.privacy import Pseudonymizer

    result = report.section("Personas").result
    if result is None:
        return None
    pseudo = Pseudonymizer(DEMO_SECRET)
    return round(result.adjusted_rand({pseudo(u): p for u, p in truth["user_personas"].items()}), 3)


def _simulate(run: Callable[..., Any], users: int, days: int, seed: int, path: Path, format: str,
              start: str, progress: Callable[[int], None]) -> Any:
    try:
        return run(users=users, days=days, seed=seed, out=path, format=format, start=start, progress=progress)
    except ValueError as exc:
        raise JourneymapError(str(exc)) from None


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's files.")] = Path("journeymap-demo"),
    users: Annotated[int, typer.Option(help="Simulated shoppers.")] = 20_000,
    days: Annotated[int, typer.Option(help="Days of traffic.")] = 28,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    as_json: JsonOpt = False,
) -> None:
    """The main job on the embedded default: simulate a shop, ingest it, write the journey report,
    profile every shopper and segment them."""
    from journeymap.events import ingest as run_ingest
    from journeymap.journeys._report import build_report
    from journeymap.simulator import simulate as run
    from journeymap.store import Store

    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "shop.csv"
    store = out_dir / "shop.duckdb"
    if store.exists():
        store.unlink()  # a demo starts from scratch; the log is rewritten too
    started = time.perf_counter()
    with _rows_progress("simulating", not as_json) as advance:
        sim = _simulate(run, users, days, seed, log, "rees46", "2024-01-01", advance)
    with _rows_progress("ingesting", not as_json) as advance:
        result = run_ingest(log, store, demo=True, progress=advance)
    with Store(store) as st:
        summary = st.info()
        parquet = st.export(out_dir / "events.parquet")
    with _rows_progress("analysing", not as_json):
        report = build_report(store, out_dir / "report.html")
    ari = _persona_recovery(report, sim.truth)
    with _rows_progress("profiling", not as_json):
        profiles, groups = _demo_profiles(store)
    truth = _truth_by_pseudonym(sim.truth)
    groups_ari = round(groups.adjusted_rand(truth), 3)
    elapsed = time.perf_counter() - started
    if as_json:
        _print_json({"log": str(log), "truth": str(sim.truth_path), "store": str(store),
                     "parquet": str(parquet), "ingest": result.to_dict(), "info": summary.to_dict(),
                     "report": report.to_dict(), "personas_adjusted_rand": ari,
                     "profiles": profiles.to_dict(), "segments": groups.to_dict(),
                     "segments_adjusted_rand": groups_ari, "seconds": round(elapsed, 2)})
        return
    out.print(f"[bold]journeymap demo[/]: a simulated shop, {users:,} shoppers over {days} days "
              f"(seed {seed}), user ids pseudonymized with the demo secret.")
    out.print(f"ingested {result.read:,} rows: {result.stored:,} stored, {result.quarantined:,} "
              f"quarantined, {result.duplicates:,} duplicates", highlight=False)
    _print_info(summary)
    out.print("\n[bold]journeys[/]")
    for section in report.sections[1:]:
        out.print(f"  [bold]{section.title}[/]: {section.sentence}", highlight=False)
    if ari is not None:
        out.print(f"  (the personas match the simulator's planted ones with adjusted Rand index {ari:.2f})")
    out.print(f"\n[bold]profiles[/]: {len(groups.assignments):,} shoppers in {groups.k} segments "
              f"(adjusted Rand index {groups_ari:.2f} against the planted personas)", highlight=False)
    for seg in groups.segments:
        out.print(f"  [bold]{seg.name}[/] ({seg.size:,}, {seg.conversion_rate:.1%} buy): {seg.description}",
                  highlight=False)
    out.print("\n[bold]results[/]")
    out.print(f"  simulated log   {log}", highlight=False)
    out.print(f"  ground truth    {sim.truth_path}", highlight=False)
    out.print(f"  event store     {store}   (journeymap info --store {store})", highlight=False)
    out.print(f"  events export   {parquet}", highlight=False)
    out.print(f"  journey report  {report.path}   (one HTML file, opens offline)", highlight=False)
    first = next(iter(sim.truth["user_personas"]))
    out.print(f"  a profile       journeymap profile --store {store} --user {first}", highlight=False)
    out.print(f"  try: journeymap sql --store {store} \"SELECT device, count(*) FROM events "
              "WHERE event_type = 'purchase' GROUP BY 1\"", highlight=False)
    out.print(f"done in {elapsed:.1f} s", highlight=False)


def _register_analyses() -> None:
    from journeymap.commands import register_all

    register_all(app)


_register_analyses()


if __name__ == "__main__":
    main()
