"""Canonical events: source-format adapters, validation and ingest into the store."""

from __future__ import annotations

from typing import Any

from journeymap.events.vocabulary import EVENT_TYPES, STAGES, Vocabulary

__all__ = [
    "ColumnMapping",
    "EVENT_TYPES",
    "FORMATS",
    "FileSummary",
    "IngestResult",
    "STAGES",
    "Vocabulary",
    "ingest",
]

# Loaded on first use: config imports the vocabulary, and ingest imports config.
_LAZY = {
    "FORMATS": ("journeymap.events.adapters", "FORMATS"),
    "ColumnMapping": ("journeymap.events.adapters", "Mapping_"),
    "FileSummary": ("journeymap.events._ingest", "FileSummary"),
    "IngestResult": ("journeymap.events._ingest", "IngestResult"),
    "ingest": ("journeymap.events._ingest", "ingest"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'journeymap.events' has no attribute {name!r}")
