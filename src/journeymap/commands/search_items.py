"""``journeymap search-items``: catalog search by meaning, in any language the encoder knows."""

from __future__ import annotations

from typing import Annotated

import typer

from journeymap.commands._options import JsonOpt, StoreOpt, print_json
from journeymap.commands.similar_items import (
    EncoderOpt,
    KOpt,
    encoding_progress,
    print_matches,
)


def search_items(
    text: Annotated[str, typer.Argument(help="What to look for, e.g. \"red running shoes\" (any language).")],
    store: StoreOpt,
    k: KOpt = 10,
    encoder: EncoderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Items whose name, category, brand and description are nearest in meaning to the text."""
    from journeymap.items import search_items as run

    with encoding_progress() as progress:
        result = run(store, text, k, encoder=encoder, progress=progress)
    if as_json:
        print_json(result.to_dict())
        return
    print_matches(f"Items matching '{text}'", result)


def register(app: typer.Typer) -> None:
    app.command("search-items")(search_items)
