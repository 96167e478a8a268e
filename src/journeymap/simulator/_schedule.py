"""Users and their sessions, drawn all at once with numpy: who visits when, and how each visit ends.

Everything that can be decided per session before its events are laid out (device, channel,
coupon, depth, how far down the funnel it goes) is decided here, vectorised; the journey loop in
_engine.py only turns these decisions into events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._catalog import Catalog, TOP_NAMES
from ._personas import (
    CHANNELS, COUPON_RATE, DEVICES, HOURLY_PROFILE, P_COMPLETE, PERSONAS, WEEKLY_SEASONALITY, stage_probabilities,
)

# Most sessions stay in the user's favourite leaf category; the rest follow the shop's traffic.
P_FAVOURITE_LEAF = 0.6
# Share of cart sessions with 2 and 3 distinct items.
P_SECOND_ITEM, P_THIRD_ITEM = 0.25, 0.07


@dataclass
class Schedule:
    """Per user: the persona. Per session, in start-time order: the rest."""

    user_persona: np.ndarray  # int8
    user: np.ndarray  # int32, user number of each session
    last_visit: np.ndarray  # bool, the user has no later session
    start: np.ndarray  # int64, unix seconds
    device: np.ndarray  # int8, index into DEVICES
    channel: np.ndarray  # int8, index into CHANNELS
    coupon: np.ndarray  # bool, shown the coupon banner
    land_home: np.ndarray  # bool, lands on the home page (else a category page)
    leaf: np.ndarray  # int32, the category the session is about
    n_views: np.ndarray  # int32, product views
    n_search: np.ndarray  # int32, searches
    stage: np.ndarray  # int8: 0 browse only, 1 carts without checkout, 2 reaches checkout
    complete: np.ndarray  # bool, a checkout ends in a purchase
    n_items: np.ndarray  # int32, distinct products carted
    uuid: np.ndarray  # S36, user_session strings


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    return np.minimum((rng.random(len(probs))[:, None] > cum).sum(axis=1), probs.shape[1] - 1)


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random hex strings in the 8-4-4-4-12 layout of a UUID, as fixed-width bytes."""
    digits = np.frombuffer(rng.bytes(16 * n).hex().encode(), dtype=np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for src, dst, width in ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)):
        out[:, dst:dst + width] = digits[:, src:src + width]
    return out.view("S36").ravel()


def build_schedule(
    rng: np.random.Generator, users: int, days: int, start_weekday: int, epoch: int, catalog: Catalog
) -> Schedule:
    n_p = len(PERSONAS)
    persona = rng.choice(n_p, users, p=[p.share for p in PERSONAS]).astype(np.int8)

    top_of_leaf = catalog.leaf_top
    user_leaf = np.empty(users, dtype=np.int32)
    for k, p in enumerate(PERSONAS):
        rows = np.flatnonzero(persona == k)
        w = np.array([p.affinity.get(TOP_NAMES[t], 1.0) for t in top_of_leaf]) * catalog.leaf_weight
        user_leaf[rows] = rng.choice(len(w), len(rows), p=w / w.sum())

    # Visits: everyone comes once within the period; returners add a geometric number more.
    weekly = np.array(list(WEEKLY_SEASONALITY.values()))
    day_w = weekly[(start_weekday + np.arange(days)) % 7]
    first_day = rng.choice(days, users, p=day_w / day_w.sum())
    p_return = np.array([p.p_return for p in PERSONAS])[persona]
    extra = rng.geometric(1.0 / np.array([p.extra_visits_mean for p in PERSONAS])[persona])
    n_visits = 1 + np.where(rng.random(users) < p_return, extra, 0)

    user = np.repeat(np.arange(users, dtype=np.int32), n_visits)
    first = np.concatenate([[0], np.cumsum(n_visits)[:-1]])
    visit = (np.arange(len(user)) - np.repeat(first, n_visits) + 1).astype(np.int32)
    day = np.repeat(first_day, n_visits).astype(np.int64)
    gap_mean = np.array([p.return_gap_days for p in PERSONAS])[persona]
    for k in range(2, int(n_visits.max()) + 1):
        rows = np.flatnonzero(visit == k)  # row - 1 is the same user's previous visit
        prev = day[rows - 1]
        base = prev + rng.geometric(1.0 / gap_mean[user[rows]])
        # Move to the nearest day (within +-3) of a weekday drawn by the weekly profile: weekdays
        # then follow the profile exactly, whatever the gaps.
        target = rng.choice(7, len(rows), p=weekly / weekly.sum())
        d = base + (target - (start_weekday + base) + 3) % 7 - 3
        day[rows] = np.where(d <= prev, d + 7, d)
    keep = day < days
    user, visit, day = user[keep], visit[keep], day[keep]
    last_visit = np.append(user[1:] != user[:-1], True)

    hour = rng.choice(24, len(user), p=np.array(HOURLY_PROFILE) / sum(HOURLY_PROFILE))
    start = epoch + day * 86400 + hour * 3600 + rng.integers(0, 3600, len(user))
    order = np.argsort(start, kind="stable")
    user, visit, last_visit, start = user[order], visit[order], last_visit[order], start[order]
    n = len(user)

    sp = persona[user]
    device = _categorical(rng, np.array([p.device_mix for p in PERSONAS])[sp]).astype(np.int8)
    channel = _categorical(rng, np.array([p.channel_probs for p in PERSONAS])[sp]).astype(np.int8)
    coupon = rng.random(n) < COUPON_RATE
    p_checkout, p_cart = stage_probabilities(sp, visit, device, channel, coupon)
    u = rng.random(n)
    stage = np.where(u < p_checkout, 2, np.where(u < p_checkout + p_cart, 1, 0)).astype(np.int8)
    complete = rng.random(n) < np.array([P_COMPLETE[d] for d in DEVICES])[device]
    n_items = (1 + (rng.random(n) < P_SECOND_ITEM) + (rng.random(n) < P_THIRD_ITEM)).astype(np.int32)

    bounce = (rng.random(n) < np.array([p.p_bounce for p in PERSONAS])[sp]) & (stage == 0)
    views = rng.geometric(1.0 / np.array([p.views_mean for p in PERSONAS])[sp])
    n_views = np.where(bounce, 0, np.where(stage > 0, np.maximum(views, n_items), views)).astype(np.int32)
    searches = rng.random(n) < np.array([p.p_search for p in PERSONAS])[sp]
    n_search = np.where(searches, rng.geometric(0.8, n), 0).astype(np.int32)
    # Direct and email visitors mostly land on the home page, the others on a category page.
    to_home = np.isin(channel, (CHANNELS.index("direct"), CHANNELS.index("email")))
    land_home = rng.random(n) < np.where(to_home, 0.7, 0.3)
    any_leaf = rng.choice(len(catalog.leaves), n, p=catalog.leaf_weight)
    leaf = np.where(rng.random(n) < P_FAVOURITE_LEAF, user_leaf[user], any_leaf).astype(np.int32)

    return Schedule(
        user_persona=persona, user=user, last_visit=last_visit,
        start=start, device=device, channel=channel, coupon=coupon, land_home=land_home, leaf=leaf,
        n_views=n_views, n_search=n_search, stage=stage, complete=complete, n_items=n_items,
        uuid=_uuids(rng, n),
    )
