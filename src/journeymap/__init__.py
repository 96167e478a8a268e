"""journeymap: customer-journey intelligence for e-commerce behaviour logs.

Ingest shop logs into an embedded event store (validated, pseudonymized, bad rows quarantined),
then map, profile, predict and act on customer journeys. Every CLI command is a call here.
"""

from __future__ import annotations

from typing import Any

from journeymap.config import Settings
from journeymap.exceptions import ConfigError, FormatError, JourneymapError, StoreError
from journeymap.privacy import pseudonymize
from journeymap.store import Store, StoreInfo

__version__ = "0.1.0"

__all__ = [
    "ColumnMapping",
    "ConfigError",
    "FormatError",
    "IngestResult",
    "JourneymapError",
    "Settings",
    "SimulationResult",
    "Store",
    "StoreError",
    "StoreInfo",
    "ingest",
    "pseudonymize",
    "simulate",
]

_LAZY = {
    "ColumnMapping": ("journeymap.events.adapters", "Mapping_"),
    "IngestResult": ("journeymap.events._ingest", "IngestResult"),
    "ingest": ("journeymap.events._ingest", "ingest"),
    "SimulationResult": ("journeymap.simulator", "SimulationResult"),
    "simulate": ("journeymap.simulator", "simulate"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'journeymap' has no attribute {name!r}")
