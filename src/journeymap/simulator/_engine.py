"""Turns the scheduled sessions into events, in global time order, a chunk at a time.

Sessions are visited in start order and their events buffered; since no later session can
start before the current one, buffered events earlier than its start are final and are flushed
sorted. Memory is bounded by the chunk size plus the sessions still in progress.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from math import log

import numpy as np

from ._catalog import Catalog
from ._personas import COUPON_CODE, PERSONA_INDEX, PERSONAS
from ._schedule import Schedule
from ._text import RATING_WEIGHTS, review_texts, search_queries

# Internal event codes; page views are split by landing page so their properties need no storage.
PAGE_HOME, PAGE_CATEGORY, PROMOTION, SEARCH, VIEW, CART, REMOVE, CHECKOUT, PURCHASE, REVIEW = range(10)
EVENT_TYPES = ("page_view", "page_view", "promotion_view", "search", "view", "cart", "remove_from_cart",
               "begin_checkout", "purchase", "review")
CONSTANT_PROPERTIES = {
    PAGE_HOME: '{"page":"home"}',
    PAGE_CATEGORY: '{"page":"category"}',
    PROMOTION: f'{{"promotion":"{COUPON_CODE}"}}',
}

P_CATEGORY_PAGE = 0.6  # a product view is preceded by a category listing page
P_BACK = 0.15  # a view returns to a product already seen in the session
P_IN_LEAF = 0.85  # a view stays in the session's category
P_REMOVE = 0.10  # a cart session removes one item again
P_BARGAIN_QUERY = 0.5  # a bargain hunter's search asks for cheap items
QUANTITY_CUM = (0.86, 0.96, 1.0)  # quantities 1, 2, 3
BLOCK = 65_536  # sessions converted from numpy to Python lists at a time
_BARGAIN = PERSONA_INDEX["bargain_hunter"]
_RATING_CUM = tuple(np.cumsum(RATING_WEIGHTS)[:-1].tolist())


@dataclass
class EventChunk:
    """Events in time order; product -1, quantity 0 and rating 0 mean missing."""

    time: np.ndarray  # int64 unix seconds
    code: np.ndarray  # int8 internal event code
    product: np.ndarray  # int32 product number
    session: np.ndarray  # int32 session number (index into the schedule)
    quantity: np.ndarray  # int32
    payload: np.ndarray  # object: search query, review text or purchase properties, else None
    rating: np.ndarray  # int8


class Journeys:
    """Lays out each session's events and hands sorted chunks to `sink`."""

    def __init__(
        self,
        schedule: Schedule,
        catalog: Catalog,
        rng: random.Random,
        sink: Callable[[EventChunk], None],
        chunk_rows: int,
    ) -> None:
        self.schedule, self.catalog, self.rng, self.sink = schedule, catalog, rng, sink
        self.chunk_rows = chunk_rows
        self.counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
        self._cols: tuple[list, ...] = ([], [], [], [], [], [], [])
        self._pending_review: dict[int, tuple[int, int]] = {}  # user -> (product, time) to review next visit
        self._pending_cart: dict[int, list[int]] = {}  # bargain hunter -> products carted, not bought
        self._orders = 0
        catalog.prepare({p.price_sensitivity for p in PERSONAS})
        self._reviews = review_texts(catalog)
        self._queries, self._bargain_queries = search_queries(catalog)

    def run(self) -> None:
        s = self.schedule
        threshold = self.chunk_rows
        for lo in range(0, len(s.user), BLOCK):
            hi = lo + BLOCK
            rows = zip(
                range(lo, min(hi, len(s.user))), s.user[lo:hi].tolist(), s.user_persona[s.user[lo:hi]].tolist(),
                s.last_visit[lo:hi].tolist(), s.start[lo:hi].tolist(),
                s.coupon[lo:hi].tolist(), s.land_home[lo:hi].tolist(), s.leaf[lo:hi].tolist(),
                s.n_views[lo:hi].tolist(), s.n_search[lo:hi].tolist(), s.stage[lo:hi].tolist(),
                s.complete[lo:hi].tolist(), s.n_items[lo:hi].tolist(),
            )
            for row in rows:
                if len(self._cols[0]) >= threshold:
                    # Nothing after this session can start before it: earlier events are final.
                    self._flush(before=row[4])
                    threshold = len(self._cols[0]) + self.chunk_rows
                self._session(*row)
        self._flush(before=None)

    def _session(
        self, i: int, user: int, persona: int, last: bool, t: int, coupon: bool, home: bool,
        leaf: int, n_views: int, n_search: int, stage: int, complete: bool, n_items: int,
    ) -> None:
        rand = self.rng.random
        T, C, P, S, Q, X, R = (c.append for c in self._cols)

        def emit(t: int, code: int, product: int = -1, quantity: int = 0, payload: str | None = None,
                 rating: int = 0) -> None:
            T(t), C(code), P(product), S(i), Q(quantity), X(payload), R(rating)

        emit(t, PAGE_HOME if home else PAGE_CATEGORY)
        if coupon:
            t += 2 + int(rand() * 6)
            emit(t, PROMOTION)
        reviewed, bought_at = self._pending_review.pop(user, (-1, 0))
        if reviewed >= 0 and bought_at >= t:
            # A session that began before the purchase finished (rare, around midnight) is not
            # "later": the review waits for the next one.
            self._pending_review[user] = (reviewed, bought_at)
        elif reviewed >= 0:
            t += 20 + int(-60 * log(1.0 - rand()))
            u = rand()
            rating = 1 + sum(u > c for c in _RATING_CUM)
            texts = self._reviews[self.catalog.leaf[reviewed]][rating]
            emit(t, REVIEW, reviewed, payload=texts[int(rand() * len(texts))], rating=rating)

        persona_row = PERSONAS[persona]
        bargain = persona == _BARGAIN
        carried = self._pending_cart.pop(user, [])
        # Searches: the first one opens the session, later ones come before random views.
        search_at = sorted([0] + [int(rand() * n_views) for _ in range(n_search - 1)]) if n_search else []
        cart_at: set[int] = set()
        if stage:
            # A returning bargain hunter views and carts again what was left in the cart last time.
            first = min(len(carried), n_items)
            cart_at = set(range(first)) | set(self.rng.sample(range(first, n_views), n_items - first))
        cart: dict[int, int] = {}
        viewed: list[int] = []
        s = 0
        for k in range(n_views):
            while s < len(search_at) and search_at[s] == k:
                t += 5 + int(-15 * log(1.0 - rand()))
                if bargain and rand() < P_BARGAIN_QUERY:
                    qs = self._bargain_queries[leaf]
                else:
                    qs = self._queries[leaf]
                emit(t, SEARCH, payload=qs[int(rand() * len(qs))])
                s += 1
            if rand() < P_CATEGORY_PAGE:
                t += 4 + int(-20 * log(1.0 - rand()))
                emit(t, PAGE_CATEGORY)
            if k < len(carried):
                product = carried[k]
            elif viewed and rand() < P_BACK:
                product = viewed[int(rand() * len(viewed))]
            else:
                where = leaf if rand() < P_IN_LEAF else -1
                product = self.catalog.pick(where, persona_row.price_sensitivity, rand())
            t += 4 + int(-40 * log(1.0 - rand()))
            emit(t, VIEW, product)
            viewed.append(product)
            if k in cart_at and product not in cart:
                t += 3 + int(-15 * log(1.0 - rand()))
                u = rand()
                quantity = 1 if u < QUANTITY_CUM[0] else 2 if u < QUANTITY_CUM[1] else 3
                emit(t, CART, product, quantity)
                cart[product] = quantity
        for _ in range(s, len(search_at)):  # a search with no product view after it
            t += 5 + int(-15 * log(1.0 - rand()))
            emit(t, SEARCH, payload=self._queries[leaf][int(rand() * len(self._queries[leaf]))])

        if cart and (stage == 1 or len(cart) > 1) and rand() < P_REMOVE:
            removed = list(cart)[int(rand() * len(cart))]
            t += 5 + int(-30 * log(1.0 - rand()))
            emit(t, REMOVE, removed)
            del cart[removed]
        if stage == 2:
            t += 10 + int(-40 * log(1.0 - rand()))
            for product in cart:
                emit(t, CHECKOUT, product)
            if complete:
                t += 30 + int(-90 * log(1.0 - rand()))
                self._orders += 1
                properties = f'{{"order_id":"{self._orders:010d}"}}'
                for product, quantity in cart.items():
                    emit(t, PURCHASE, product, quantity, properties)
                if not last and rand() < persona_row.p_review:
                    bought = list(cart)
                    self._pending_review[user] = (bought[int(rand() * len(bought))], t)
        elif cart and bargain and not last:
            self._pending_cart[user] = list(cart)

    def _flush(self, before: int | None) -> None:
        T, C, P, S, Q, X, R = self._cols
        if not T:
            return
        time = np.array(T, dtype=np.int64)
        order = np.argsort(time, kind="stable")  # ties keep generation order: deterministic
        cut = len(order) if before is None else int(np.searchsorted(time[order], before, side="left"))
        if cut == 0:
            return
        arrays = (time, np.array(C, dtype=np.int8), np.array(P, dtype=np.int32), np.array(S, dtype=np.int32),
                  np.array(Q, dtype=np.int32), np.array(X, dtype=object), np.array(R, dtype=np.int8))
        out, rest = order[:cut], np.sort(order[cut:])
        chunk = EventChunk(*(a[out] for a in arrays))
        self._cols = tuple(a[rest].tolist() for a in arrays)
        self.counts += np.bincount(chunk.code, minlength=len(EVENT_TYPES))
        self.sink(chunk)
