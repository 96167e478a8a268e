"""Journey analytics over the event store: sessions, graph, funnels, paths, drop-offs, attribution,
retention and personas. Each analysis returns a typed result with to_dict/to_frame/figure, and
``users(...)`` for the people behind any number."""

from __future__ import annotations

from typing import Any

from journeymap.journeys._base import Filters, Journeys, save_segment

__all__ = [
    "AttributionResult",
    "DropoffResult",
    "Filters",
    "FunnelResult",
    "Journeys",
    "LifecycleResult",
    "PathsResult",
    "PersonasResult",
    "Report",
    "RetentionResult",
    "StepMatrix",
    "StickinessResult",
    "TransitionGraph",
    "attribution",
    "build_report",
    "dropoff",
    "funnel",
    "lifecycle",
    "paths",
    "personas",
    "retention",
    "save_segment",
    "step_matrix",
    "stickiness",
    "transition_graph",
]

# Each analysis loads on first use, so `import journeymap.journeys` stays light.
_LAZY = {
    "attribution": "attribution", "AttributionResult": "attribution",
    "dropoff": "dropoff", "DropoffResult": "dropoff",
    "funnel": "funnel", "FunnelResult": "funnel",
    "transition_graph": "graph", "TransitionGraph": "graph", "step_matrix": "graph", "StepMatrix": "graph",
    "paths": "paths", "PathsResult": "paths",
    "personas": "personas", "PersonasResult": "personas",
    "retention": "retention", "RetentionResult": "retention", "lifecycle": "retention",
    "LifecycleResult": "retention", "stickiness": "retention", "StickinessResult": "retention",
    "build_report": "report", "Report": "report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"journeymap.journeys._{_LAZY[name]}"), name)
    raise AttributeError(f"module 'journeymap.journeys' has no attribute {name!r}")
