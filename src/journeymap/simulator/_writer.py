"""Writes event chunks as REES46-style CSV or typed Parquet, with the same columns in both.

Product and session attributes are looked up by index with Arrow `take`, and CSV lines are
joined by Arrow compute kernels, so no per-row Python runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._catalog import Catalog
from ._engine import CONSTANT_PROPERTIES, EVENT_TYPES, PURCHASE, REVIEW, SEARCH, EventChunk
from ._personas import CHANNELS, DEVICES
from ._schedule import Schedule

SCHEMA = pa.schema([
    ("event_time", pa.timestamp("ms", tz="UTC")),
    ("event_type", pa.string()),
    ("product_id", pa.int64()),
    ("category_id", pa.int64()),
    ("category_code", pa.string()),
    ("brand", pa.string()),
    ("price", pa.float64()),
    ("user_id", pa.int64()),
    ("user_session", pa.string()),
    ("product_name", pa.string()),
    ("quantity", pa.int32()),
    ("channel", pa.string()),
    ("device", pa.string()),
    ("query", pa.string()),
    ("text", pa.string()),
    ("rating", pa.int8()),
    ("properties", pa.string()),
])
COLUMNS = tuple(SCHEMA.names)  # the REES46 layout first, then the extra columns
FIRST_USER_ID = 500_000_000  # user ids look like REES46's 9-digit ids
_PROPERTIES = np.array([CONSTANT_PROPERTIES.get(c) for c in range(len(EVENT_TYPES))], dtype=object)


def _csv_escape(values: pa.Array) -> pa.Array:
    """RFC 4180 quoting, applied only to values that hold a quote, a comma or a line break."""
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(pc.match_substring_regex(values, '[",\r\n]'), quoted, values)


class _Columns:
    """Typed per-event columns shared by both formats."""

    def __init__(self, catalog: Catalog, schedule: Schedule) -> None:
        codes = catalog.leaf_codes
        leaf = catalog.leaf
        self.product_id = pa.array(catalog.product_id)
        self.category_id = pa.array(catalog.category_id[leaf])
        self.category_code = pa.array([codes[i] for i in leaf.tolist()])
        self.brand = pa.array(catalog.brand)
        self.price = pa.array(catalog.price_cents / 100.0)
        self.product_name = pa.array(catalog.name)
        self.user_id = schedule.user.astype(np.int64) + FIRST_USER_ID
        # Built from the fixed-width bytes directly: pa.array() would split a large one into chunks.
        width, n = schedule.uuid.itemsize, len(schedule.uuid)
        offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
        self.user_session = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(schedule.uuid.tobytes()))
        self.channel = pa.array(CHANNELS).take(pa.array(schedule.channel))
        self.device = pa.array(DEVICES).take(pa.array(schedule.device))
        self.event_type = pa.array(EVENT_TYPES)

    def typed(self, chunk: EventChunk) -> dict[str, pa.Array]:
        product = pa.array(chunk.product, mask=chunk.product < 0)
        session = pa.array(chunk.session)
        code = chunk.code
        properties = np.where(code == PURCHASE, chunk.payload, _PROPERTIES[code])
        return {
            "event_time": pa.array(chunk.time * 1000, pa.timestamp("ms", tz="UTC")),
            "event_type": self.event_type.take(pa.array(code)),
            "product_id": self.product_id.take(product),
            "category_id": self.category_id.take(product),
            "category_code": self.category_code.take(product),
            "brand": self.brand.take(product),
            "price": self.price.take(product),
            "user_id": pa.array(self.user_id[chunk.session]),
            "user_session": self.user_session.take(session),
            "product_name": self.product_name.take(product),
            "quantity": pa.array(chunk.quantity, pa.int32(), mask=chunk.quantity == 0),
            "channel": self.channel.take(session),
            "device": self.device.take(session),
            "query": pa.array(np.where(code == SEARCH, chunk.payload, None), pa.string()),
            "text": pa.array(np.where(code == REVIEW, chunk.payload, None), pa.string()),
            "rating": pa.array(chunk.rating, pa.int8(), mask=chunk.rating == 0),
            "properties": pa.array(properties, pa.string()),
        }


class ParquetWriter:
    def __init__(self, path: Path, catalog: Catalog, schedule: Schedule) -> None:
        self._columns = _Columns(catalog, schedule)
        self._writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")

    def write(self, chunk: EventChunk) -> None:
        self._writer.write_table(pa.table(self._columns.typed(chunk), schema=SCHEMA))

    def close(self) -> None:
        self._writer.close()


class CsvWriter:
    def __init__(self, path: Path, catalog: Catalog, schedule: Schedule) -> None:
        self._columns = _Columns(catalog, schedule)
        c = self._columns
        # Text forms of the looked-up columns, made once rather than per chunk.
        self._price_text = pa.array([f"{p // 100}.{p % 100:02d}" for p in catalog.price_cents.tolist()])
        self._name_text = _csv_escape(c.product_name)
        self._brand_text = _csv_escape(c.brand)
        self._clock = pa.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} UTC" for s in range(86400)])
        self._file: BinaryIO = open(path, "wb")
        self._file.write((",".join(COLUMNS) + "\n").encode())

    def write(self, chunk: EventChunk) -> None:
        typed = self._columns.typed(chunk)
        product = pa.array(chunk.product, mask=chunk.product < 0)
        day = chunk.time // 86400
        first_day = int(day[0])
        dates = pa.array(np.arange(first_day, int(day[-1]) + 1).astype("datetime64[D]").astype(str))
        event_time = pc.binary_join_element_wise(
            dates.take(pa.array(day - first_day)), self._clock.take(pa.array(chunk.time % 86400)), " "
        )
        cols = [
            event_time,
            typed["event_type"],
            pc.cast(typed["product_id"], pa.string()),
            pc.cast(typed["category_id"], pa.string()),
            typed["category_code"],
            self._brand_text.take(product),
            self._price_text.take(product),
            pc.cast(typed["user_id"], pa.string()),
            typed["user_session"],
            self._name_text.take(product),
            pc.cast(typed["quantity"], pa.string()),
            typed["channel"],
            typed["device"],
            _csv_escape(typed["query"]),
            _csv_escape(typed["text"]),
            pc.cast(typed["rating"], pa.string()),
            _csv_escape(typed["properties"]),
        ]
        rows = pc.binary_join_element_wise(*cols, ",", null_handling="replace", null_replacement="")
        lines = pc.binary_join_element_wise(rows, "", "\n")
        # The lines lie back to back in the array's data buffer: that buffer is the CSV text.
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
        self._file.write(memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]])

    def close(self) -> None:
        self._file.close()


WRITERS = {"rees46": CsvWriter, "parquet": ParquetWriter}
