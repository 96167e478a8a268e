"""API keys with scopes, sent as ``Authorization: Bearer KEY``.

Keys come from ``create_app(api_keys=...)``, else the ``JOURNEYMAP_API_KEYS`` environment variable
(``key1:ingest+read,key2:admin``), else the settings' ``api_keys`` (where the config has them).
``admin`` implies every scope. No key or an unknown one gets
401; a known key without the route's scope gets 403.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from journeymap.exceptions import ConfigError

API_KEYS_ENV = "JOURNEYMAP_API_KEYS"
SCOPES = ("ingest", "read", "decide", "admin")
MIN_KEY_CHARS = 16  # a key is a bearer secret: short ones are guessable

_EXAMPLE = f"{API_KEYS_ENV}=$(python -c 'import secrets; print(secrets.token_hex(16))'):admin"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name (its first 4 characters) and its scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def parse_api_keys(text: str) -> dict[str, frozenset[str]]:
    """``key1:ingest+read,key2:admin`` -> {key: scopes}, with errors that show the expected form."""
    keys: dict[str, frozenset[str]] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, scopes_text = part.rpartition(":")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"An API key entry takes KEY:SCOPE[+SCOPE...], like abc...:ingest+read. Got "
                              f"'{_masked(part)}'.")
        scopes = frozenset(s.strip() for s in scopes_text.split("+") if s.strip())
        unknown = sorted(scopes - set(SCOPES))
        if unknown or not scopes:
            raise ConfigError(f"The API key {_masked(key)} has unknown scope(s) {', '.join(unknown) or '(none)'}; "
                              f"scopes are {', '.join(SCOPES)} (admin implies all).")
        keys[key] = scopes
    return check_api_keys(keys)


def check_api_keys(keys: Mapping[str, frozenset[str] | set[str] | list[str] | tuple[str, ...] | str]
                   ) -> dict[str, frozenset[str]]:
    """Validate keys given in code: {key: scopes}, scopes as a collection or 'ingest+read' text."""
    out: dict[str, frozenset[str]] = {}
    for key, scopes in keys.items():
        if isinstance(scopes, str):
            scopes = scopes.split("+")
        scopes = frozenset(s.strip() for s in scopes if s.strip())
        unknown = sorted(scopes - set(SCOPES))
        if unknown or not scopes:
            raise ConfigError(f"The API key {_masked(key)} has unknown scope(s) {', '.join(unknown) or '(none)'}; "
                              f"scopes are {', '.join(SCOPES)} (admin implies all).")
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"The API key {_masked(key)} is {len(key)} characters; use at least {MIN_KEY_CHARS}, "
                              f"e.g. {_EXAMPLE}")
        out[key] = scopes
    return out


def load_api_keys(given: Mapping | str | None = None, configured: Mapping | str | None = None) -> dict[str, frozenset[str]]:
    """The keys given in code, else $JOURNEYMAP_API_KEYS, else the config's; an API without keys is refused."""
    if given is None:
        given = os.environ.get(API_KEYS_ENV) or configured or ""
    keys = parse_api_keys(given) if isinstance(given, str) else check_api_keys(given)
    if not keys:
        raise ConfigError(f"No API keys are set, and the service does not run open. Set some with {_EXAMPLE} "
                          "(scopes: ingest, read, decide, admin; join several with '+').")
    return keys


class KeyRing:
    """The configured keys; looks a bearer token up in constant time per key."""

    def __init__(self, keys: Mapping[str, frozenset[str]]) -> None:
        self._keys = [(k.encode("utf-8"), Principal(k[:4] + "…", frozenset(s))) for k, s in keys.items()]

    def find(self, token: str) -> Principal | None:
        given = token.encode("utf-8")
        found = None
        for key, principal in self._keys:  # every key compared: timing says nothing about which matched
            if hmac.compare_digest(key, given):
                found = principal
        return found


def _masked(key: str) -> str:
    return f"'{key[:4]}…'" if len(key) > 4 else "'…'"


def require(scope: str):
    """A dependency that admits requests whose key has ``scope`` (or admin)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "Send an API key as 'Authorization: Bearer KEY'.",
                                headers={"WWW-Authenticate": "Bearer"})
        principal = request.app.state.keys.find(token.strip())
        if principal is None:
            raise HTTPException(401, "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"})
        if not principal.allows(scope):
            raise HTTPException(403, f"This API key lacks the '{scope}' scope this route needs "
                                     f"(it has {', '.join(sorted(principal.scopes))}).")
        request.state.principal = principal
        return principal

    check.__name__ = f"require_{scope}"
    return check


Ingest = Annotated[Principal, Depends(require("ingest"))]
Read = Annotated[Principal, Depends(require("read"))]
Decide = Annotated[Principal, Depends(require("decide"))]
Admin = Annotated[Principal, Depends(require("admin"))]
