"""One user's profile as a typed object, looked up by pseudonym or by the raw id from the shop's data."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from journeymap.config import Settings
from journeymap.exceptions import ConfigError, JourneymapError, StoreError
from journeymap.store import Store


@dataclass(frozen=True)
class Affinity:
    """Interest in a category or brand: ``weight`` is the decayed event weight at as_of (a view
    today counts 1, a purchase 5, halving every half-life); ``share`` its part of all the user's."""

    name: str
    weight: float
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": round(self.weight, 6), "share": round(self.share, 6)}


@dataclass(frozen=True)
class UserProfile:
    """Everything the profiles table knows about one user, as of ``as_of``.

    Counts cover events up to as_of. ``purchases`` are orders (sessions with a purchase);
    ``frequency`` is BG/NBD's repeat purchase days. Model fields (embedding, propensities) come
    from a behaviour model (``score_profiles``, ``journeymap profiles --model M``), None until then.
    """

    user: str  # the pseudonym
    as_of: datetime
    summary: str
    lifecycle: str
    segment: str | None
    segment_id: int | None
    first_seen: datetime
    last_seen: datetime
    tenure_days: float
    recency_days: float
    events: int
    sessions: int
    sessions_7d: int
    sessions_30d: int
    active_days: int
    product_views: int
    products_viewed: int
    cart_adds: int
    products_carted: int
    checkouts: int
    purchases: int
    items_bought: int
    monetary: float | None
    avg_order_value: float | None
    first_purchase: datetime | None
    last_purchase: datetime | None
    days_since_purchase: float | None
    frequency: int | None
    r_score: int | None
    f_score: int | None
    m_score: int | None
    rfm: str | None
    expected_purchases_90d: float | None
    probability_alive: float | None
    clv_1y: float | None
    clv_note: str | None
    top_categories: list[Affinity]
    top_brands: list[Affinity]
    price_percentile: float | None
    price_band: str | None
    preferred_device: str | None
    preferred_channel: str | None
    preferred_weekday: str | None
    preferred_hour: int | None
    mean_session_seconds: float
    mean_session_events: float
    bounce_rate: float
    funnel_stage: str
    last_session_start: datetime
    searches: int
    top_searches: list[dict[str, Any]]
    reviews: int
    mean_rating: float | None
    embedding: list[float] | None
    purchase_propensity: float | None
    churn_propensity: float | None
    # What the user engages with, in the item-text space (journeymap.items.user_content_vectors):
    # there for any user with item events, whether or not a sequence model has seen them.
    # Computed on request (profile(..., content=True)); None otherwise or without item vectors.
    content_vector: list[float] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any], as_of: datetime) -> UserProfile:
        values = {k: _clean(v) for k, v in row.items()}
        values["user"] = values.pop("user_id")
        for key in ("top_categories", "top_brands"):
            values[key] = [Affinity(a["name"], float(a["weight"]), float(a["share"])) for a in values[key] or []]
        values["top_searches"] = [dict(s) for s in values["top_searches"] or []]
        known = {f.name for f in fields(cls)}
        return cls(as_of=as_of, **{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO text, affinities as {name, weight, share}."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat(sep=" ")
            elif f.name in ("top_categories", "top_brands"):
                value = [a.to_dict() for a in value]
            out[f.name] = value
        return out


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def pseudonym_of(raw_id: str, settings: Settings | None = None, store_path: str | Path | None = None) -> str:
    """The pseudonym ingest stored for a raw user id, with the configured secret.

    With ``store_path``, also checks that the secret is the one the store was written with, so a
    wrong secret is reported as such rather than as an unknown user.
    """
    from journeymap.privacy import Pseudonymizer

    settings = settings or Settings.load()
    pseudonymizer = Pseudonymizer(settings.require_secret())
    if store_path is not None:
        with Store(store_path, read_only=True) as st:
            known = st.meta("secret_fingerprint")
        if known is not None and known != pseudonymizer.fingerprint():
            raise ConfigError(
                f"The configured secret is not the one {store_path} was written with, so raw ids cannot be "
                "matched to its users. Set JOURNEYMAP_SECRET (or `secret` in journeymap.toml) to the store's secret.")
    return pseudonymizer(str(raw_id))


def profile(store_path: str | Path, user: str | None = None, *, raw_id: str | None = None,
            settings: Settings | None = None, content: bool = False, encoder: Any = None) -> UserProfile:
    """One user's profile: ``user`` is the stored pseudonym, or give ``raw_id`` (the id in the
    shop's data) to have it pseudonymized with the configured secret first. ``content`` adds the
    user's content vector (item vectors of ``encoder``, default the multilingual text encoder)."""
    if (user is None) == (raw_id is None):
        raise JourneymapError("profile() takes either a pseudonym (user=...) or a raw id (raw_id=...), not both or neither.")
    if raw_id is not None:
        user = pseudonym_of(raw_id, settings, store_path)
    from journeymap.profiles._build import has_profiles, profiles_meta

    path = Path(store_path)
    with Store(path, read_only=True) as st:
        con = st.con
        if not has_profiles(con):
            raise StoreError(f"{path} has no profiles yet; build them with `journeymap profiles --store {path}`.")
        rel = con.sql("SELECT * FROM profiles WHERE user_id = $user", params={"user": user})
        rows = rel.to_arrow_table().to_pylist()
        meta = profiles_meta(con) or {}
        if not rows:
            has_events = con.execute("SELECT count(*) FROM events WHERE user_id = ?", [user]).fetchall()[0][0]
    who = f"raw id '{raw_id}' (pseudonym {user})" if raw_id is not None else f"pseudonym '{user}'"
    if not rows:
        if has_events:
            raise JourneymapError(f"The user with {who} has events but no profile yet; update the profiles with "
                                  f"`journeymap profiles --store {path}`.")
        hint = "" if raw_id is not None else " If you have the id from the shop's data, look it up by raw id."
        raise JourneymapError(f"No user with {who} in {path}.{hint}")
    as_of = datetime.fromisoformat(meta["as_of"]) if "as_of" in meta else None
    result = UserProfile.from_row(rows[0], as_of)
    if content:
        from dataclasses import replace

        from journeymap.items import user_content_vectors

        ids, matrix = user_content_vectors(path, users=[user], encoder=encoder, as_of=as_of,
                                           half_life_days=meta.get("options", {}).get("half_life_days", 30.0))
        if ids:
            result = replace(result, content_vector=[round(float(v), 6) for v in matrix[0]])
    return result
