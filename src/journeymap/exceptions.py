"""Every error journeymap raises on purpose, in one hierarchy.

    JourneymapError            anything journeymap raises on purpose; the CLI prints its message
    ├── ConfigError            a setting is missing or unsafe (e.g. no pseudonymization secret)
    ├── FormatError            an input file's format is unknown, ambiguous or unreadable
    ├── StoreError             the event store cannot be opened, or a query against it is refused
    └── MissingDependencyError an optional extra is needed: the message names the pip command
"""

from __future__ import annotations


class JourneymapError(Exception):
    """Base class: a user-facing error whose message says what to do next."""


class ConfigError(JourneymapError):
    """A setting is missing, malformed or unsafe."""


class FormatError(JourneymapError):
    """An input file cannot be read as the given or detected format."""


class StoreError(JourneymapError):
    """The event store cannot be opened or refuses an operation."""


class MissingDependencyError(JourneymapError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""
