"""Storefront simulator: a synthetic shop log with personas, channels, devices and planted effects.

`simulate()` writes a REES46-style CSV (or Parquet) of events and, beside it, a ground-truth JSON
with the true sizes of the effects the analytics should find.
"""

from __future__ import annotations

import datetime as dt
import json
import numbers
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._catalog import build_catalog
from ._engine import EVENT_TYPES, EventChunk, Journeys
from ._personas import (
    CHANNELS, COUPON_CODE, COUPON_RATE, EMAIL_MULTIPLIER, HOURLY_PROFILE, P_COMPLETE, PERSONAS,
    WEEKLY_SEASONALITY, expected_purchase_rate,
)
from ._schedule import build_schedule
from ._writer import COLUMNS, FIRST_USER_ID, WRITERS

__all__ = ["COLUMNS", "FORMATS", "SimulationResult", "simulate", "users_for_events"]

FORMATS = tuple(WRITERS)
CHUNK_ROWS = 200_000
# Events per user by period length, measured (20,000 users, mean of seeds 1-4, spread under 1%).
# Longer periods hold more of each user's return visits; beyond a year it stays flat.
EVENTS_PER_USER = {1: 6.1, 3: 6.45, 7: 7.36, 14: 8.73, 30: 10.18, 60: 11.37, 90: 11.98, 180: 12.79, 365: 13.19}


@dataclass
class SimulationResult:
    """What simulate() wrote: the event file, the truth JSON beside it, and their headline counts."""

    path: Path
    truth_path: Path  # <path without suffix>.truth.json
    events: int
    users: int
    sessions: int
    event_counts: dict[str, int]  # event_type -> rows
    truth: dict  # the content of truth_path


def users_for_events(n_events: int, days: int = 30) -> int:
    """Roughly how many users a simulation over `days` days needs to produce `n_events` events.

    About 10 events per user at 30 days (6 at one day, 13 at a year); expect within 5%.
    """
    per_user = float(np.interp(days, list(EVENTS_PER_USER), list(EVENTS_PER_USER.values())))
    return max(1, round(n_events / per_user))


def simulate(
    users: int,
    days: int,
    seed: int,
    out: str | Path,
    format: str = "rees46",
    start: str = "2024-01-01",
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Simulate `users` shoppers over `days` days from `start` and write their events to `out`.

    The same arguments always give byte-identical files. `progress` is called with the number
    of events written since its last call, once per chunk.
    """
    if format not in WRITERS:
        allowed = ", ".join(map(repr, FORMATS))
        raise ValueError(f"The 'format' parameter of simulate() must be one of {allowed}. Got {format!r}.")
    for name, value, least in (("users", users, 1), ("days", days, 1), ("seed", seed, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
            kind = "a positive" if least else "a non-negative"
            raise ValueError(f"The '{name}' parameter of simulate() must be {kind} integer. Got {value!r}.")
    users, days, seed = int(users), int(days), int(seed)
    try:
        first_day = dt.date.fromisoformat(start)
    except (TypeError, ValueError):
        message = f"The 'start' parameter of simulate() must be a date like '2024-01-01'. Got {start!r}."
        raise ValueError(message) from None

    out = Path(out)
    truth_path = out.with_suffix(".truth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    epoch = int(dt.datetime.combine(first_day, dt.time(), dt.timezone.utc).timestamp())

    rng = np.random.default_rng(seed)
    catalog = build_catalog(rng, min(50_000, max(500, users // 20)))
    schedule = build_schedule(rng, users, days, first_day.weekday(), epoch, catalog)

    # Written under a temporary name and renamed at the end, so a failed run leaves no half file.
    partial = out.with_name(out.name + ".partial")
    writer = WRITERS[format](partial, catalog, schedule)

    def sink(chunk: EventChunk) -> None:
        writer.write(chunk)
        if progress is not None:
            progress(len(chunk.time))

    journeys = Journeys(schedule, catalog, random.Random(int(rng.integers(2**63))), sink, CHUNK_ROWS)
    try:
        try:
            journeys.run()
        finally:
            writer.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)

    counts: dict[str, int] = {}
    for name, n in zip(EVENT_TYPES, journeys.counts.tolist()):
        counts[name] = counts.get(name, 0) + n
    events = sum(counts.values())
    truth = _truth(seed, users, days, start, format, events, len(schedule.user), counts, schedule.user_persona)
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    return SimulationResult(
        path=out, truth_path=truth_path, events=events, users=users, sessions=len(schedule.user),
        event_counts=counts, truth=truth,
    )


def _truth(
    seed: int, users: int, days: int, start: str, format: str, events: int, sessions: int,
    counts: dict[str, int], user_persona: np.ndarray,
) -> dict:
    uplift = {p.name: p.coupon_uplift for p in PERSONAS}
    names = [p.name for p in PERSONAS]
    return {
        "seed": seed,
        "users": users,
        "days": days,
        "start": start,
        "format": format,
        "events": events,
        "sessions": sessions,
        "event_counts": counts,
        "personas": {p.name: {"share": p.share, "description": p.description} for p in PERSONAS},
        "weekly_seasonality": WEEKLY_SEASONALITY,
        "hourly_profile": list(HOURLY_PROFILE),
        "effects": ["mobile_checkout_loss", "converting_channel", "second_visit_buyer", "coupon_uplift"],
        "mobile_checkout_loss": {
            "step": "begin_checkout->purchase",
            "device": "mobile",
            "p_complete_mobile": P_COMPLETE["mobile"],
            "p_complete_other": P_COMPLETE["desktop"],
        },
        "converting_channel": {
            "channel": "email",
            "conversion_multiplier": EMAIL_MULTIPLIER,
            "note": "multiplies each session's cart and checkout propensity; every persona has the "
            "same email share, so the effect is not a persona-mix artefact",
        },
        "second_visit_buyer": {
            "persona": "bargain_hunter",
            "p_purchase_visit1": 0.0,
            "p_purchase_visit2": round(expected_purchase_rate("bargain_hunter", 2), 4),
            "note": "p_purchase_visitN: share of the persona's N-th sessions that contain a purchase, averaged over "
            "its device and channel mix and the coupon",
        },
        "coupon_uplift": {
            "promotion": COUPON_CODE,
            "assignment_rate": COUPON_RATE,
            "uplift_by_persona": uplift,
            "note": "absolute rise of a session's purchase probability when the coupon is shown; "
            "bargain_hunter can only buy from its second visit on, so its uplift applies there",
        },
        "channels": list(CHANNELS),
        "user_personas": {str(FIRST_USER_ID + u): names[k] for u, k in enumerate(user_persona.tolist())},
    }
