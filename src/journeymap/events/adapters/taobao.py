"""Taobao UserBehavior (Alibaba Tianchi): no header; user_id,item_id,category_id,behavior,timestamp.

Behaviours pv/cart/fav/buy; Unix seconds. The log has no sessions: they are derived from gaps.
"""

from __future__ import annotations

from collections.abc import Sequence

from journeymap.events.adapters._base import Adapter, Role, blank_to_null, epoch, q

COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
BEHAVIOURS = {"pv": "product_view", "cart": "add_to_cart", "fav": "add_to_wishlist", "buy": "purchase"}


def _looks_like(rows: Sequence[Sequence[str]]) -> bool:
    return all(r[3].strip() in BEHAVIOURS and r[4].strip().isdigit() and r[0].strip().isdigit()
               for r in rows[:5])


class Taobao(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="taobao",
            title="Taobao UserBehavior (Alibaba Tianchi), headerless",
            roles=(Role("events", frozenset(COLUMNS), columns=COLUMNS, looks_like=_looks_like),),
            user_columns=("user_id",),
            event_map=BEHAVIOURS,
            ts_expected="Unix seconds",
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        return {
            "user_id": blank_to_null(q("user_id")),
            "ts": epoch(q("timestamp"), "s"),
            "ts_raw": q("timestamp"),
            "event_type": f"trim({q('behavior_type')})",
            "item_id": blank_to_null(q("item_id")),
            "category": blank_to_null(q("category_id")),
        }
