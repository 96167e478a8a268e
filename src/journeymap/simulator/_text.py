"""Free text in the simulated log: search queries and review sentences.

Both are built per leaf category ahead of time, so the journey loop only picks from lists.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ._catalog import Catalog

# Tone follows the rating; templates avoid verbs that would have to agree with the product noun.
REVIEW_TEMPLATES: dict[int, tuple[str, ...]] = {
    5: ("Really happy with the {item}, great quality and quick delivery.",
        "Five stars for the {item}, exactly what I was looking for.",
        "Excellent {item}, would definitely buy again."),
    4: ("Good {item} for the price, only a small quibble with the packaging.",
        "Solid {item}, does the job well."),
    3: ("Average {item}, nothing special for the money.",
        "The {item} turned out just okay; the description oversold it."),
    2: ("Disappointed with the {item}, the quality could be much better.",
        "Not great: the {item} looked cheaper than in the photos."),
    1: ("Terrible {item}, fell apart within a week and I want a refund.",
        "Do not buy this {item}, a complete waste of money."),
}
# Ratings skew positive, as on real shops.
RATING_WEIGHTS = (0.07, 0.06, 0.12, 0.30, 0.45)


def review_texts(catalog: Catalog) -> list[dict[int, list[str]]]:
    """Per leaf: rating -> candidate review sentences mentioning the product type."""
    return [
        {r: [t.format(item=lf.query) for t in templates] for r, templates in REVIEW_TEMPLATES.items()}
        for lf in catalog.leaves
    ]


def search_queries(catalog: Catalog) -> tuple[list[list[str]], list[list[str]]]:
    """Per leaf: (plain queries, bargain queries), from the leaf's words, colours and brands."""
    plain, bargain = [], []
    for i, lf in enumerate(catalog.leaves):
        qs = [lf.query, f"best {lf.query}"]
        qs += [f"{b.lower()} {lf.query}" for b in lf.brands]
        # Colour searches use the colours this leaf's products actually come in, commonest first.
        colours = Counter(catalog.colour[p] for p in np.flatnonzero(catalog.leaf == i).tolist())
        qs += [f"{c} {lf.query}" for c, _ in colours.most_common(5) if c]
        plain.append(qs)
        bargain.append([f"cheap {lf.query}", f"{lf.query} sale", f"{lf.query} deals", f"discount {lf.query}"])
    return plain, bargain
