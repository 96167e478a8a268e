"""Next-best-action routes: ``POST /v1/decisions`` chooses an action by the contextual bandit and
logs it; ``POST /v1/rewards`` joins a reward explicitly; ``on_events`` joins rewards from newly
stored events (``startup`` and ``shutdown`` resume and checkpoint). All need the ``decide`` scope.

Shared objects on ``app.state``: ``policy`` (an ``OnlinePolicy``, made on first use by
``ensure_policy``), ``store_path`` (its files go beside the store unless ``[policy] log`` says
where), ``settings`` (the secret and the ``[policy]`` table of ``journeymap.toml``: exploration,
reward, log), optionally ``policy_config`` (a library caller's own settings, a ``PolicyConfig`` or a
mapping whose keys override the file's) and, when the app has profiles,
``profile_of(raw_user_id) -> dict | None``.
"""

from __future__ import annotations

import inspect
import json
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from journeymap.exceptions import ConfigError, JourneymapError
from journeymap.policy._rewards import (
    OnlinePolicy,
    PolicyConfig,
    RewardConflictError,
    Settled,
    UnknownDecisionError,
)

try:  # the service's API keys; without that module the routes are open (library use, tests)
    from journeymap.serve import _auth
except ImportError:  # pragma: no cover - the service ships _auth
    _auth = None

_require = getattr(_auth, "require_scope", None) or getattr(_auth, "require", None)
AUTH = _require("decide") if _require is not None else None  # the dependency; tests may override it
_DEPENDENCIES = [Depends(AUTH)] if AUTH is not None else []
_INIT_LOCK = threading.Lock()

Scalar = str | int | float | bool | None
router = APIRouter(tags=["decisions"])


class ActionIn(BaseModel):
    id: str | int
    features: dict[str, Scalar] = Field(default_factory=dict)


class DecisionCreate(BaseModel):
    user_id: str | int | None = Field(None, description="The shop's own user id (pseudonymized inside); null: anonymous.")
    actions: list[ActionIn | str | int] = Field(description='Candidate actions: ids, or {"id": ..., "features": {...}}.')
    context: dict[str, Scalar] | None = Field(None, description="Session features (device, page, ...).")
    ts: str | None = Field(None, description="The decision's time (ISO 8601); default now. Rewards count from it.")


class DecisionPublic(BaseModel):
    decision_id: str
    action: str
    probability: float
    pmf: dict[str, float]


class RewardCreate(BaseModel):
    decision_id: str
    reward: float


class RewardPublic(BaseModel):
    decision_id: str
    reward: float
    joined: bool = Field(description="False when the decision already had this reward (nothing learned again).")
    source: str


def _settings(app_state: Any, settings: Any = None) -> Any:
    settings = settings if settings is not None else getattr(app_state, "settings", None)
    if settings is None:
        from journeymap.config import Settings

        settings = Settings.load()
    return settings


def policy_config(app_state: Any, settings: Any = None) -> PolicyConfig:
    """The decisions' settings: ``settings.policy`` (``[policy]`` in journeymap.toml) under
    ``app_state.policy_config`` (a library caller's: a ``PolicyConfig`` replaces the file's, a
    mapping overrides it key by key)."""
    from_file = getattr(_settings(app_state, settings), "policy", None)
    base = PolicyConfig.from_mapping(from_file)
    return PolicyConfig.from_mapping(getattr(app_state, "policy_config", None), defaults=base)


def _log_path(app_state: Any, config: PolicyConfig) -> Path | None:
    """Where the decision log goes: ``config.log``, else beside the store (``shop.decisions.jsonl``)."""
    if config.log is not None:
        return Path(config.log)
    store_path = getattr(app_state, "store_path", None)
    return None if store_path is None else Path(store_path).with_suffix(".decisions.jsonl")


def ensure_policy(app_state: Any, settings: Any = None) -> OnlinePolicy:
    """``app_state.policy``, made on first use: the bandit and decision log where ``policy_config``
    says (by default beside ``app_state.store_path``)."""
    policy = getattr(app_state, "policy", None)
    if policy is not None:
        return policy
    with _INIT_LOCK:
        policy = getattr(app_state, "policy", None)
        if policy is not None:
            return policy
        settings = _settings(app_state, settings)
        config = policy_config(app_state, settings)
        log_path = _log_path(app_state, config)
        if log_path is None:
            raise ConfigError("Decisions need the service's store path (app.state.store_path): the decision log "
                              "is written beside the store unless [policy] log in journeymap.toml says where.")
        policy = OnlinePolicy(log_path, secret=settings.require_secret(), config=config)
        app_state.policy = policy
    return policy


def _has_files(state: Any) -> bool:
    """Whether a previous run left decisions waiting for their reward (without making the policy;
    the pending journal's path is worked out once, as this runs on every stored batch)."""
    pending = getattr(state, "decisions_pending_path", None)
    if pending is None:
        try:
            log_path = _log_path(state, policy_config(state))
        except ConfigError:
            return False
        if log_path is None:
            return False
        stem = log_path.with_suffix("")
        pending = state.decisions_pending_path = stem.with_name(stem.name + ".pending.jsonl")
    return pending.exists()


def startup(app_state: Any) -> None:
    """At the service's start: resume the decisions a previous run left waiting for their reward."""
    if getattr(app_state, "policy", None) is None and _has_files(app_state):
        ensure_policy(app_state)


def shutdown(app_state: Any) -> None:
    """At the service's stop: checkpoint the bandit and close the decision log."""
    policy = getattr(app_state, "policy", None)
    if policy is not None:
        policy.close()


def on_events(state: Any, events: Any) -> list[Settled]:
    """Join rewards from events just stored (call after each stored batch). Makes the policy only
    when decisions are waiting on disk (after a restart); otherwise costs nothing."""
    state = getattr(state, "state", state)  # an app or its state
    policy = getattr(state, "policy", None)
    if policy is None:
        if not _has_files(state):
            return []
        policy = ensure_policy(state)
    return policy.observe(events)


async def _profile(state: Any, user_id: Any) -> dict | None:
    profile_of = getattr(state, "profile_of", None)
    if profile_of is None or user_id is None:
        return None
    try:
        if inspect.iscoroutinefunction(profile_of):
            profile = await profile_of(str(user_id))
        else:  # it may read the store: off the event loop
            profile = await run_in_threadpool(profile_of, str(user_id))
    except JourneymapError:
        return None  # an unknown user decides on the session's context alone
    return profile if isinstance(profile, dict) else None


def _policy(request: Request) -> OnlinePolicy:
    return _policy_of(request.app.state)


def _policy_of(state: Any) -> OnlinePolicy:
    try:
        return ensure_policy(state)
    except ConfigError as exc:
        raise HTTPException(503, f"Decisions are not available: {exc}") from None


@router.post("/v1/decisions", response_model=DecisionPublic, dependencies=_DEPENDENCIES)
async def create_decision(body: DecisionCreate, request: Request) -> dict[str, Any]:
    """Choose the next-best action for a user and log the decision."""
    return await decide(request.app.state, body)


async def decide(state: Any, body: DecisionCreate) -> dict[str, Any]:
    """The decision for a request: chosen, logged, and returned as its public fields."""
    policy = _policy_of(state)
    profile = await _profile(state, body.user_id)
    actions = [a.model_dump() if isinstance(a, ActionIn) else a for a in body.actions]
    try:
        decision = policy.decide(body.user_id, actions, context=body.context, profile=profile, ts=body.ts)
    except JourneymapError as exc:
        raise HTTPException(422, str(exc)) from None
    return decision.to_public()


async def lane(state: Any, raw: bytes) -> tuple[int, dict[str, Any]] | None:
    """``POST /v1/decisions`` for ``_fastlane.FastLane``: a body the request model refuses goes to
    FastAPI (None), which answers with its own 422; the reply is validated like the response model."""
    try:
        body = DecisionCreate.model_validate(json.loads(raw))
    except (ValueError, ValidationError):  # JSON errors are ValueErrors
        return None
    return 200, DecisionPublic.model_validate(await decide(state, body)).model_dump(mode="json")


# A plain def: it may read the log file, so FastAPI runs it in its thread pool, off the event loop.
@router.get("/v1/decisions/{decision_id}", dependencies=_DEPENDENCIES)
def read_decision(decision_id: str, request: Request) -> dict[str, Any]:
    """One logged decision, with its reward once joined (null while pending)."""
    record = _policy(request).decision(decision_id)
    if record is None:
        raise HTTPException(404, f"No decision '{decision_id}' here.")
    return record


@router.post("/v1/rewards", response_model=RewardPublic, dependencies=_DEPENDENCIES)
async def create_reward(body: RewardCreate, request: Request) -> dict[str, Any]:
    """Join a decision's reward explicitly; the bandit learns it once."""
    try:
        settled = _policy(request).reward(body.decision_id, body.reward)
    except UnknownDecisionError as exc:
        raise HTTPException(404, str(exc)) from None
    except RewardConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except JourneymapError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"decision_id": settled.decision_id, "reward": settled.reward, "joined": settled.joined,
            "source": settled.source}
