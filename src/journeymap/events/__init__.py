"""Canonical events: source-format adapters, validation and ingest into the store."""

from journeymap.events.adapters import FORMATS, Mapping_ as ColumnMapping
from journeymap.events.ingest import FileSummary, IngestResult, ingest
from journeymap.events.vocabulary import EVENT_TYPES, STAGES, Vocabulary

__all__ = [
    "EVENT_TYPES", "FORMATS", "STAGES", "ColumnMapping", "FileSummary", "IngestResult",
    "Vocabulary", "ingest",
]
