"""Diginetica (CIKM Cup 2016): train-item-views.csv and train-purchases.csv, ';'-separated.

Most sessions are anonymous (user id NA): such a session is its own user, ``session:<id>``.
Times are a date plus a millisecond offset, good for ordering within a session.
"""

from __future__ import annotations

from collections.abc import Sequence

from journeymap.events.adapters._base import Adapter, Role, json_object, q, strptime_any

VIEWS = frozenset({"session_id", "user_id", "item_id", "timeframe", "eventdate"})
PURCHASES = frozenset({"sessionId", "userId", "timeframe", "eventdate", "ordernumber", "itemId"})


class Diginetica(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="diginetica",
            title="Diginetica CIKM Cup 2016 item views / purchases",
            roles=(Role("item-views", VIEWS), Role("purchases", PURCHASES)),
            user_columns=("user_id", "userId"),
            event_map={"view": "product_view", "purchase": "purchase"},
            ts_expected="eventdate 'YYYY-MM-DD' plus timeframe milliseconds",
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        views = "session_id" in columns
        session, user, item = ("session_id", "user_id", "item_id") if views else ("sessionId", "userId", "itemId")
        day = strptime_any(q("eventdate"), ["%Y-%m-%d"])
        offset = f"TRY_CAST(trim({q('timeframe')}) AS BIGINT)"
        out = {
            "user_id": (
                f"CASE WHEN trim(coalesce({q(user)}, '')) IN ('', 'NA') "
                f"THEN 'session:' || nullif(trim({q(session)}), '') ELSE trim({q(user)}) END"
            ),
            "ts": f"CASE WHEN {offset} BETWEEN 0 AND 8640000000 THEN {day} + to_milliseconds({offset}) END",
            "ts_raw": f"{q('eventdate')} || ' +' || coalesce({q('timeframe')}, '') || 'ms'",
            "event_type": "'view'" if views else "'purchase'",
            "session_id": f"nullif(trim({q(session)}), '')",
            "item_id": f"nullif(trim({q(item)}), '')",
        }
        if not views:
            out["properties"] = json_object({"order_number": f"nullif(trim({q('ordernumber')}), '')"})
        return out
