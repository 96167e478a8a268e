"""A plain-language summary of one profile, written only from that profile's own numbers.

Every clause restates a field (device, top category and brands, sessions, products viewed and
carted, purchases and spend, price band, searches, reviews, lifecycle, funnel position), so a
reader can check each word against the row; ``tests/profiles`` parses summaries back and does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# The profile columns a summary reads.
SUMMARY_FIELDS = ("preferred_device", "top_categories", "top_brands", "sessions", "sessions_7d", "recency_days",
                  "products_viewed", "products_carted", "purchases", "monetary", "days_since_purchase",
                  "price_band", "top_searches", "reviews", "mean_rating", "lifecycle", "funnel_stage")
MOSTLY = 0.5  # "mostly X" only when X holds at least half of the decayed interest
LATEST_SESSION = {
    "browsing": "latest session browsing only",
    "carted": "latest session ended with items in the cart",
    "checkout": "latest session reached checkout",
    "purchased": "latest session ended in a purchase",
}


def category_label(code: str) -> str:
    """'apparel.shoes.running' -> 'apparel > shoes > running'; a bare numeric id -> 'category 123'."""
    if code.isdigit():
        return f"category {code}"
    return " > ".join(part.replace("_", " ") for part in code.split("."))


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def _days(value: float) -> int:
    return math.floor(value + 1e-9)


def summarize(p: Mapping[str, Any]) -> str:
    """One paragraph from a profile row (a dict with the profiles table's columns)."""
    device = p.get("preferred_device")
    who = f"{device.capitalize()} shopper" if device else "Shopper"
    cats = p.get("top_categories") or []
    if cats:
        top = cats[0]
        who += f", {'mostly' if top['share'] >= MOSTLY else 'most interested in'} {category_label(top['name'])}"
    brands = [b["name"] for b in (p.get("top_brands") or [])[:2]]
    if brands:  # the user's top brands overall, not only within the top category
        who += f", top brands {', '.join(brands)}"
    parts = [who]

    sessions = int(p["sessions"])
    recent = int(p.get("sessions_7d") or 0)
    if recent:
        activity = [f"{_n(recent, 'session')} in the last 7 days ({sessions:,} in all)"]
    else:
        activity = [f"last seen {_n(_days(p['recency_days']), 'day')} ago ({_n(sessions, 'session')} in all)"]
    activity.append(f"{_n(int(p['products_viewed']), 'product')} viewed")
    activity.append(f"{int(p['products_carted']):,} carted")
    purchases = int(p["purchases"])
    if purchases:
        bought = _n(purchases, "purchase")
        if p.get("monetary") is not None:
            bought += f" worth {p['monetary']:,.2f}"
        bought += f", the last {_n(_days(p['days_since_purchase']), 'day')} ago"
        activity.append(bought)
    else:
        activity.append("no purchase yet")
    parts.append(", ".join(activity))

    if p.get("price_band"):
        parts.append(f"price band: {p['price_band']}")
    searches = [s["query"] for s in (p.get("top_searches") or [])[:2]]
    if searches:
        parts.append("searches for " + ", ".join(f'"{q}"' for q in searches))
    if p.get("reviews"):
        text = _n(int(p["reviews"]), "review")
        if p.get("mean_rating") is not None:
            text += f", mean rating {p['mean_rating']:.1f}"
        parts.append(text)
    status = f"status: {p['lifecycle'].replace('_', ' ')}"
    if p.get("funnel_stage"):
        status += f", {LATEST_SESSION[p['funnel_stage']]}"
    parts.append(status)
    return "; ".join(parts) + "."
