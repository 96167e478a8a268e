"""RetailRocket events.csv: timestamp (Unix ms), visitorid, event, itemid, transactionid."""

from __future__ import annotations

from collections.abc import Sequence

from journeymap.events.adapters._base import Adapter, Role, blank_to_null, epoch, json_object, q


class RetailRocket(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="retailrocket",
            title="RetailRocket recommender system dataset, events.csv",
            roles=(Role("events", frozenset({"timestamp", "visitorid", "event", "itemid"})),),
            user_columns=("visitorid",),
            event_map={"view": "product_view", "addtocart": "add_to_cart", "transaction": "purchase"},
            ts_expected="Unix milliseconds",
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        props = {"transaction_id": blank_to_null(q("transactionid"))} if "transactionid" in columns else {}
        return {
            "user_id": blank_to_null(q("visitorid")),
            "ts": epoch(q("timestamp"), "ms"),
            "ts_raw": q("timestamp"),
            "event_type": f"trim({q('event')})",
            "item_id": blank_to_null(q("itemid")),
            "properties": json_object(props),
        }
