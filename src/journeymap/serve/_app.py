"""``create_app``: the FastAPI application of ``journeymap serve``.

The app is a thin shell: each router calls the library, and the running parts (store writer,
profile updater, bus, live model) live in ``Service``, started and stopped with the app.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from journeymap.config import DEMO_SECRET, Settings
from journeymap.exceptions import JourneymapError, StoreError
from journeymap.serve._auth import Admin, KeyRing, Read, load_api_keys, require
from journeymap.serve._bus import Bus, make_bus
from journeymap.serve._fastlane import FastLane
from journeymap.serve._metrics import Metrics
from journeymap.serve._service import Service, ServiceDep

log = logging.getLogger("journeymap.serve")

DECISIONS_MODULE = "journeymap.serve._decisions"

DESCRIPTION = """
The live side of journeymap: ingest events as they happen, read profiles and predictions that
include them, run the journey analytics over the live store, and decide next-best actions.

Send an API key as `Authorization: Bearer KEY`. Scopes: **ingest** (`POST /v1/events`),
**read** (`/v1/users/...`, `/v1/journeys/...`, `/metrics`), **decide** (`/v1/decisions`,
`/v1/rewards`), **admin** (`/v1/admin/...`, and every other scope). `/healthz` and these docs
need no key.
"""


def create_app(
    store_path: str | Path,
    settings: Settings | None = None,
    model_path: str | Path | None = None,
    bus: str | Bus = "memory",
    api_keys: Mapping[str, Any] | str | None = None,
    *,
    demo: bool = False,
    model_poll_seconds: float = 1.0,
    profile_wait_seconds: float = 10.0,
    update_profiles: bool = True,
    profile_refresh_seconds: float = 30.0,
    fast_lane: bool = True,
    db_threads: int | None = None,
) -> FastAPI:
    """The service over the store at ``store_path`` (created if missing).

    ``settings``: default ``Settings.load()`` (the secret pseudonymizes user ids; ``demo`` uses the
    demo secret, for simulated stores). ``model_path``: a model checkpoint, reloaded when a newer
    file replaces it (checked every ``model_poll_seconds``). ``bus``: ``memory`` or
    ``redis://HOST:PORT``. ``api_keys``: {key: scopes} or ``key:ingest+read,...`` text, default
    $JOURNEYMAP_API_KEYS, else ``settings.api_keys``; the app refuses to run without keys. A
    profile read waits up to ``profile_wait_seconds`` for the profile update the service runs at
    start (it may be the first build); ``update_profiles=False`` leaves the profiles to ``journeymap profiles``. The stored
    profiles are brought up to date at most every ``profile_refresh_seconds``; in between, a user
    with newer events gets a live profile (``profiles._live``). ``fast_lane``: serve ordinary event and
    decision requests without FastAPI's per-request machinery (``_fastlane``; the replies are the same).
    ``db_threads``: DuckDB's threads for the store (default: every core but one, left to the
    requests; the background profile updates and journey analyses run on the rest).
    """
    settings = settings or Settings.load()
    if demo:  # the decisions' rewards pseudonymize with the settings' secret too
        settings = replace(settings, secret=DEMO_SECRET)
    secret = settings.require_secret()
    keys = load_api_keys(api_keys, getattr(settings, "api_keys", None))
    metrics = Metrics()
    service = Service(store_path, settings, secret, make_bus(bus), metrics, model_path=model_path,
                      model_poll_seconds=model_poll_seconds, profile_wait=profile_wait_seconds,
                      update_profiles=update_profiles, profile_refresh_seconds=profile_refresh_seconds,
                      db_threads=db_threads)
    decisions = _decisions_module()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            if decisions is not None and hasattr(decisions, "startup"):
                decisions.startup(app.state)
            yield
        finally:
            try:
                if decisions is not None and hasattr(decisions, "shutdown"):
                    decisions.shutdown(app.state)
            finally:
                service.stop()

    from journeymap import __version__
    from journeymap.serve import _events, _journeys, _users

    app = FastAPI(title="journeymap", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keys = KeyRing(keys)
    app.state.store_path = service.store_path
    app.state.pseudonymize = service.pseudonymize
    app.state.profile_of = service.profile_of_async
    if fast_lane:
        lanes = {("POST", "/v1/events"): ("ingest", _events.lane)}
        if decisions is not None and hasattr(decisions, "lane"):
            lanes[("POST", "/v1/decisions")] = ("decide", decisions.lane)
        app.add_middleware(FastLane, fastapi=app, lanes=lanes, metrics=metrics)
    app.add_middleware(_Timing, metrics=metrics)  # outside the lane: every request is counted
    app.add_exception_handler(JourneymapError, _journeymap_error)
    app.include_router(ops)
    app.include_router(_events.router)
    app.include_router(_users.router)
    app.include_router(_journeys.router)
    if decisions is not None:
        # Its routes take the decide scope themselves (its AUTH, which tests may override); else here.
        guarded = getattr(decisions, "AUTH", None) is not None
        app.include_router(decisions.router, dependencies=[] if guarded else [Depends(require("decide"))])
        if hasattr(decisions, "on_events"):
            service.hooks.append(lambda events: decisions.on_events(app.state, events))
    return app


def _decisions_module() -> Any:
    """The decisions router and reward hook, where that module is installed (errors inside it are raised)."""
    if importlib.util.find_spec(DECISIONS_MODULE) is None:
        return None
    return importlib.import_module(DECISIONS_MODULE)


async def _journeymap_error(request: Request, exc: Exception) -> JSONResponse:
    # A user mistake (a bad option, an unknown segment, an empty store) is a 400 with the library's sentence.
    return JSONResponse({"detail": str(exc)}, status_code=404 if isinstance(exc, StoreError) else 400)


class _Timing:
    """Counts and times every request by route template (pure ASGI: no extra task per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"  # unknown paths share one label
            method = scope.get("method", "")
            metrics = self.metrics
            metrics.inc("journeymap_http_requests_total", route=path, method=method, status=str(status))
            metrics.observe("journeymap_http_request_duration_seconds", seconds, route=path, method=method)
            if status >= 500:
                metrics.inc("journeymap_http_errors_total", route=path)
            if path == "/v1/decisions":
                metrics.observe("journeymap_decision_duration_seconds", seconds)


ops = APIRouter(tags=["operations"])


@ops.get("/healthz")
def healthz(service: ServiceDep) -> JSONResponse:
    """Liveness and readiness: the store answers and the writer runs (no key needed)."""
    problems = []
    try:
        with service.reader() as con:
            con.execute("SELECT 1").fetchall()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        problems.append(f"store: {exc}")
    if service.writer is None or not service.writer.alive():
        problems.append("writer: not running")
    body = {"status": "ok" if not problems else "unavailable", "problems": problems,
            "model_version": service.model.version if service.model else None, "bus": service.bus.name}
    return JSONResponse(body, status_code=200 if not problems else 503)


@ops.get("/metrics", response_class=PlainTextResponse)
def metrics(_: Read, request: Request) -> PlainTextResponse:
    """Prometheus metrics: events accepted and rejected, events per second, latencies, errors."""
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


@ops.get("/v1/admin/status")
def admin_status(_: Admin, service: ServiceDep) -> dict[str, Any]:
    """The running parts: writer, profile updater, model and bus."""
    return service.status()
