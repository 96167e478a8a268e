"""The live service (``journeymap serve``): ingest events as they happen; profiles, predictions,
journeys and decisions that include them at once.

``create_app(store, settings, model_path=None, bus="memory", api_keys=None)`` builds the FastAPI
app; ``journeymap serve`` runs it with uvicorn. Routes and the API-key scope each needs
(``admin`` implies all; a missing or unknown key gets 401, a key without the scope 403):

====================================  =======  ==================================================
route                                 scope    what
====================================  =======  ==================================================
``POST /v1/events``                   ingest   one event or ``{"events": [...]}``; validated like
                                               batch ingest, stored before the reply
``GET /v1/users/{id}/profile``        read     the JSON of ``journeymap profile --json``
``GET /v1/users/{id}/predictions``    read     next items (actions, propensities) by the live model
``GET /v1/journeys/{analysis}``       read     graph, funnel, attribution, retention, paths: the
                                               JSON of the CLI's ``--json``
``GET /metrics``                      read     Prometheus text
``POST /v1/decisions``, ``/rewards``  decide   the next-best-action policy (where installed)
``GET /v1/admin/status``              admin    writer, profile updater, model, bus
``GET /healthz``, ``/docs``           none     liveness; the OpenAPI docs
====================================  =======  ==================================================

Needs the ``serve`` extra: ``pip install 'journeymap[serve]'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_KEYS_ENV", "SCOPES", "create_app", "parse_api_keys"]

_LAZY = {
    "create_app": ("journeymap.serve._app", "create_app"),
    "API_KEYS_ENV": ("journeymap.serve._auth", "API_KEYS_ENV"),
    "SCOPES": ("journeymap.serve._auth", "SCOPES"),
    "parse_api_keys": ("journeymap.serve._auth", "parse_api_keys"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            import fastapi  # noqa: F401
        except ImportError:
            from journeymap.exceptions import MissingDependencyError

            raise MissingDependencyError("The service needs FastAPI and uvicorn: pip install 'journeymap[serve]'.") from None
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'journeymap.serve' has no attribute {name!r}")
