"""One user's profile computed now, from their events: for a live service whose stored profiles
trail the latest events (14 ms with the read of the events on a million-event store, 0.1 ms when
the service holds them).

``update_profiles`` keeps every user's profile equal to a rebuild, but each run derives all users
(seconds on a large store), so a service runs it every few seconds at most. In between, the profile
of a user with new events is computed here: that user's statistics from their events and their
derived fields at the time a rebuild would use (the store's latest event), so every field that
depends on the user alone equals a rebuild's. The fields fitted on or ranked against the whole
population (RFM quintiles, BG/NBD and Gamma-Gamma lifetime value, the segment, model outputs) keep
the values of the last update, which the next update refreshes.

The build's SQL (``_build._STATE_SQL`` and ``_DERIVE_SQL``) restricted to one user took about 50 ms
on a store of a million events, half of it DuckDB planning two large queries. Here a plain query
reads the user's events (or the caller hands them over from memory), and Python computes what the
build's SQL computes, rule for rule: the per-row values as DuckDB computes them (its decimal
casts, its trim and lower), the same exact decimal sums, the same tie-breaks, the same session
keys. The build stays the definition; ``tests/profiles/test_live.py`` holds every user of
simulated and random stores to it, field for field.
"""

from __future__ import annotations

import decimal
import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from journeymap.profiles._build import (
    _FUNNEL_RANK,
    COLUMNS,
    EVENT_WEIGHTS,
    FUNNEL_STAGES,
    MODEL_COLUMNS,
    PRICE_BANDS,
    PRICE_EVENTS,
    TOP,
    WEEKDAYS,
    Lifecycle,
    _Options,
    has_profiles,
    profiles_meta,
)
from journeymap.profiles._lifetime import OUTPUTS
from journeymap.profiles._summary import SUMMARY_FIELDS, summarize

# Kept from the last update: each needs every user's numbers.
POPULATION_FIELDS = ("r_score", "f_score", "m_score", "rfm", *OUTPUTS, "segment", "segment_id", *MODEL_COLUMNS)

# Sums of DECIMAL(38, s) terms, exact as DuckDB's (a 128-bit integer); float() of the sum then
# rounds as DuckDB's cast to DOUBLE does (checked on 20,000 random sums).
_EXACT = decimal.Context(prec=80)
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)

# What a live profile reads of each of the user's events, in this order (``user_events``).
EVENT_FIELDS = ("event_id", "ts", "event_type", "session_id", "item_id", "category", "brand", "price", "quantity",
                "channel", "device", "query", "rating")
(EID, TS, TYPE, SESSION, ITEM, CATEGORY, BRAND, PRICE, QUANTITY, CHANNEL, DEVICE, QUERY_TEXT, RATING) = range(13)
# Per-row values the build computes in SQL, appended to each row by ``_with_values``.
QUERY, MS, SPEND, PRICE6, RATING6, WEIGHT = range(13, 19)


def user_events(con, user: str) -> list[tuple]:
    """Every stored event of the user, as ``EVENT_FIELDS`` tuples (event id as text), in no order."""
    return con.execute(f"SELECT CAST(event_id AS VARCHAR), {', '.join(EVENT_FIELDS[1:])} FROM main.events "
                       "WHERE user_id = ?", [user]).fetchall()


def live_profile_row(con, user: str, meta: dict[str, Any] | None = None, *, events: list[tuple] | None = None,
                     cutoff: datetime | None = None, prices: Callable[[list[str]], list[tuple]] | None = None,
                     kept: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, datetime | None]:
    """(the user's profile row, as of the store's latest event), or (None, None) when the user has
    no events or the store no profiles yet. ``con``: a connection to the store. What the caller
    already holds is not read again: ``meta`` (``profiles_meta``), ``events`` (every stored event of
    the user, as ``user_events`` gives them), ``cutoff`` (the store's latest event time), ``prices``
    (``catalog_prices`` for a list of categories) and ``kept`` (the stored profile's
    ``POPULATION_FIELDS``, None for a user without one)."""
    if meta is None:
        meta = profiles_meta(con) if has_profiles(con) else None
    saved = (meta or {}).get("options")
    if not saved:
        return None, None
    options = _Options(float(saved["half_life_days"]), float(saved["gap_seconds"]), Lifecycle(**saved["lifecycle"]))
    if events is None:
        events = user_events(con, user)
    if cutoff is None:
        cutoff = con.execute("SELECT max(ts) FROM events").fetchall()[0][0]
    # The store's order within a user: time, then event id (a UUID orders as its text).
    rows = sorted((e for e in events if cutoff is not None and e[TS] <= cutoff), key=lambda e: (e[TS], e[EID]))
    if not rows:
        return None, None
    state = _state(user, _with_values(con, rows, options), options)
    categories = sorted({c for c, _, _ in state["price_stats"]})
    catalog = (prices or (lambda names: catalog_prices(con, names)))(categories) if categories else []
    row = {"user_id": user, **_derive(state, cutoff, options, catalog)}
    if kept is None:
        kept = kept_fields(con, user)
    for name in POPULATION_FIELDS:
        row[name] = kept.get(name)
    row["summary"] = summarize({name: row[name] for name in SUMMARY_FIELDS})
    return {name: row.get(name) for name in COLUMNS}, cutoff


def kept_fields(con, user: str) -> dict[str, Any]:
    """The user's stored ``POPULATION_FIELDS`` ({} without a stored profile)."""
    stored = con.execute(f"SELECT {', '.join(POPULATION_FIELDS)} FROM profiles WHERE user_id = ?", [user]).fetchall()
    return dict(zip(POPULATION_FIELDS, stored[0])) if stored else {}


def catalog_prices(con, categories: list[str]) -> list[tuple]:
    """(category, price, items) of the catalog's items priced above zero in these categories, by
    category and price: what the build ranks a user's mean price against."""
    return con.execute("SELECT category, price, count(*) FROM items WHERE price > 0 AND category IN "
                       "(SELECT unnest($1::VARCHAR[])) GROUP BY ALL ORDER BY category, price", [categories]).fetchall()


def _decimal(x: float, scale: int) -> Decimal:
    """DuckDB's CAST(x AS DECIMAL(38, scale)): x times 10^scale in double precision, rounded half
    away from zero (C's round; equal to DuckDB's on 100,000 random values at scales 6 and 15)."""
    v = abs(x * 10.0 ** scale)
    n = math.floor(v)
    if v - n >= 0.5:
        n += 1
    return Decimal(int(n) if x >= 0 else -int(n)).scaleb(-scale, _EXACT)


def _with_values(con, rows: list[tuple], options: _Options) -> list[tuple]:
    """Each row with the build's per-row SQL values: the cleaned search (``lower(trim(query))``, NULL
    when blank), ``epoch_ms(ts)``, the spend, price and rating as exact decimals and the decayed
    event weight (``_build._STATE_SQL``'s expressions, computed as DuckDB computes them)."""
    half_life_us = options.half_life_days * 86400e6
    last_us = (rows[-1][TS] - _EPOCH) // _US
    out = []
    for r in rows:
        us = (r[TS] - _EPOCH) // _US
        query = r[QUERY_TEXT]
        if query is not None:
            if query.isascii():  # DuckDB's trim strips the Unicode space separators: of ASCII, ' '
                query = query.strip(" ").lower() or None
            else:  # its lower() is not Python's beyond ASCII (İ): ask it
                query = con.execute("SELECT CASE WHEN nullif(trim($1), '') IS NOT NULL THEN lower(trim($1)) END",
                                    [query]).fetchall()[0][0]
        price, weight = r[PRICE], EVENT_WEIGHTS.get(r[TYPE])
        out.append((*r, query, us // 1000 if us >= 0 else -(-us // 1000),
                    None if price is None else _decimal(price * (1 if r[QUANTITY] is None else r[QUANTITY]), 6),
                    None if price is None else _decimal(price, 6),
                    None if r[RATING] is None else _decimal(r[RATING], 6),
                    None if weight is None else _decimal(weight * math.pow(2.0, -(last_us - us) / half_life_us), 15)))
    return out


def _exact_sum(terms) -> Decimal | None:
    """SQL's sum of decimals: None over no terms."""
    total = None
    for term in terms:
        total = term if total is None else _EXACT.add(total, term)
    return total


def _double(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _top(scores: dict[str, Decimal]) -> list[tuple[str, Decimal]]:
    """Highest score first, ties by name; the build's ``ORDER BY s DESC, name``."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _state(user: str, rows: list[tuple], options: _Options) -> dict[str, Any]:
    """profile_state's row for the user (``_build._STATE_SQL``), from their ordered events."""
    gap_us = timedelta(seconds=options.gap_seconds) // timedelta(microseconds=1)
    purchases = [r for r in rows if r[TYPE] == "purchase"]
    reviews = [r for r in rows if r[TYPE] == "review"]
    searches = [r for r in rows if r[TYPE] == "search"]

    # Sessions, by ``store.sessionized_sql``: a given id, else a new session after a gap (counted
    # over the events without an id only); the keys are the SQL's, since they break ties.
    sessions: dict[str, dict[str, Any]] = {}
    number, previous = 0, None
    for r in rows:
        if r[SESSION] is not None:
            key = f"{user}:{r[SESSION]}"
        else:
            if previous is None or (r[TS] - previous) // timedelta(microseconds=1) > gap_us:
                number += 1
            previous = r[TS]
            key = f"{user}#{number}"
        s = sessions.get(key)
        if s is None:  # rows come in time order: the first is the start
            s = sessions[key] = {"start": r[TS], "start_ms": r[MS], "n": 0, "device": None, "channel": None,
                                 "rank": 1, "bought": False}
        s["stop"], s["stop_ms"] = r[TS], r[MS]
        s["n"] += 1
        if s["device"] is None:
            s["device"] = r[DEVICE]
        if s["channel"] is None:
            s["channel"] = r[CHANNEL]
        s["rank"] = max(s["rank"], _FUNNEL_RANK.get(r[TYPE], 1))
        s["bought"] = s["bought"] or r[TYPE] == "purchase"
    ordered = sorted(sessions.items(), key=lambda ks: (ks[1]["start"], ks[0]))

    # Preferences: most sessions wins; ties to the first in text order (days and hours as 2 digits).
    def preferred(values) -> str | None:
        counts = Counter(v for v in values if v is not None)
        return min(counts.items(), key=lambda vn: (-vn[1], vn[0]))[0] if counts else None

    weekday = preferred(f"{s['start'].isoweekday():02d}" for s in sessions.values())
    hour = preferred(f"{s['start'].hour:02d}" for s in sessions.values())

    # Category and brand scores: exact sums of the decayed weights.
    categories: dict[str, Decimal] = {}
    brands: dict[str, Decimal] = {}
    for r in rows:
        if r[WEIGHT] is None:
            continue
        if r[CATEGORY] is not None:
            categories[r[CATEGORY]] = _EXACT.add(categories.get(r[CATEGORY], Decimal(0)), r[WEIGHT])
        if r[BRAND] is not None:
            brands[r[BRAND]] = _EXACT.add(brands.get(r[BRAND], Decimal(0)), r[WEIGHT])

    priced: dict[str, list[Decimal]] = {}
    for r in rows:
        if r[TYPE] in PRICE_EVENTS and r[PRICE] is not None and r[PRICE] > 0 and r[CATEGORY] is not None:
            priced.setdefault(r[CATEGORY], []).append(r[PRICE6])

    queries = Counter(r[QUERY] for r in searches if r[QUERY] is not None)
    purchase_days = {r[TS].date() for r in purchases}
    first_day = min(purchase_days) if purchase_days else None
    return {
        "first_seen": rows[0][TS], "last_seen": rows[-1][TS], "events": len(rows),
        "active_days": len({r[TS].date() for r in rows}),
        "product_views": sum(r[TYPE] == "product_view" for r in rows),
        "products_viewed": len({r[ITEM] for r in rows if r[TYPE] == "product_view" and r[ITEM] is not None}),
        "cart_adds": sum(r[TYPE] == "add_to_cart" for r in rows),
        "products_carted": len({r[ITEM] for r in rows if r[TYPE] == "add_to_cart" and r[ITEM] is not None}),
        "checkouts": sum(r[TYPE] == "begin_checkout" for r in rows),
        "items_bought": sum(1 if r[QUANTITY] is None else r[QUANTITY] for r in purchases),
        "monetary": _double(_exact_sum(r[SPEND] for r in purchases if r[PRICE] is not None)),
        "first_purchase": purchases[0][TS] if purchases else None,
        "last_purchase": purchases[-1][TS] if purchases else None,
        "purchase_days": len(purchase_days),
        "repeat_monetary": float(_exact_sum(r[SPEND] for r in purchases if r[PRICE] is not None
                                            and r[TS].date() > first_day) or 0) if len(purchase_days) > 1 else None,
        "searches": len(searches),
        "top_searches": [{"query": q, "count": n} for q, n in sorted(queries.items(), key=lambda qn: (-qn[1], qn[0]))[:TOP]],
        "reviews": len(reviews),
        "rating_sum": _double(_exact_sum(r[RATING6] for r in reviews if r[RATING] is not None)),
        "ratings": sum(r[RATING] is not None for r in reviews),
        "sessions": len(sessions), "session_starts": [s["start"] for _, s in ordered],
        "session_ms": sum(s["stop_ms"] - s["start_ms"] for s in sessions.values()),
        "bounces": sum(s["n"] == 1 for s in sessions.values()),
        "orders": sum(s["bought"] for s in sessions.values()),
        "last_session_start": ordered[-1][1]["start"], "last_session_rank": ordered[-1][1]["rank"],
        "preferred_device": preferred(s["device"] for s in sessions.values()),
        "preferred_channel": preferred(s["channel"] for s in sessions.values()),
        "preferred_weekday": int(weekday), "preferred_hour": int(hour),
        "category_scores": _top(categories)[:TOP], "category_total": float(_exact_sum(categories.values()) or 0),
        "brand_scores": _top(brands)[:TOP], "brand_total": float(_exact_sum(brands.values()) or 0),
        # (category, n, mean price): DuckDB divides a decimal by a count in DOUBLE.
        "price_stats": [(c, len(p), float(_exact_sum(p)) / len(p)) for c, p in sorted(priced.items())],
    }


def _days(later: datetime, earlier: datetime) -> float:
    return ((later - earlier) // timedelta(microseconds=1)) / 86400e6


def _derive(s: dict[str, Any], as_of: datetime, options: _Options, catalog: list[tuple]) -> dict[str, Any]:
    """The profile's own fields at ``as_of`` (``_build._DERIVE_SQL``); ``catalog``: (category, price,
    items) of the items priced above zero in the user's priced categories, by category and price."""
    lc = options.lifecycle
    half_life_us = options.half_life_days * 86400e6
    recency, tenure = _days(as_of, s["last_seen"]), _days(as_of, s["first_seen"])
    decay = math.pow(2.0, -((as_of - s["last_seen"]) // timedelta(microseconds=1)) / half_life_us)
    lifecycle = ("churned" if recency >= lc.churned_days else "dormant" if recency >= lc.dormant_days
                 else "at_risk" if recency >= lc.at_risk_days else "new" if tenure < lc.new_days else "active")
    orders, days, monetary = s["orders"], s["purchase_days"], s["monetary"]

    # Price percentile: per category, the share of the catalog's items cheaper than the user's mean
    # price there (ties count half), weighted by how many prices the user saw in it.
    by_category: dict[str, list[tuple[float, int]]] = {}
    for category, price, count in catalog:
        by_category.setdefault(category, []).append((price, count))
    weighted, seen = 0.0, 0
    for category, n, mean in s["price_stats"]:
        dist = by_category.get(category)
        if not dist:
            continue  # not in the catalog: the build's inner join drops it
        total, below, pct = sum(c for _, c in dist), 0, 0.0
        for price, count in dist:
            if price > mean:
                break
            below += count
            pct = (below - count / 2.0) / total if price == mean else below / total
        weighted += n * pct
        seen += n
    percentile = weighted / seen if seen else None

    def ranked(scores: list[tuple[str, Decimal]], total: float) -> list[dict[str, Any]]:
        return [{"name": name, "weight": float(score) * decay, "share": float(score) / total} for name, score in scores]

    return {
        "lifecycle": lifecycle, "first_seen": s["first_seen"], "last_seen": s["last_seen"],
        "tenure_days": tenure, "recency_days": recency, "events": s["events"], "sessions": s["sessions"],
        "sessions_7d": sum(t > as_of - timedelta(days=7) for t in s["session_starts"]),
        "sessions_30d": sum(t > as_of - timedelta(days=30) for t in s["session_starts"]),
        "active_days": s["active_days"], "product_views": s["product_views"], "products_viewed": s["products_viewed"],
        "cart_adds": s["cart_adds"], "products_carted": s["products_carted"], "checkouts": s["checkouts"],
        "purchases": orders, "items_bought": s["items_bought"], "monetary": monetary,
        "avg_order_value": monetary / orders if orders > 0 and monetary is not None else None,
        "first_purchase": s["first_purchase"], "last_purchase": s["last_purchase"],
        "days_since_purchase": None if s["last_purchase"] is None else _days(as_of, s["last_purchase"]),
        "frequency": days - 1 if days > 0 else None,
        "clv_recency": (s["last_purchase"].date() - s["first_purchase"].date()).days if days > 0 else None,
        "clv_t": (as_of.date() - s["first_purchase"].date()).days if days > 0 else None,
        "clv_monetary": (s["repeat_monetary"] / (days - 1) if days > 1
                         else 0.0 if days == 1 and monetary is not None else None),
        "top_categories": ranked(s["category_scores"], s["category_total"]),
        "top_brands": ranked(s["brand_scores"], s["brand_total"]),
        "price_percentile": percentile,
        "price_band": None if percentile is None else next(band for bound, band in PRICE_BANDS if percentile < bound),
        "preferred_device": s["preferred_device"], "preferred_channel": s["preferred_channel"],
        "preferred_weekday": WEEKDAYS[s["preferred_weekday"] - 1], "preferred_hour": s["preferred_hour"],
        "mean_session_seconds": s["session_ms"] / 1000.0 / s["sessions"],
        "mean_session_events": s["events"] / s["sessions"], "bounce_rate": s["bounces"] / s["sessions"],
        "funnel_stage": FUNNEL_STAGES[s["last_session_rank"] - 1], "last_session_start": s["last_session_start"],
        "searches": s["searches"], "top_searches": s["top_searches"], "reviews": s["reviews"],
        "mean_rating": s["rating_sum"] / s["ratings"] if s["ratings"] > 0 else None,
    }
