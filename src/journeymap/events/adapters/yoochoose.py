"""YooChoose (RecSys Challenge 2015): clicks and buys, and session-rec's prepared form.

Original files have no header: clicks are session_id,timestamp,item_id,category and buys are
session_id,timestamp,item_id,price,quantity, with ISO timestamps. session-rec's prepared files
are tab-separated SessionId, ItemId, Time (Unix seconds). There are no user ids: each session is
its own user, ``session:<id>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from journeymap.events.adapters._base import Adapter, Role, epoch, iso_timestamp, json_object, q

CLICKS = ("session_id", "timestamp", "item_id", "category")
BUYS = ("session_id", "timestamp", "item_id", "price", "quantity")
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?$")


def _looks_like(rows: Sequence[Sequence[str]]) -> bool:
    return all(r[0].strip().isdigit() and _ISO.match(r[1].strip()) and r[2].strip().isdigit()
               for r in rows[:5])


class YooChoose(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="yoochoose",
            title="YooChoose RecSys Challenge 2015 clicks/buys (original or session-rec prepared)",
            roles=(
                Role("clicks", frozenset(CLICKS), columns=CLICKS, looks_like=_looks_like),
                Role("buys", frozenset(BUYS), columns=BUYS, looks_like=_looks_like),
                Role("prepared", frozenset({"SessionId", "ItemId", "Time"})),
            ),
            event_map={"click": "product_view", "buy": "purchase"},
            ts_expected="ISO time like 2014-04-07T10:51:09.277Z (Unix seconds in prepared files)",
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        if "SessionId" in columns:
            session, ts = q("SessionId"), q("Time")
            return {
                "user_id": f"'session:' || nullif(trim({session}), '')",
                "ts": epoch(ts, "s"),
                "ts_raw": ts,
                "event_type": "'click'",
                "session_id": f"nullif(trim({session}), '')",
                "item_id": f"nullif(trim({q('ItemId')}), '')",
            }
        session = q("session_id")
        out = {
            "user_id": f"'session:' || nullif(trim({session}), '')",
            "ts": iso_timestamp(q("timestamp")),
            "ts_raw": q("timestamp"),
            "session_id": f"nullif(trim({session}), '')",
            "item_id": f"nullif(trim({q('item_id')}), '')",
        }
        if "category" in columns:
            cat = f"trim({q('category')})"
            # 'S' marks a special offer, 1-12 a category, longer numbers a brand, '0' nothing.
            out["event_type"] = "'click'"
            out["category"] = f"CASE WHEN {cat} SIMILAR TO '[1-9][0-9]?' THEN {cat} END"
            out["brand"] = f"CASE WHEN length({cat}) > 2 AND {cat} SIMILAR TO '[0-9]+' THEN {cat} END"
            out["properties"] = json_object({"special_offer": f"CASE WHEN {cat} = 'S' THEN 'true' END"})
        else:
            out["event_type"] = "'buy'"
            out["price"] = f"nullif(trim({q('price')}), '')"
            out["quantity"] = f"nullif(trim({q('quantity')}), '')"
        return out
