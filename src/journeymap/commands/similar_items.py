"""``journeymap similar-items``: the catalog items nearest to one item by their text vectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from journeymap.commands._options import JsonOpt, StoreOpt, out, print_json

EncoderOpt = Annotated[str | None, typer.Option(
    "--encoder", help="A text encoder as module:Class (default: the multilingual Universal Sentence Encoder).")]
KOpt = Annotated[int, typer.Option("--k", "-k", help="How many items to show.")]


def similar_items(
    store: StoreOpt,
    item: Annotated[str, typer.Option("--item", "-i", help="The shop's own item id.")],
    k: KOpt = 10,
    encoder: EncoderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Items most like one item, by cosine similarity of their name, category, brand and description."""
    from journeymap.items import similar_items as run

    with encoding_progress() as progress:
        result = run(store, item, k, encoder=encoder, progress=progress)
    if as_json:
        print_json(result.to_dict())
        return
    print_matches(f"Items most similar to {result.name or result.item_id} [{result.item_id}]", result)


@contextmanager
def encoding_progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr while item vectors are computed, shown when there are many."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    err = Console(stderr=True)
    bar = Progress(TextColumn("[bold]encoding item texts"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)
    tasks: list[Any] = []

    def advance(done: int, total: int) -> None:
        if total < 1_000:  # a few seconds at most: no bar
            return
        if not tasks:
            tasks.append(bar.add_task("encoding", total=total))
        bar.update(tasks[0], completed=done)

    with bar:
        yield advance


def print_matches(title: str, result: Any) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("rank", "item_id", "name", "category", "brand", "score"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, m in enumerate(result.items, 1):
        table.add_row(str(rank), m.item_id, m.name or "", m.category or "", m.brand or "", f"{m.score:.3f}")
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("similar-items")(similar_items)
