"""Keyed pseudonymization of user ids (HMAC-SHA256 with the shop's secret).

The raw id never reaches the store: ingest replaces it here, in memory, first. Holders of the
secret can map a raw id to its pseudonym (to look a customer up, or to erase them); nobody else can
invert or even test a guess, which a plain hash would allow.
"""

from __future__ import annotations

import hmac

import pyarrow as pa
import pyarrow.compute as pc

# 128 of HMAC-SHA256's 256 bits (truncation as in RFC 2104 section 5): collisions stay
# negligible for any shop's user count while the store's id column is half as large.
PSEUDONYM_HEX_CHARS = 32


def pseudonymize(raw_id: str | bytes, secret: str) -> str:
    """Return the pseudonym that ingest stores for ``raw_id`` under ``secret``."""
    return Pseudonymizer(secret)(raw_id)


class Pseudonymizer:
    """HMAC-SHA256 keyed with the secret, vectorised over Arrow arrays of raw ids."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode("utf-8")
        # Distinct user ids are far fewer than events; remembering recent ones saves most MACs.
        self._cache: dict[str | bytes, str] = {}

    def __call__(self, raw_id: str | bytes) -> str:
        data = raw_id.encode("utf-8") if isinstance(raw_id, str) else raw_id
        # One-shot hmac.digest runs in OpenSSL: several times faster than hmac.new().hexdigest().
        return hmac.digest(self._key, data, "sha256")[:PSEUDONYM_HEX_CHARS // 2].hex()

    def fingerprint(self) -> str:
        """A value that identifies the secret without revealing it (stored to catch a changed secret)."""
        return self("journeymap:secret-fingerprint")

    def array(self, values: pa.Array) -> pa.Array:
        """Pseudonymize an Arrow string/binary array; nulls stay null."""
        if len(values) == 0:
            return pa.array([], pa.string())
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = pc.dictionary_encode(values)
        cache = self._cache
        if len(cache) > 500_000:  # bounded: a log of millions of users must not grow memory
            cache.clear()
        out = []
        append = out.append
        for value in encoded.dictionary.to_pylist():
            pseudo = cache.get(value)
            if pseudo is None:
                pseudo = cache[value] = self(value)
            append(pseudo)
        return pc.take(pa.array(out, pa.string()), encoded.indices)
