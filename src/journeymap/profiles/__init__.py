"""User profiles: interpretable per-user features, lifetime value, segments and plain-language summaries.

``build_profiles(store)`` writes the ``profiles`` table (RFM, CLV, decayed category and brand
affinities, price band, preferences, lifecycle, session statistics, funnel position, searches,
reviews); ``update_profiles(store)`` recomputes only users with new events and equals a rebuild.
``profile(store, user)`` reads one as a typed object; ``segments(store)`` clusters them;
``score_profiles(store, model)`` fills their embedding and propensities from a behaviour model.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "COLUMNS",
    "Lifecycle",
    "ModelFields",
    "ProfileTable",
    "Segment",
    "SegmentsResult",
    "UserProfile",
    "build_profiles",
    "category_label",
    "profile",
    "pseudonym_of",
    "score_profiles",
    "segments",
    "summarize",
    "update_profiles",
]

# Each part loads on first use, so `import journeymap.profiles` stays light.
_LAZY = {
    "COLUMNS": "build", "Lifecycle": "build", "ProfileTable": "build", "build_profiles": "build",
    "update_profiles": "build",
    "ModelFields": "model_fields", "score_profiles": "model_fields",
    "UserProfile": "profile", "profile": "profile", "pseudonym_of": "profile",
    "Segment": "segments", "SegmentsResult": "segments", "segments": "segments",
    "category_label": "summary", "summarize": "summary",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"journeymap.profiles._{_LAZY[name]}"), name)
    raise AttributeError(f"module 'journeymap.profiles' has no attribute {name!r}")
