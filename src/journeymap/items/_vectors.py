"""Item vectors: each catalog item's text (or image) encoded once and cached in the store.

An item's text is its name, category path, brand and description where given. The cache is the
``item_vectors`` table, keyed by item and encoder name, with a hash of what was encoded: a refresh
encodes only items that are new or whose text changed, and commits batch by batch, so an
interrupted refresh keeps every batch it finished.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from journeymap.exceptions import JourneymapError, StoreError
from journeymap.items._encoders import checked_vectors, modality, resolve_encoder
from journeymap.store import Store

StoreLike = str | Path | Store
Progress = Callable[[int, int], None]  # (items encoded so far, items to encode)

VECTORS_SCHEMA = """
CREATE TABLE IF NOT EXISTS item_vectors (
    item_id     VARCHAR NOT NULL,   -- the shop's own item id, as in items
    encoder     VARCHAR NOT NULL,   -- the encoder's name: vectors of two encoders never mix
    modality    VARCHAR NOT NULL,   -- text | image
    text_hash   VARCHAR NOT NULL,   -- md5 of the text encoded; for an image, of its path, size and mtime
    vector      FLOAT[] NOT NULL,   -- L2-normalised
    computed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (item_id, encoder)
);
"""

# Keys of an event's properties that may carry an item's description or image file.
DESCRIPTION_KEYS = ("description",)
IMAGE_KEYS = ("image", "image_path", "image_url")
# Titles carry most of the meaning; a long description costs encoding time and dilutes the title.
MAX_DESCRIPTION_CHARS = 500


@dataclass
class RefreshResult:
    """What a refresh did: ``encoded`` items got a new vector, ``removed`` lost theirs."""

    store: str
    encoder: str
    modality: str
    items: int  # items holding a vector of this encoder after the refresh
    encoded: int
    removed: int
    missing: int = 0  # items naming an image file that is not there (image encoders only)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ItemVectors:
    """The cached vectors of one encoder: row i of ``matrix`` (n, dim) belongs to ``item_ids[i]``."""

    encoder: str
    item_ids: list[str]
    matrix: np.ndarray  # (n, dim) float32, rows L2-normalised, item ids in sorted order
    names: list[str | None] = field(default_factory=list)
    categories: list[str | None] = field(default_factory=list)
    brands: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)

    @cached_property
    def index(self) -> dict[str, int]:
        """item id -> row of ``matrix``."""
        return {item: i for i, item in enumerate(self.item_ids)}

    def vector(self, item_id: str) -> np.ndarray:
        row = self.index.get(str(item_id))
        if row is None:
            raise JourneymapError(f"Item '{item_id}' has no {self.encoder} vector.")
        return self.matrix[row]


# -- the text of an item -------------------------------------------------------------------------

def _tidy(expr: str) -> str:
    """A text part cleaned for the encoder, or NULL when it carries no word.

    Parts without a letter (numeric category ids, as in Taobao) say nothing to a text model.
    Titles in capitals are lower-cased: on the Online Retail sample that made the nearest
    neighbour of a mug another mug or cup for 39 of 49 mugs, against 33 in capitals.
    """
    spaced = f"regexp_replace(trim({expr}), '\\s+', ' ', 'g')"
    return (f"CASE WHEN regexp_matches({expr}, '\\p{{L}}') THEN "
            f"CASE WHEN {expr} = upper({expr}) THEN lower({spaced}) ELSE {spaced} END END")


def _columns(con: Any, table: str) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}


def _from_properties(keys: Sequence[str], alias: str) -> str:
    """Each item's latest non-empty value of the first of ``keys`` in its events' properties."""
    value = "coalesce(" + ", ".join(f"nullif(trim(properties->>'{k}'), '')" for k in keys) + ")"
    return (f"(SELECT item_id, arg_max({value}, ts) AS {alias} FROM events "
            f"WHERE item_id IS NOT NULL AND {value} IS NOT NULL GROUP BY item_id)")


def _text_sql(con: Any) -> str:
    """SQL for (item_id, name, category, brand, text, text_hash) of every item that has text."""
    own = "i.description" if "description" in _columns(con, "items") else "NULL"
    category = "replace(regexp_replace(i.category, '\\s*[.>/|]\\s*', ' > ', 'g'), '_', ' ')"
    description = f"left(coalesce({own}, d.description), {MAX_DESCRIPTION_CHARS})"
    return f"""(
        WITH texts AS (
            SELECT i.item_id, i.name, i.category, i.brand,
                   concat_ws('. ', {_tidy('i.name')}, {_tidy(category)}, {_tidy('i.brand')},
                             {_tidy(description)}) AS text
            FROM items i LEFT JOIN {_from_properties(DESCRIPTION_KEYS, 'description')} d USING (item_id)
        )
        SELECT *, md5(text) AS text_hash FROM texts WHERE text <> ''
    )"""


def _image_sql(con: Any) -> str:
    own = "i.image" if "image" in _columns(con, "items") else "NULL"
    return f"""(
        SELECT i.item_id, coalesce({own}, p.image) AS image
        FROM items i LEFT JOIN {_from_properties(IMAGE_KEYS, 'image')} p USING (item_id)
        WHERE coalesce({own}, p.image) IS NOT NULL
    )"""


def item_texts(store: StoreLike) -> Any:
    """The text each item is encoded from, as a DataFrame (item_id, name, text, text_hash)."""
    with _open(store, write=False) as st:
        return st.con.sql(
            f"SELECT item_id, name, text, text_hash FROM {_text_sql(st.con)} ORDER BY item_id").df()


# -- opening the store ---------------------------------------------------------------------------

@contextmanager
def _open(store: StoreLike, write: bool) -> Iterator[Store]:
    """The store, read-only unless ``write``; a Store object is used as it is and left open."""
    if isinstance(store, Store):
        if write and store.read_only:
            raise StoreError(
                f"The item vectors in {store.path} need computing, but the store is open read-only; "
                "pass a read-write Store (or its path).")
        yield store
        return
    try:
        opened = Store(store, read_only=not write, create=False)
    except StoreError as exc:
        # DuckDB refuses a second connection of another kind within one process.
        if "different configuration" not in str(exc):
            raise
        if write:
            raise StoreError(
                f"The item vectors in {store} need computing, but this process holds the store open "
                "read-only; close that connection, or pass a read-write Store instead of the path."
            ) from None
        opened = Store(store, create=False)  # this process holds it read-write: share that
    with opened:
        yield opened


def _has_vectors_table(con: Any) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'item_vectors'").fetchall()[0][0])


# -- refreshing ----------------------------------------------------------------------------------

@dataclass
class _Plan:
    stale: list[tuple[str, str, str]]  # (item_id, text or image path, hash)
    removed: list[str]
    items: int  # items that should hold a vector
    missing: int = 0


def _stored_hashes(con: Any, encoder: str) -> dict[str, str]:
    if not _has_vectors_table(con):
        return {}
    return dict(con.execute("SELECT item_id, text_hash FROM item_vectors WHERE encoder = ?", [encoder]).fetchall())


def _plan(st: Store, encoder: Any, kind: str, image_root: Path | None) -> _Plan:
    con = st.con
    if kind == "image":
        wanted, missing = _image_inputs(con, image_root or st.path.parent)
        stored = _stored_hashes(con, encoder.name)
        keep = {row[0] for row in wanted}
        return _Plan([row for row in wanted if stored.get(row[0]) != row[2]],
                     sorted(item for item in stored if item not in keep), len(wanted), missing)
    # Text: the comparison runs in DuckDB, so only new, changed and removed items reach Python.
    if _has_vectors_table(con):
        cached = f"(SELECT item_id, text_hash FROM item_vectors WHERE encoder = {_lit(encoder.name)})"
    else:
        cached = "(SELECT NULL::VARCHAR AS item_id, NULL::VARCHAR AS text_hash WHERE false)"
    rows = con.sql(f"""
        SELECT coalesce(t.item_id, v.item_id) AS item_id, t.text, t.text_hash, v.item_id IS NULL AS new
        FROM {_text_sql(con)} t FULL OUTER JOIN {cached} v USING (item_id)
        WHERE t.text_hash IS DISTINCT FROM v.text_hash ORDER BY 1
    """).fetchall()
    stale = [(item, text, digest) for item, text, digest, _ in rows if text is not None]
    removed = [item for item, text, _, _ in rows if text is None]
    new = sum(1 for _, text, _, is_new in rows if text is not None and is_new)
    stored = con.execute(f"SELECT count(*) FROM {cached}").fetchall()[0][0]
    return _Plan(stale, removed, stored - len(removed) + new)


def _image_inputs(con: Any, root: Path) -> tuple[list[tuple[str, str, str]], int]:
    """(item_id, resolved path, hash of path, size and mtime) of each image found, and how many were not."""
    found, missing = [], 0
    for item_id, image in con.sql(f"SELECT item_id, image FROM {_image_sql(con)} ORDER BY item_id").fetchall():
        path = Path(image) if Path(image).is_absolute() else root / image
        try:
            stat = path.stat() if "://" not in image else None
        except OSError:
            stat = None
        if stat is None:
            missing += 1  # a URL cannot be fetched offline; a missing file has no vector
            continue
        digest = hashlib.md5(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        found.append((item_id, str(path), digest))
    return found, missing


def refresh_item_vectors(
    store: StoreLike,
    encoder: Any = None,
    *,
    image_root: str | Path | None = None,
    batch_size: int = 512,
    progress: Progress | None = None,
) -> RefreshResult:
    """Encode the items that are new or changed since the last refresh, and drop vectors of items
    that lost their text; returns what was done.

    ``encoder``: None for the default multilingual text encoder, an encoder object or
    ``"module:Class"``. An image encoder reads each item's image file (an ``image`` column of the
    catalog, else an ``image``/``image_path``/``image_url`` event property; relative paths are
    taken from ``image_root``, default the store's folder). The store is opened read-only to check,
    and read-write only when something needs writing.
    """
    started = time.perf_counter()
    enc = resolve_encoder(encoder)
    kind = modality(enc)
    root = Path(image_root) if image_root is not None else None
    if batch_size < 1:
        raise JourneymapError(f"batch_size must be a positive number of items. Got {batch_size}.")
    with _open(store, write=False) as st:
        plan = _plan(st, enc, kind, root)
        path = str(st.path)
    if plan.stale or plan.removed:
        with _open(store, write=True) as st:
            plan = _plan(st, enc, kind, root)  # again: another process may have refreshed meanwhile
            _apply(st, enc, kind, plan, batch_size, progress)
    return RefreshResult(store=path, encoder=enc.name, modality=kind, items=plan.items,
                         encoded=len(plan.stale), removed=len(plan.removed), missing=plan.missing,
                         seconds=round(time.perf_counter() - started, 3))


def _apply(st: Store, encoder: Any, kind: str, plan: _Plan, batch_size: int, progress: Progress | None) -> None:
    con = st.con
    con.execute(VECTORS_SCHEMA)
    if plan.removed:
        with _transaction(con):
            con.execute("DELETE FROM item_vectors WHERE encoder = ? AND list_contains(?, item_id)",
                        [encoder.name, plan.removed])
    total = len(plan.stale)
    for start in range(0, total, batch_size):
        batch = plan.stale[start:start + batch_size]
        vectors = _encode_unique(encoder, [row[1] for row in batch])
        table = pa.table({"item_id": [r[0] for r in batch], "text_hash": [r[2] for r in batch],
                          "vector": _list_array(vectors)})
        with _transaction(con):
            con.from_arrow(table).query("__vectors", f"""
                INSERT INTO item_vectors
                SELECT item_id, {_lit(encoder.name)}, '{kind}', text_hash, vector::FLOAT[], now()::TIMESTAMP
                FROM __vectors
                ON CONFLICT (item_id, encoder) DO UPDATE SET
                    modality = excluded.modality, text_hash = excluded.text_hash,
                    vector = excluded.vector, computed_at = excluded.computed_at
            """).fetchall()
        if progress is not None:
            progress(min(start + batch_size, total), total)


def _encode_unique(encoder: Any, inputs: list[str]) -> np.ndarray:
    """Vectors for ``inputs``, encoding each distinct one once (catalogs repeat titles)."""
    unique = list(dict.fromkeys(inputs))
    vectors = checked_vectors(encoder, encoder.encode(unique), len(unique))
    if len(unique) == len(inputs):
        return vectors
    row = {value: i for i, value in enumerate(unique)}
    return vectors[[row[value] for value in inputs]]


@contextmanager
def _transaction(con: Any) -> Iterator[None]:
    con.begin()
    try:
        yield
    except BaseException:
        con.rollback()
        raise
    con.commit()


def _list_array(matrix: np.ndarray) -> pa.ListArray:
    n, dim = matrix.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1)))


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- reading -------------------------------------------------------------------------------------

def load_item_vectors(
    store: StoreLike,
    encoder: Any = None,
    *,
    refresh: bool = True,
    image_root: str | Path | None = None,
    progress: Progress | None = None,
) -> ItemVectors:
    """The item vectors of ``encoder`` (refreshed first unless ``refresh=False``), with names."""
    enc = resolve_encoder(encoder)
    if refresh:
        refresh_item_vectors(store, enc, image_root=image_root, progress=progress)
    with _open(store, write=False) as st:
        if not _has_vectors_table(st.con):
            return ItemVectors(enc.name, [], np.zeros((0, enc.dim), dtype=np.float32))
        table = st.con.sql("""
            SELECT v.item_id, i.name, i.category, i.brand, v.vector
            FROM item_vectors v LEFT JOIN items i USING (item_id)
            WHERE v.encoder = ? ORDER BY v.item_id
        """, params=[enc.name]).to_arrow_table()
    n = table.num_rows
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if n and flat.size != n * enc.dim:
        raise StoreError(
            f"The cached {enc.name} vectors do not all have {enc.dim} numbers; the encoder's dim changed "
            "but not its name. Give the encoder a new name, or delete its rows from item_vectors.")
    return ItemVectors(
        encoder=enc.name, item_ids=table.column("item_id").to_pylist(),
        matrix=flat.astype(np.float32, copy=False).reshape(n, enc.dim),
        names=table.column("name").to_pylist(), categories=table.column("category").to_pylist(),
        brands=table.column("brand").to_pylist())


def encode_texts(texts: Iterable[str], encoder: Any = None, *, batch_size: int = 512) -> np.ndarray:
    """Vectors (n, dim) for free text: search queries, review texts, anything not in the catalog.

    Uses the same encoder as the item vectors by default, so a query and an item compare by cosine
    (a dot product, rows being L2-normalised).
    """
    enc = resolve_encoder(encoder)
    if modality(enc) != "text":
        raise JourneymapError(f"encode_texts needs a text encoder; {enc.name!r} encodes images.")
    texts = [tidy_text(t) for t in texts]
    out = np.zeros((len(texts), enc.dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        out[start:start + len(batch)] = _encode_unique(enc, batch)
    return out


def tidy_text(text: str | None) -> str:
    """Free text cleaned as item text is: spaces collapsed, text in capitals lower-cased."""
    spaced = " ".join(str(text or "").split())
    return spaced.lower() if spaced == spaced.upper() else spaced
