"""The hot routes without FastAPI's per-request machinery.

``POST /v1/events`` and ``POST /v1/decisions`` carry the live traffic. Through FastAPI each request
walks the route table, solves its dependencies, validates its response against the response model
and passes five middlewares: about a millisecond of CPU, as much as the work itself, which on a
busy two-core machine is the difference between a short tail and a long one.

``FastLane`` is a pure ASGI middleware in front of the router. For those two routes it checks the
key, reads the body and calls the same functions the routes call (``_events.store_events``,
``_decisions.decide``), and writes their JSON as FastAPI would. Anything out of the ordinary goes
to FastAPI untouched, before any side effect: a missing or insufficient key, a body that fails the
request model, a replaced dependency (tests), so every error reply is FastAPI's own. An exception
raised by the shared functions (``HTTPException``, the library's errors) goes to the app's own
handler for it, as it would through FastAPI.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request

from journeymap.serve._metrics import Metrics

Handler = Callable[[Any, bytes], Awaitable[tuple[int, Any] | None]]


class FastLane:
    """Serves ``lanes`` ({(method, path): (scope, handler)}) directly; see the module docstring.

    A handler gets the app state and the body and returns (status, JSON-able body), or None to send
    the request to FastAPI (only before it has done anything)."""

    def __init__(self, app: Any, fastapi: FastAPI, lanes: dict[tuple[str, str], tuple[str, Handler]],
                 metrics: Metrics | None = None) -> None:
        self.app = app
        self.fastapi = fastapi
        self.lanes = lanes
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (lane := self.lanes.get((scope["method"], scope["path"]))) is None:
            await self.app(scope, receive, send)
            return
        if self.fastapi.dependency_overrides or not self._takes(scope, lane[0]):
            self._count(scope, "fastapi")
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        scope["route"] = _Route(scope["path"])  # for the metrics' route label, as the router sets it
        try:
            reply = await lane[1](self.fastapi.state, body)
        except Exception as exc:  # answered by the app's own handler for it, as FastAPI would
            handler = self._handler(exc)
            if handler is None:
                raise
            self._count(scope, "lane")
            response = handler(Request(scope, _replay(body, receive)), exc)
            response = await response if inspect.isawaitable(response) else response
            await response(scope, _replay(body, receive), send)
            return
        if reply is None:
            self._count(scope, "fastapi")
            await self.app(scope, _replay(body, receive), send)
            return
        self._count(scope, "lane")
        status, content = reply
        # Starlette's JSONResponse rendering, byte for byte.
        payload = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                             separators=(",", ":")).encode("utf-8")
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-length", str(len(payload)).encode("latin-1")), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    def _handler(self, exc: Exception) -> Callable[..., Any] | None:
        """The app's exception handler for ``exc`` (by its class, nearest first), or None."""
        handlers = self.fastapi.exception_handlers
        return next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)

    def _count(self, scope: dict, by: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("journeymap_fast_lane_requests_total", route=scope["path"], answered_by=by)

    def _takes(self, scope: dict, needed: str) -> bool:
        """Whether the request is an ordinary one: a JSON body (or no content type, which FastAPI
        reads as JSON too) and a bearer key with ``needed``; else FastAPI answers it."""
        authorized = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                kind, _, token = value.decode("latin-1").partition(" ")
                principal = self.fastapi.state.keys.find(token.strip()) if kind.lower() == "bearer" else None
                authorized = principal is not None and principal.allows(needed)
            elif name == b"content-type":
                kind = value.decode("latin-1").split(";")[0].strip().lower()
                if kind != "application/json" and not kind.endswith("+json"):
                    return False
        return authorized


@dataclass(frozen=True)
class _Route:
    path: str


def _replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict]]:
    """``receive`` for the app after the lane has read the body: the body once, then the client's."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
