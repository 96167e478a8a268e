"""Similar items and catalog search: cosine similarity over the cached item vectors.

Both return a typed result with ``to_dict()`` (what ``--json`` prints), ``to_frame()`` and
``figure()``; the chart shows exactly the rows of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from journeymap.exceptions import JourneymapError
from journeymap.items._encoders import modality, resolve_encoder
from journeymap.items._vectors import (
    ItemVectors,
    Progress,
    StoreLike,
    _open,
    _text_sql,
    encode_texts,
    load_item_vectors,
)

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go


@dataclass(frozen=True)
class ItemMatch:
    """One item of a result; ``score`` is the cosine similarity, from -1 to 1."""

    item_id: str
    name: str | None
    score: float
    category: str | None = None
    brand: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "name": self.name, "score": self.score,
                "category": self.category, "brand": self.brand}


class _Matches:
    """What both results share: ranked ``items`` found with the vectors of ``encoder``."""

    encoder: str
    items: list[ItemMatch]

    def __len__(self) -> int:
        return len(self.items)

    def to_frame(self) -> pd.DataFrame:
        """One row per item, best first."""
        import pandas as pd

        return pd.DataFrame(
            [{"rank": i + 1, **m.to_dict()} for i, m in enumerate(self.items)],
            columns=["rank", "item_id", "name", "score", "category", "brand"])

    def _figure(self, title: str) -> go.Figure:
        import plotly.graph_objects as go

        labels = [f"{m.name or '(no name)'} [{m.item_id}]" for m in self.items]
        fig = go.Figure(go.Bar(
            x=[m.score for m in self.items][::-1], y=labels[::-1], orientation="h",
            hovertemplate="%{y}: cosine %{x:.3f}<extra></extra>"))
        fig.update_layout(title=title, xaxis_title=f"cosine similarity ({self.encoder})",
                          height=max(300, 40 + 28 * len(self.items)))
        return fig


@dataclass
class SimilarItems(_Matches):
    """The ``k`` catalog items nearest to one item, the item itself left out."""

    item_id: str
    name: str | None
    encoder: str
    items: list[ItemMatch]

    def to_dict(self) -> dict[str, Any]:
        return {"item": {"item_id": self.item_id, "name": self.name}, "encoder": self.encoder,
                "items": [m.to_dict() for m in self.items]}

    def figure(self) -> go.Figure:
        """A bar per similar item, its length the cosine similarity."""
        return self._figure(f"Items most similar to {self.name or self.item_id}")


@dataclass
class SearchResult(_Matches):
    """The ``k`` catalog items whose text is nearest to a free-text query (in any language)."""

    query: str
    encoder: str
    items: list[ItemMatch]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "encoder": self.encoder, "items": [m.to_dict() for m in self.items]}

    def figure(self) -> go.Figure:
        """A bar per item found, its length the cosine similarity to the query."""
        return self._figure(f"Items matching '{self.query}'")


def similar_items(store_path: StoreLike, item_id: str, k: int = 10, *, encoder: Any = None,
                  image_root: Any = None, progress: Progress | None = None) -> SimilarItems:
    """The ``k`` items most similar to ``item_id`` (the shop's own id) by cosine of their vectors.

    Vectors are computed or refreshed first as needed (see ``refresh_item_vectors``; ``progress``
    is called with (done, total) as they are). An image encoder compares items by their images.
    """
    _check_k(k)
    enc = resolve_encoder(encoder)
    item_id = str(item_id)
    # Checked first, so that a mistyped id does not wait for a whole catalog to be encoded.
    if modality(enc) == "text" and (problem := _item_problem(store_path, item_id, enc)):
        raise problem
    vectors = load_item_vectors(store_path, enc, image_root=image_root, progress=progress)
    row = vectors.index.get(item_id)
    if row is None:
        raise _item_problem(store_path, item_id, enc, has_vector=False) or JourneymapError(
            f"Item '{item_id}' has no {enc.name} vector.")
    scores = vectors.matrix @ vectors.matrix[row]  # (n,)
    scores[row] = -np.inf
    return SimilarItems(encoder=enc.name, items=_top(vectors, scores, min(k, len(vectors) - 1)),
                        item_id=item_id, name=vectors.names[row])


def search_items(store_path: StoreLike, text: str, k: int = 10, *, encoder: Any = None,
                 progress: Progress | None = None) -> SearchResult:
    """The ``k`` items whose text is nearest to ``text``; the default encoder matches across languages."""
    _check_k(k)
    if not str(text or "").strip():
        raise JourneymapError("search_items needs some text to search for, like 'red running shoes'.")
    enc = resolve_encoder(encoder)
    if modality(enc) != "text":
        raise JourneymapError(f"search_items needs a text encoder; {enc.name!r} encodes images.")
    vectors = load_item_vectors(store_path, enc, progress=progress)
    if not len(vectors):
        raise JourneymapError(
            f"No item in the catalog of {store_path} has a name, category, brand or description to search; "
            "ingest a log or catalog that carries product names (e.g. an item_name column).")
    query = encode_texts([text], enc)[0]  # (dim,)
    return SearchResult(encoder=enc.name, items=_top(vectors, vectors.matrix @ query, k), query=text)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise JourneymapError(f"k must be a positive number of items, like 10. Got {k!r}.")


def _top(vectors: ItemVectors, scores: np.ndarray, k: int) -> list[ItemMatch]:
    # A stable sort over ids in sorted order: equal scores come out by item id, every run alike.
    order = np.argsort(-scores, kind="stable")[:k]
    return [ItemMatch(vectors.item_ids[i], vectors.names[i], round(float(scores[i]), 6),
                      vectors.categories[i], vectors.brands[i]) for i in order if np.isfinite(scores[i])]


def _item_problem(store_path: StoreLike, item_id: str, encoder: Any,
                  has_vector: bool | None = None) -> JourneymapError | None:
    """What to do when the item is unknown or has nothing to encode; None when it is fine."""
    with _open(store_path, write=False) as st:
        known = st.con.execute("SELECT count(*) FROM items WHERE item_id = ?", [item_id]).fetchall()[0][0]
        items = st.con.execute("SELECT count(*) FROM items").fetchall()[0][0]
        if has_vector is None and known:
            has_vector = bool(st.con.execute(
                f"SELECT count(*) FROM {_text_sql(st.con)} WHERE item_id = ?", [item_id]).fetchall()[0][0])
        path = st.path
    if not known:
        return JourneymapError(
            f"Item '{item_id}' is not in the catalog of {path} ({items:,} items). Item ids are the shop's "
            f"own; list some with: journeymap sql --store {path} \"SELECT item_id, name FROM items LIMIT 20\"")
    if not has_vector:
        what = "image file" if modality(encoder) == "image" else "name, category, brand or description"
        return JourneymapError(
            f"Item '{item_id}' has no {what} in the catalog of {path}, so it has no {encoder.name} vector "
            "to compare; ingest a log or catalog that carries it.")
    return None
