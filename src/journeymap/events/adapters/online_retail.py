"""UCI Online Retail (and Online Retail II) invoice lines.

Each line is a purchase of one stock item; invoices whose number starts with 'C' are
cancellations and become ``refund`` events with the quantity made positive. Invoice dates carry
no zone (UK shop time): pass --timezone Europe/London to convert them; the default reads UTC.
"""

from __future__ import annotations

from collections.abc import Sequence

from journeymap.events.adapters._base import Adapter, Role, blank_to_null, json_object, q, strptime_any

V1 = frozenset({"InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"})
V2 = frozenset({"Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID"})


class OnlineRetail(Adapter):
    def __init__(self) -> None:
        super().__init__(
            name="online_retail",
            title="UCI Online Retail / Online Retail II invoice lines",
            roles=(Role("invoices", V1), Role("invoices-ii", V2)),
            user_columns=("CustomerID", "Customer ID"),
            event_map={"purchase": "purchase", "refund": "refund"},
            ts_expected="'YYYY-MM-DD HH:MM:SS' or 'MM/DD/YYYY HH:MM'",
            naive_ts=True,
        )

    def fields(self, columns: Sequence[str]) -> dict[str, str]:
        v1 = "InvoiceNo" in columns
        invoice, price, customer = (
            ("InvoiceNo", "UnitPrice", "CustomerID") if v1 else ("Invoice", "Price", "Customer ID")
        )
        inv = f"trim({q(invoice)})"
        cancelled = f"starts_with(upper({inv}), 'C')"
        qty = blank_to_null(q("Quantity"))
        props = {"invoice": blank_to_null(q(invoice))}
        if "Country" in columns:
            props["country"] = blank_to_null(q("Country"))
        return {
            # Spreadsheet exports write customer 17850 as "17850.0".
            "user_id": f"regexp_replace({blank_to_null(q(customer))}, '\\.0$', '')",
            "ts": strptime_any(q("InvoiceDate"), [
                "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
            ]),
            "ts_raw": q("InvoiceDate"),
            "event_type": f"CASE WHEN {cancelled} THEN 'refund' ELSE 'purchase' END",
            "session_id": f"nullif({inv}, '')",
            "item_id": blank_to_null(q("StockCode")),
            "item_name": blank_to_null(q("Description")),
            "price": blank_to_null(q(price)),
            "quantity": f"CASE WHEN {cancelled} THEN ltrim({qty}, '-') ELSE {qty} END",
            "properties": json_object(props),
        }
