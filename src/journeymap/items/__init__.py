"""Item and text understanding: catalog text (and images) as vectors from a pretrained encoder.

Item vectors are cached in the store and recomputed only for new or changed text; on top of them
sit similar items, catalog search in any language the encoder knows, and user content vectors
(the weighted mean of what a user engaged with). Encoders are pluggable: see ``TextEncoder``.
"""

from __future__ import annotations

from journeymap.items._encoders import (
    ColourHistogramEncoder,
    ImageEncoder,
    TextEncoder,
    UniversalSentenceEncoder,
    default_text_encoder,
    read_rgb,
    resolve_encoder,
)
from journeymap.items._search import (
    ItemMatch,
    SearchResult,
    SimilarItems,
    search_items,
    similar_items,
)
from journeymap.items._users import user_content_vectors
from journeymap.items._vectors import (
    ItemVectors,
    RefreshResult,
    encode_texts,
    item_texts,
    load_item_vectors,
    refresh_item_vectors,
)

__all__ = [
    "ColourHistogramEncoder",
    "ImageEncoder",
    "ItemMatch",
    "ItemVectors",
    "RefreshResult",
    "SearchResult",
    "SimilarItems",
    "TextEncoder",
    "UniversalSentenceEncoder",
    "default_text_encoder",
    "encode_texts",
    "item_texts",
    "load_item_vectors",
    "read_rgb",
    "refresh_item_vectors",
    "resolve_encoder",
    "search_items",
    "similar_items",
    "user_content_vectors",
]
