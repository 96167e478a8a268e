"""CLI commands beyond the core ones in cli.py, one module per analysis, each with register(app).

Modules are found by name, so adding an analysis needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer


def register_all(app: typer.Typer) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(app)
