"""Live traffic: simulated shoppers sent to the service as they shop, asking it for the next-best
action at each session's first product view and responding to the chosen intervention with a
planted, persona-specific effect on whether the session ends in a purchase.

The same loop drives the service over HTTP (``HttpTarget``: ``journeymap simulate --live``) or an
``OnlinePolicy`` in process (``InProcessTarget``, for tests and benchmarks). Every decision's
true expected reward under each action is recorded, so regret is measured exactly.

Time is simulated: sessions start a Poisson ``session_gap`` apart whatever the wall-clock pace,
and a returning shopper's "day" between visits lasts ``DAY_SECONDS``, so a short run holds second
visits, where the bargain hunter buys. A return comes at least ``MIN_RETURN_GAP`` later, beyond
the default 30-minute reward horizon, and a session ends at most ``MAX_AFTER_DECISION`` after its
decision, within it, so each decision's reward is exactly whether its own session ends in a purchase.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import time
from bisect import bisect
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from journeymap.exceptions import JourneymapError

from ._catalog import TOP_NAMES, build_catalog
from ._engine import P_IN_LEAF
from ._personas import (
    CHANNELS,
    DEVICES,
    EMAIL_MULTIPLIER,
    P_COMPLETE,
    PERSONA_INDEX,
    PERSONAS,
    stage_probabilities,
)
from ._schedule import P_FAVOURITE_LEAF, P_SECOND_ITEM, P_THIRD_ITEM

ACTIONS = ("nothing", "coupon", "free_shipping", "carousel")
ACTION_FEATURES: dict[str, dict[str, Any]] = {
    "nothing": {"kind": "none", "discount": 0.0},
    "coupon": {"kind": "price", "discount": 0.10},
    "free_shipping": {"kind": "price", "discount": 0.05},
    "carousel": {"kind": "content", "discount": 0.0},
}
# Planted effect: the absolute rise of a session's purchase probability when the intervention is
# shown at its first product view. The coupon's is the batch simulator's coupon_uplift; each
# persona's best action leads the next by at least 6 points, a gap worth finding.
UPLIFT: dict[str, dict[str, float]] = {
    "window_shopper": {"nothing": 0.0, "coupon": 0.02, "free_shipping": 0.02, "carousel": 0.08},
    "mission_buyer": {"nothing": 0.0, "coupon": 0.0, "free_shipping": 0.10, "carousel": -0.03},
    "mobile_impulse_buyer": {"nothing": 0.0, "coupon": 0.08, "free_shipping": 0.02, "carousel": 0.02},
    "bargain_hunter": {"nothing": 0.0, "coupon": 0.15, "free_shipping": 0.05, "carousel": 0.0},
    "loyal_repeat_buyer": {"nothing": 0.0, "coupon": 0.01, "free_shipping": 0.02, "carousel": 0.08},
}
BEST_ACTION = {name: max(ACTIONS, key=effects.__getitem__) for name, effects in UPLIFT.items()}
ACTION_REQUEST = [{"id": a, "features": ACTION_FEATURES[a]} for a in ACTIONS]

DAY_SECONDS = 3600.0  # a simulated day between visits lasts an hour of simulated time
MIN_RETURN_GAP = 45 * 60.0  # seconds; beyond the default reward horizon
MAX_AFTER_DECISION = 25 * 60.0  # seconds a session may run after its decision; within the horizon
SESSION_GAP = 30.0  # mean simulated seconds between new shoppers' first sessions
FIRST_USER = 700_000_000
_EMAIL = CHANNELS.index("email")


# -- the planted effect, as tables over every session kind ---------------------------------------------
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(checkout, cart) probabilities indexed [persona, visit 1/2/3+, device, channel, action]."""
    shape = (len(PERSONAS), 3, len(DEVICES), len(CHANNELS))
    p, v, d, c = (a.ravel() for a in np.indices(shape))
    base_checkout, _ = stage_probabilities(p, v + 1, d, c, np.zeros(len(p), dtype=bool))
    multiplier = np.where(c == _EMAIL, EMAIL_MULTIPLIER, 1.0)
    raw_cart = np.array([q.p_cart_only for q in PERSONAS])[p, v] * multiplier
    complete = np.array([P_COMPLETE[x] for x in DEVICES])[d]
    checkout = np.empty((len(p), len(ACTIONS)))
    for k, action in enumerate(ACTIONS):
        uplift = np.array([UPLIFT[q.name][action] for q in PERSONAS])[p]
        # As in the batch simulator: a session where the persona cannot buy at all (the bargain
        # hunter's first visit) is not moved by any intervention.
        checkout[:, k] = np.clip(base_checkout + np.where(base_checkout > 0, uplift / complete, 0.0), 0.0, 1.0)
    cart = np.minimum(raw_cart[:, None], 1.0 - checkout)
    return checkout.reshape(*shape, len(ACTIONS)), cart.reshape(*shape, len(ACTIONS))


CHECKOUT, CART = _tables()
# P(the session ends in a purchase): reaching checkout, then completing it on that device.
PURCHASE = CHECKOUT * np.array([P_COMPLETE[x] for x in DEVICES])[None, None, :, None, None]


def expected_purchase_rate(persona: str, visit: int, action: str) -> float:
    """P(a session with a decision ends in a purchase) for a persona, visit number and action,
    averaged over the persona's device and channel mix."""
    q = PERSONAS[PERSONA_INDEX[persona]]
    table = PURCHASE[PERSONA_INDEX[persona], min(visit, 3) - 1, :, :, ACTIONS.index(action)]
    return float(np.asarray(q.device_mix) @ table @ np.asarray(q.channel_probs))


def live_truth() -> dict[str, Any]:
    """The planted intervention effects, as written beside a live run."""
    return {
        "mode": "live",
        "decision_point": "first product view of a session (bounced sessions get no decision)",
        "reward": "1 when the session ends in a purchase (within the default 30-minute horizon), else 0",
        "interventions": list(ACTIONS),
        "action_features": ACTION_FEATURES,
        "uplift_by_persona": UPLIFT,
        "best_action_by_persona": BEST_ACTION,
        "expected_purchase_rate": {
            q.name: {f"visit_{v}" if v < 3 else "visit_3+": {a: round(expected_purchase_rate(q.name, v, a), 6)
                                                           for a in ACTIONS} for v in (1, 2, 3)}
            for q in PERSONAS},
        "note": "uplift: absolute rise of the session's purchase probability under the intervention (capped "
                "at 1); it does not apply where the persona cannot buy (the bargain hunter's first visit). "
                "expected_purchase_rate averages over the persona's device and channel mix.",
        "personas": {q.name: {"share": q.share, "description": q.description} for q in PERSONAS},
    }


# -- sessions ---------------------------------------------------------------------------------------------
@dataclass
class _User:
    raw_id: str
    persona: int
    leaf: int
    visits_left: int
    visit: int = 0


@dataclass
class LiveSession:
    """One session: the events up to its decision point, the decision's context, and (after
    ``finish``) the rest. ``decides`` is False for a bounced session."""

    user: _User
    session_id: str
    start: float
    device: int
    channel: int
    opening: list[dict[str, Any]]
    context: dict[str, Any] | None
    decision_ts: float | None
    leaf: int
    product: int | None

    @property
    def decides(self) -> bool:
        return self.context is not None

    @property
    def persona(self) -> str:
        return PERSONAS[self.user.persona].name

    def expected(self) -> dict[str, float]:
        """The true P(purchase) under each action."""
        row = PURCHASE[self.user.persona, min(self.user.visit, 3) - 1, self.device, self.channel]
        return {a: float(row[k]) for k, a in enumerate(ACTIONS)}


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(round(epoch, 3), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exp(rand: Callable[[], float], mean: float) -> float:
    return -mean * math.log(1.0 - rand())


class LiveShop:
    """Simulated shoppers arriving one session at a time, in simulated time from ``start``.

    ``next_session()`` lays a session out up to its decision point; ``finish(session, action)``
    draws how it ends under the chosen intervention and returns the remaining events.
    """

    def __init__(self, seed: int = 0, start: datetime | None = None, session_gap: float = SESSION_GAP,
                 n_products: int = 2000, first_user: int = FIRST_USER) -> None:
        rng = np.random.default_rng(seed)
        self.catalog = build_catalog(rng, n_products)
        self.catalog.prepare({q.price_sensitivity for q in PERSONAS})
        self._codes = self.catalog.leaf_codes
        self._leaf_cum = np.cumsum(self.catalog.leaf_weight).tolist()
        self._favourite = []  # per persona: cumulative leaf weights tilted by its affinities
        for q in PERSONAS:
            w = np.array([q.affinity.get(TOP_NAMES[t], 1.0) for t in self.catalog.leaf_top]) * self.catalog.leaf_weight
            self._favourite.append(np.cumsum(w / w.sum()).tolist())
        prices = self.catalog.price_cents / 100.0
        self._leaf_median = np.array([np.median(prices[self.catalog.leaf == i]) for i in range(len(self.catalog.leaves))])
        self._persona_cum = np.cumsum([q.share for q in PERSONAS]).tolist()
        self._device_cum = [np.cumsum(q.device_mix).tolist() for q in PERSONAS]
        self._channel_cum = [np.cumsum(q.channel_probs).tolist() for q in PERSONAS]
        self.rand = random.Random(seed).random
        self.clock = (start or datetime(2024, 1, 1, tzinfo=UTC)).timestamp()
        self.session_gap = session_gap
        self._next_new = self.clock
        self._returns: list[tuple[float, int, _User]] = []
        self._users = 0
        self._sessions = 0
        self._orders = 0
        self.user_personas: dict[str, str] = {}

    @staticmethod
    def _draw(cum: list[float], u: float) -> int:
        return min(bisect(cum, u * cum[-1]), len(cum) - 1)

    def _new_user(self) -> _User:
        rand = self.rand
        persona = self._draw(self._persona_cum, rand())
        q = PERSONAS[persona]
        extra = 0
        if rand() < q.p_return:  # geometric number of further visits, mean extra_visits_mean
            extra = 1 + int(math.log(1.0 - rand()) / math.log(1.0 - 1.0 / q.extra_visits_mean)) \
                if q.extra_visits_mean > 1 else 1
        user = _User(str(FIRST_USER + self._users), persona, self._draw(self._favourite[persona], rand()), 1 + extra)
        self._users += 1
        self.user_personas[user.raw_id] = q.name
        return user

    def next_session(self) -> LiveSession:
        """The next session to start (a new shopper or a return), up to its decision point."""
        rand = self.rand
        if self._returns and self._returns[0][0] <= self._next_new:
            start, _, user = heapq.heappop(self._returns)
        else:
            start, user = self._next_new, self._new_user()
            self._next_new += _exp(rand, self.session_gap)
        self.clock = max(self.clock, start)
        user.visit += 1
        user.visits_left -= 1
        q = PERSONAS[user.persona]
        if user.visits_left > 0:
            gap = MIN_RETURN_GAP + _exp(rand, q.return_gap_days * DAY_SECONDS)
            heapq.heappush(self._returns, (start + gap, self._sessions, user))
        self._sessions += 1
        device = self._draw(self._device_cum[user.persona], rand())
        channel = self._draw(self._channel_cum[user.persona], rand())
        session_id = f"live-{self._sessions:08d}-{int(rand() * 16**8):08x}"
        home = rand() < (0.7 if CHANNELS[channel] in ("direct", "email") else 0.3)
        leaf = user.leaf if rand() < P_FAVOURITE_LEAF else self._draw(self._leaf_cum, rand())
        base = {"user_id": user.raw_id, "session_id": session_id, "channel": CHANNELS[channel],
                "device": DEVICES[device]}
        t = start
        opening = [{**base, "ts": _iso(t), "event_type": "page_view"}]
        session = LiveSession(user, session_id, start, device, channel, opening, None, None, leaf, None)
        if rand() < q.p_bounce:
            return session
        searched = rand() < q.p_search
        if searched:
            t += 5 + _exp(rand, 15)
            opening.append({**base, "ts": _iso(t), "event_type": "search", "query": self.catalog.leaves[leaf].query})
        product = self._pick(leaf, q.price_sensitivity)
        t += 4 + _exp(rand, 40)
        opening.append(self._item_event(base, t, "product_view", product))
        session.product, session.decision_ts = product, t
        top = TOP_NAMES[self.catalog.leaf_top[self.catalog.leaf[product]]]
        # What the shop knows at this point: the session so far and the product on screen, whose
        # price it places against the category's median.
        relative = self.catalog.price_cents[product] / 100.0 / self._leaf_median[self.catalog.leaf[product]]
        session.context = {"device": DEVICES[device], "channel": CHANNELS[channel],
                           "landing": "home" if home else "category", "searched": searched,
                           "visit": user.visit, "category": top,
                           "price_level": "low" if relative < 0.7 else "high" if relative > 1.4 else "mid"}
        return session

    def _pick(self, leaf: int, sensitivity: float) -> int:
        where = leaf if self.rand() < P_IN_LEAF else -1
        return self.catalog.pick(where, sensitivity, self.rand())

    def _item_event(self, base: dict[str, Any], t: float, kind: str, product: int, quantity: int | None = None
                    ) -> dict[str, Any]:
        c = self.catalog
        event = {**base, "ts": _iso(t), "event_type": kind, "item_id": str(int(c.product_id[product])),
                 "category": self._codes[c.leaf[product]], "brand": c.brand[product],
                 "price": int(c.price_cents[product]) / 100.0}
        if quantity is not None:
            event["quantity"] = quantity
        return event

    def finish(self, session: LiveSession, action: str) -> tuple[list[dict[str, Any]], bool]:
        """The rest of the session under ``action``: (events, whether it ends in a purchase)."""
        if action not in ACTIONS:
            raise JourneymapError(f"The live shop knows the actions {', '.join(ACTIONS)}. Got '{action}'.")
        rand = self.rand
        q = PERSONAS[session.user.persona]
        cell = (session.user.persona, min(session.user.visit, 3) - 1, session.device, session.channel,
                ACTIONS.index(action))
        u = rand()
        stage = 2 if u < CHECKOUT[cell] else 1 if u < CHECKOUT[cell] + CART[cell] else 0
        complete = rand() < P_COMPLETE[DEVICES[session.device]]
        n_items = 1 + (rand() < P_SECOND_ITEM) + (rand() < P_THIRD_ITEM) if stage else 0
        n_views = 1 + int(math.log(1.0 - rand()) / math.log(1.0 - 1.0 / q.views_mean)) if q.views_mean > 1 else 1
        n_views = max(n_views, n_items)
        base = {"user_id": session.user.raw_id, "session_id": session.session_id,
                "channel": CHANNELS[session.channel], "device": DEVICES[session.device]}
        t = session.decision_ts
        events: list[dict[str, Any]] = []
        viewed = [session.product]
        for _ in range(n_views - 1):
            product = self._pick(session.leaf, q.price_sensitivity)
            t += 4 + _exp(rand, 40)
            events.append(self._item_event(base, t, "product_view", product))
            viewed.append(product)
        cart: dict[int, int] = {}
        for product in viewed:
            if len(cart) >= n_items:
                break
            if product not in cart:
                t += 3 + _exp(rand, 15)
                cart[product] = 1 + (rand() < 0.1)
                events.append(self._item_event(base, t, "add_to_cart", product, cart[product]))
        bought = stage == 2 and complete
        if stage == 2:
            t += 10 + _exp(rand, 40)
            events.extend(self._item_event(base, t, "begin_checkout", p, n) for p, n in cart.items())
            if bought:
                t += 30 + _exp(rand, 90)
                self._orders += 1
                events.extend(self._item_event(base, t, "purchase", p, n) for p, n in cart.items())
        span = t - session.decision_ts
        if span > MAX_AFTER_DECISION:  # a long session is told faster, so its purchase falls in the horizon
            scale = MAX_AFTER_DECISION / span
            for e in events:
                offset = _epoch(e["ts"]) - session.decision_ts
                e["ts"] = _iso(session.decision_ts + offset * scale)
            t = session.decision_ts + MAX_AFTER_DECISION
        self.clock = max(self.clock, t)
        return events, bought


# -- where the traffic goes -------------------------------------------------------------------------------
_STAGES = ("browsing", "carted", "checkout", "purchased")
_STAGE_OF = {"add_to_cart": 1, "begin_checkout": 2, "purchase": 3}


class _Profiles:
    """A stand-in for the service's stored profiles: per user, the fields of ``journeymap profile``
    over the sessions before the current one (the stored profiles are built in the background, so
    a session's own events reach them after its decision; the request carries the session's own
    context). Counts (events, sessions, product views, cart adds, checkouts, purchases), session
    depth and bounce rate, recency and tenure at the current session's start, the furthest funnel
    stage of the latest session, the top category and the preferred device and channel (of the
    sessions' first events). A first visit has no profile."""

    def __init__(self) -> None:
        self._users: dict[str, dict[str, Any]] = {}

    def add(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            u = self._users.get(e["user_id"])
            if u is None:
                u = self._users[e["user_id"]] = {
                    "open": None, "sessions": 0, "bounces": 0, "events": 0, "product_view": 0, "add_to_cart": 0,
                    "begin_checkout": 0, "purchases": 0, "first": e["ts"], "last": None, "stage": 0, "now": e["ts"],
                    "categories": Counter(), "devices": Counter(), "channels": Counter()}
            open_ = u["open"]
            if open_ is None or open_["id"] != e.get("session_id"):  # a new session: the last one is history
                if open_ is not None:
                    self._close(u, open_)
                open_ = u["open"] = {"id": e.get("session_id"), "events": 0, "stage": 0, "counts": Counter(),
                                     "categories": Counter(), "last": e["ts"], "device": e.get("device"),
                                     "channel": e.get("channel")}
                u["now"] = e["ts"]
            kind = e["event_type"]
            open_["events"] += 1
            open_["counts"][kind] += 1
            open_["stage"] = max(open_["stage"], _STAGE_OF.get(kind, 0))
            if e.get("category"):
                open_["categories"][e["category"]] += 1
            open_["last"] = e["ts"]

    @staticmethod
    def _close(u: dict[str, Any], s: dict[str, Any]) -> None:
        u["sessions"] += 1
        u["bounces"] += s["events"] == 1
        u["events"] += s["events"]
        for kind in ("product_view", "add_to_cart", "begin_checkout"):
            u[kind] += s["counts"][kind]
        u["purchases"] += s["counts"]["purchase"] > 0
        u["categories"].update(s["categories"])
        u["devices"][s["device"]] += 1
        u["channels"][s["channel"]] += 1
        u["stage"], u["last"] = s["stage"], s["last"]

    def __call__(self, user_id: str) -> dict[str, Any] | None:
        u = self._users.get(str(user_id))
        if u is None or not u["sessions"]:
            return None
        top = u["categories"].most_common(1)
        now = _epoch(u["now"])
        n = u["sessions"]
        return {"sessions": n, "events": u["events"], "product_views": u["product_view"],
                "cart_adds": u["add_to_cart"], "checkouts": u["begin_checkout"], "purchases": u["purchases"],
                "mean_session_events": u["events"] / n, "bounce_rate": u["bounces"] / n,
                "recency_days": (now - _epoch(u["last"])) / 86400.0,
                "tenure_days": (now - _epoch(u["first"])) / 86400.0,
                "funnel_stage": _STAGES[u["stage"]],
                "top_categories": [{"name": top[0][0]}] if top else [],
                "preferred_device": u["devices"].most_common(1)[0][0],
                "preferred_channel": u["channels"].most_common(1)[0][0]}


class InProcessTarget:
    """An ``OnlinePolicy`` driven directly, as the service would drive it: events go to its reward
    join, decisions get profile context from a stand-in for the service's stored profiles."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.profiles = _Profiles()
        self.requests = 0

    def send(self, events: list[dict[str, Any]]) -> None:
        self.profiles.add(events)
        self.policy.observe(events)

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        decision = self.policy.decide(request["user_id"], request["actions"], context=request.get("context"),
                                      profile=self.profiles(request["user_id"]), ts=request.get("ts"))
        return decision.to_public()

    def close(self, clock: float) -> None:
        """Settle what the run's last events leave pending, at their horizon."""
        horizon = self.policy.reward_definition.horizon
        self.policy.settle(datetime.fromtimestamp(clock, UTC) + horizon)


class FixedTarget:
    """A fixed policy, no service: ``choose(context, actions) -> action`` sees the same context
    features the service's bandit would (the session's and the stand-in profile's)."""

    def __init__(self, choose: Callable[[dict[str, Any], list[dict[str, Any]]], str]) -> None:
        from journeymap.policy._rewards import context_features

        self._features = context_features
        self.choose = choose
        self.profiles = _Profiles()

    def send(self, events: list[dict[str, Any]]) -> None:
        self.profiles.add(events)

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        features = self._features(self.profiles(request["user_id"]), request.get("context"))
        return {"decision_id": None, "action": self.choose(features, request["actions"]), "probability": 1.0}

    def close(self, clock: float) -> None:
        pass


class HttpTarget:
    """The service over HTTP: ``POST /v1/events`` and ``POST /v1/decisions`` with a bearer key."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, client: Any = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        # ``client``: an httpx.Client of one's own, e.g. FastAPI's TestClient for an app in process
        self._own = client is None
        self.client = httpx.Client(base_url=self.url, timeout=timeout) if self._own else client
        self.client.headers.update(headers)
        self.errors: list[str] = []
        self.rejected = 0
        self.requests = 0
        self.seconds: dict[str, list[float]] = {}  # path -> each request's round trip

    def timings(self) -> dict[str, dict[str, float]]:
        """Per path: requests and the round trip's median and 99th percentile, in milliseconds."""
        return {path: {"requests": len(t), "p50_ms": round(float(np.percentile(t, 50)) * 1000, 1),
                       "p99_ms": round(float(np.percentile(t, 99)) * 1000, 1)}
                for path, t in self.seconds.items() if t}

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        self.requests += 1
        started = time.perf_counter()
        try:
            reply = self.client.post(path, json=body)
            self.seconds.setdefault(path, []).append(time.perf_counter() - started)
        except httpx.TransportError as exc:
            raise JourneymapError(f"Cannot reach {self.url}{path} ({exc}); start the service with "
                                  "`journeymap serve --store S --port P` and pass its address as --target.") from None
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail")
            except ValueError:
                detail = reply.text[:200]
            if reply.status_code in (401, 403):
                raise JourneymapError(f"{self.url}{path} answered {reply.status_code}: {detail} Set JOURNEYMAP_API_KEY "
                                      "to a key with the ingest and decide scopes.")
            self.errors.append(f"{path} {reply.status_code}: {detail}")
            return None
        return reply.json()

    def send(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        reply = self._post("/v1/events", {"events": events})
        rejected = reply.get("rejected") if isinstance(reply, dict) else None
        if isinstance(rejected, list) and rejected:
            self.rejected += len(rejected)
            if len(self.errors) < 20:
                self.errors.append(f"/v1/events rejected: {json.dumps(rejected[0], default=str)[:300]}")
        elif isinstance(rejected, int):
            self.rejected += rejected

    def decide(self, request: dict[str, Any]) -> dict[str, Any] | None:
        return self._post("/v1/decisions", request)

    def close(self, clock: float) -> None:
        if self._own:
            self.client.close()


# -- the loop ----------------------------------------------------------------------------------------------
@dataclass
class LiveRun:
    """What a live run did: one row per decision (with every action's true expected reward),
    counts, and the truth of the planted effects."""

    decisions: list[dict[str, Any]]
    sessions: int
    events: int
    seconds: float
    sim_start: str
    sim_end: str
    truth: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # over HTTP: per path round trips

    def to_frame(self):
        import pandas as pd

        rows = [{k: v for k, v in d.items() if k != "expected"} | {f"expected_{a}": d["expected"][a] for a in ACTIONS}
                for d in self.decisions]
        return pd.DataFrame(rows)

    def regret(self, checkpoints: list[int] | None = None):
        """Cumulative expected regret after each checkpoint (number of decisions): of the policy
        that ran, and of uniform random, against the per-persona oracle (each persona's best
        action), plus the share of recent decisions that took their persona's best action."""
        import pandas as pd

        n = len(self.decisions)
        if not n:
            raise JourneymapError("The run made no decisions, so there is no regret to show.")
        exp = np.array([[d["expected"][a] for a in ACTIONS] for d in self.decisions])  # (n, A)
        chosen = np.array([ACTIONS.index(d["action"]) for d in self.decisions])
        best = np.array([ACTIONS.index(BEST_ACTION[d["persona"]]) for d in self.decisions])
        rows = np.arange(n)
        oracle = exp[rows, best]
        got = exp[rows, chosen]
        uniform = exp.mean(axis=1)
        hit = (chosen == best).astype(float)
        if checkpoints is None:
            checkpoints = sorted({max(1, round(n * f)) for f in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)})
        out = []
        for c in checkpoints:
            c = min(int(c), n)
            window = slice(max(0, c - max(200, c // 10)), c)
            out.append({"decisions": c,
                        "regret_policy": float((oracle[:c] - got[:c]).sum()),
                        "regret_uniform": float((oracle[:c] - uniform[:c]).sum()),
                        "reward_policy": float(got[:c].sum()), "reward_oracle": float(oracle[:c].sum()),
                        "purchases": int(sum(d["purchased"] for d in self.decisions[:c])),
                        "best_share_recent": float(hit[window].mean())})
        return pd.DataFrame(out)

    def write(self, path: str | Path) -> tuple[Path, Path]:
        """The decisions as JSON lines at ``path``, the truth beside it (``.truth.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for d in self.decisions:
                fh.write(json.dumps(d) + "\n")
        truth_path = path.with_suffix(".truth.json")
        truth_path.write_text(json.dumps(self.truth, indent=1) + "\n")
        return path, truth_path

    def summary(self) -> dict[str, Any]:
        n = len(self.decisions)
        return {"sessions": self.sessions, "decisions": n, "events": self.events, "seconds": round(self.seconds, 2),
                "sessions_per_second": round(self.sessions / self.seconds, 1) if self.seconds else None,
                "purchases_after_decision": sum(d["purchased"] for d in self.decisions),
                "best_action_share": (sum(d["action"] == BEST_ACTION[d["persona"]] for d in self.decisions) / n
                                      if n else None),
                "sim_start": self.sim_start, "sim_end": self.sim_end, "errors": len(self.errors),
                **({"timings": self.timings} if self.timings else {})}


def run_live(target: Any, *, sessions: int | None = None, duration: float | None = None,
             rate: float | None = None, seed: int = 0, start: datetime | None = None,
             session_gap: float = SESSION_GAP, shop: LiveShop | None = None,
             progress: Callable[[int], None] | None = None) -> LiveRun:
    """Send simulated sessions to ``target`` until ``sessions`` have run or ``duration`` seconds
    have passed (wall clock), at most ``rate`` sessions per second (None: as fast as it answers).

    Per session: its opening events, then (unless it bounced) a decision request at the first
    product view, then the rest of its events under the chosen action.
    """
    if sessions is None and duration is None:
        raise JourneymapError("A live run needs a number of sessions or a duration.")
    if rate is not None and not rate > 0:
        raise JourneymapError(f"The rate must be a positive number of sessions per second. Got {rate!r}.")
    shop = shop or LiveShop(seed=seed, start=start, session_gap=session_gap)
    sim_start = shop.clock
    decisions: list[dict[str, Any]] = []
    events = done = 0
    began = time.perf_counter()
    try:
        while (sessions is None or done < sessions) and (duration is None or time.perf_counter() - began < duration):
            if rate is not None:
                wait = began + done / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            s = shop.next_session()
            target.send(s.opening)
            events += len(s.opening)
            if s.decides:
                request = {"user_id": s.user.raw_id, "actions": ACTION_REQUEST, "context": s.context,
                           "ts": _iso(s.decision_ts)}
                reply = target.decide(request)
                action = reply["action"] if reply else "nothing"  # a failed request shows nothing
                rest, bought = shop.finish(s, action)
                target.send(rest)
                events += len(rest)
                decisions.append({"decision_id": reply.get("decision_id") if reply else None,
                                  "ts": request["ts"], "user_id": s.user.raw_id, "persona": s.persona,
                                  "visit": s.user.visit, "device": DEVICES[s.device], "channel": CHANNELS[s.channel],
                                  "action": action, "probability": reply.get("probability") if reply else None,
                                  "purchased": bought, "expected": s.expected()})
            done += 1
            if progress is not None:
                progress(1)
    finally:
        target.close(shop.clock)
    truth = {**live_truth(), "user_personas": dict(shop.user_personas)}
    return LiveRun(decisions=decisions, sessions=done, events=events, seconds=time.perf_counter() - began,
                   sim_start=_iso(sim_start), sim_end=_iso(shop.clock), truth=truth,
                   errors=list(getattr(target, "errors", [])),
                   timings=target.timings() if hasattr(target, "timings") else {})


def run_http(target: str, rate: float, duration: float, seed: int = 0, api_key: str | None = None,
             progress: Callable[[int], None] | None = None) -> LiveRun:
    """A live run against the service at ``target``; simulated time is laid so that the run ends
    about now (events may be at most a day in the future)."""
    span = rate * duration * SESSION_GAP * 1.1  # simulated seconds the run's new shoppers cover
    start = datetime.now(UTC) - timedelta(seconds=span + 3600)
    return run_live(HttpTarget(target, api_key), duration=duration, rate=rate, seed=seed,
                    start=start.replace(microsecond=0), progress=progress)


def live_command(out: str | Path, target: str | None, rate: float, duration: str | float, seed: int = 0
                 ) -> dict[str, Any]:
    """``journeymap simulate --live``: run against ``target`` (key from ``$JOURNEYMAP_API_KEY``),
    write the decisions to ``out`` and the truth beside it; returns the run's summary."""
    import os

    from journeymap.config import parse_duration

    if not target:
        raise JourneymapError("--live needs --target, the service's address, like http://127.0.0.1:8000.")
    seconds = parse_duration(duration, "--duration").total_seconds()
    run = run_http(target, rate, seconds, seed=seed, api_key=os.environ.get("JOURNEYMAP_API_KEY"))
    path, truth = run.write(out)
    return {**run.summary(), "decisions_file": str(path), "truth": str(truth), "first_errors": run.errors[:5]}


def greedy_by_persona(choose: Callable[[Mapping[str, Any], list[dict[str, Any]]], str], run: LiveRun,
                      contexts: Mapping[str, Mapping[str, Any]], last: int = 1000) -> dict[str, dict[str, Any]]:
    """Per persona, over its last ``last`` decisions of ``run``: how often ``choose`` (e.g. a
    bandit's greedy choice) picks the persona's best action given the logged context
    (``contexts``: decision_id -> context features), and its most common choice."""
    out: dict[str, dict[str, Any]] = {}
    for q in PERSONAS:
        rows = [d for d in run.decisions if d["persona"] == q.name and d["decision_id"] in contexts][-last:]
        picks = Counter(choose(contexts[d["decision_id"]], ACTION_REQUEST) for d in rows)
        n = sum(picks.values())
        out[q.name] = {"best": BEST_ACTION[q.name], "decisions": n,
                       "greedy_best_share": picks[BEST_ACTION[q.name]] / n if n else None,
                       "greedy_mode": picks.most_common(1)[0][0] if picks else None}
    return out
