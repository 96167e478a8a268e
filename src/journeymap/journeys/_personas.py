"""Personas: users clustered by how their journeys look, each cluster described in words.

One SQL query turns every user's journeys into behaviour features (devices, channels, search,
session depth, visits, price level, buying and when); counts are log-compressed and standardised, shares kept as shares, and
clustered with k-means, k chosen by silhouette. Retentioneering's journey clustering is the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Journeys, jsonable, lit, require_events

CRITERION = "silhouette"
SILHOUETTE_SAMPLE = 4000  # silhouette is O(n^2): candidate k are fitted and scored on a sample
CLIP = 4.0  # scaled values beyond +-CLIP are clipped, so a few extreme users cannot own a cluster
# Relative weights after scaling. A persona is first who shops where and on what: the device,
# channel and category families each weigh like two features. Outcomes (carting, buying) are
# what a persona does now and then, so single 0/1 outcomes of one-visit users do not split
# otherwise alike users; promotion exposure is the shop's doing more than the shopper's.
FAMILY_WEIGHT = 2.0
WEIGHTS = {
    "carts_per_session": 0.5, "cart_abandon_rate": 0.5, "purchases_per_session": 0.5,
    "first_visit_purchase": 0.5, "return_visit_purchase": 0.5, "purchases": 0.5,
    "bounce_rate": 0.5, "days_active": 0.5, "promotion_rate": 0.25, "promotion_purchase": 0.25,
}
_FAMILIES = ("device_", "channel_", "category_")
TOP_LEVELS = 8  # devices, channels and top-level categories kept as their own share features

# Feature -> (phrase when high, phrase when low, short tag when high, short tag when low, unit).
# Units: "share" of sessions/views/users (printed as %), "num" (printed with one decimal).
_BASE: dict[str, tuple[str, str, str, str, str]] = {
    "sessions": ("visits often", "visits once", "frequent", "one-visit", "num"),
    "events_per_session": ("long sessions", "short sessions", "deep", "shallow", "num"),
    "views_per_session": ("views many products", "views few products", "browsing", "focused", "num"),
    "searches_per_session": ("searches a lot", "rarely searches", "searching", "non-searching", "num"),
    "search_rate": ("searches in most sessions", "rarely searches", "searching", "non-searching", "share"),
    "bounce_rate": ("often leaves without a product view", "almost always views a product", "bouncing",
                    "engaged", "share"),
    "carts_per_session": ("adds to cart often", "rarely adds to cart", "carting", "", "num"),
    "cart_abandon_rate": ("leaves carts behind", "rarely leaves carts behind", "cart-leaving", "", "share"),
    "purchases_per_session": ("buys in many sessions", "rarely buys", "buying", "non-buying", "share"),
    "first_visit_purchase": ("buys on the first visit", "does not buy on the first visit", "first-visit buyer",
                             "", "share"),
    "return_visit_purchase": ("buys on a later visit", "does not buy on a later visit", "returning buyer",
                              "", "share"),
    "relative_price": ("views pricier items than the category median", "views cheap items for the category",
                       "premium", "bargain", "num"),
    "days_active": ("active on many days", "active on one day", "regular", "", "num"),
    "reviews": ("writes reviews", "writes no reviews", "reviewing", "", "num"),
    "promotion_rate": ("sees promotions often", "rarely sees promotions", "promotion-seeing", "", "share"),
    "promotion_purchase": ("buys after a promotion", "does not buy after a promotion", "promotion buyer", "",
                           "share"),
}


@dataclass
class PersonasResult:
    """Clusters of users with their features, sizes, conversion and the users in each."""

    k: int
    criterion: str
    scores: dict[int, float]
    features: pd.DataFrame  # one row per user (index user_id), raw feature values
    labels: np.ndarray  # persona id per row of `features`
    converted: np.ndarray  # bool per row: the user bought at least once
    personas: list[dict[str, Any]]
    feature_notes: dict[str, str] = field(default_factory=dict)
    fitted_on: int = 0  # users the clustering was fitted on (all, or a sample when max_users is set)
    excluded: int = 0  # users left out (always 0: every user with an event gets a persona)

    def users(self, persona: int) -> list[str]:
        """The pseudonymous users in one persona, sorted (saveable as a segment)."""
        if persona not in range(self.k):
            raise JourneymapError(f"There is no persona {persona}; the ids run from 0 to {self.k - 1}.")
        return sorted(self.features.index[self.labels == persona])

    def assignments(self) -> pd.DataFrame:
        """user_id -> persona id and name, one row per user."""
        names = [p["name"] for p in self.personas]
        return pd.DataFrame({"user_id": self.features.index, "persona": self.labels,
                             "name": [names[i] for i in self.labels]})

    def adjusted_rand(self, truth: dict[str, Any]) -> float:
        """Adjusted Rand index of the personas against known labels (user_id -> label), on shared users."""
        from sklearn.metrics import adjusted_rand_score

        mine = dict(zip(self.features.index, self.labels.tolist()))
        shared = [u for u in mine if u in truth]
        if not shared:
            raise JourneymapError("None of the users with known labels are among the clustered users; "
                                  "check that the truth is keyed by the stored (pseudonymous) user ids.")
        return float(adjusted_rand_score([str(truth[u]) for u in shared], [mine[u] for u in shared]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "criterion": self.criterion,
            "scores": {int(k): jsonable(round(v, 4)) for k, v in self.scores.items()},
            "users": len(self.features),
            "fitted_on": self.fitted_on,
            "excluded": self.excluded,
            "personas": [{key: p[key] for key in ("id", "name", "description", "size", "share",
                                                  "conversion_rate", "mean_sessions", "features")}
                         for p in self.personas],
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per persona: id, name, size, share, conversion rate, mean sessions, description."""
        return pd.DataFrame([{key: p[key] for key in ("id", "name", "size", "share", "conversion_rate",
                                                      "mean_sessions", "description")}
                             for p in self.personas])

    def zscores(self) -> pd.DataFrame:
        """Persona x feature: how far each persona's mean lies from the overall mean, in standard deviations."""
        return pd.DataFrame([p["zscores"] for p in self.personas],
                            index=[f"{p['id']}: {p['name']}" for p in self.personas])

    def figure(self):
        """Heatmap of each persona's feature z-scores against all users."""
        import plotly.graph_objects as go

        z = self.zscores()
        fig = go.Figure(go.Heatmap(z=z.values, x=list(z.columns), y=list(z.index), zmid=0,
                                   colorscale="RdBu_r", colorbar={"title": "z vs all"}))
        fig.update_layout(title=f"Personas (k={self.k}, by {self.criterion}): features against all users",
                          xaxis={"tickangle": -45})
        return fig


def personas(journeys: Journeys, k: int | None = None, k_range: tuple[int, int] = (3, 10),
             features: str | list[str] = "default", random_state: int = 0,
             max_users: int | None = None) -> PersonasResult:
    """Cluster users by their journeys into personas.

    k: a fixed number of personas, or None to choose it in ``k_range`` (inclusive) by the mean
    silhouette (candidates fitted and scored on a sample of at most 4,000 users). features: "default" (all) or a list of
    feature names. max_users: fit on a random sample of this many users and assign every user.
    """
    if k is not None and k < 2:
        raise JourneymapError(f"personas() needs k of at least 2 to split users into groups. Got {k}.")
    lo, hi = k_range
    if k is None and not (2 <= lo <= hi):
        raise JourneymapError(f"The k range of personas() must run from at least 2 upwards, like (3, 10). "
                              f"Got ({lo}, {hi}).")
    if max_users is not None and max_users < 2:
        raise JourneymapError(f"max_users of personas() must be at least 2. Got {max_users}.")
    require_events(journeys)
    table, notes = user_features(journeys)
    if features != "default":
        wanted = [features] if isinstance(features, str) else list(features)
        unknown = [f for f in wanted if f not in table.columns]
        if unknown:
            raise JourneymapError(f"Unknown persona feature(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(table.columns)}.")
        model_cols = wanted
    else:
        model_cols = list(table.columns)
    if len(table) < 3:
        raise JourneymapError(f"Personas need at least 3 users with events after the filters; found {len(table)}.")

    x = _scale(table[model_cols])
    x = x[:, x.std(axis=0) > 0]
    if x.shape[1] == 0:
        raise JourneymapError("Every user looks the same on the chosen features, so there is nothing to "
                              "cluster; widen the filters or choose other features.")
    rng = np.random.default_rng(random_state)
    fit_rows = np.arange(len(x))
    if max_users is not None and len(x) > max_users:
        fit_rows = np.sort(rng.choice(len(x), max_users, replace=False))
    fit_x = x[fit_rows]
    distinct = len(np.unique(fit_x.round(9), axis=0))

    scores: dict[int, float] = {}
    if k is None:
        ks = [c for c in range(lo, hi + 1) if c <= min(distinct, len(fit_x) - 1)]
        if not ks:
            raise JourneymapError(f"Only {distinct} distinct user behaviours, too few for the k range "
                                  f"({lo}, {hi}); pass a smaller k range or a fixed k.")
        # Each candidate k is fitted on a sample (the final model with the chosen k sees every
        # fitted user) and scored by the mean silhouette on that sample.
        sample_idx = (np.arange(len(fit_x)) if len(fit_x) <= SILHOUETTE_SAMPLE
                      else np.sort(rng.choice(len(fit_x), SILHOUETTE_SAMPLE, replace=False)))
        from sklearn.metrics import silhouette_score

        for c in ks:
            labels_c = _kmeans(fit_x[sample_idx], c, random_state, n_init=4).labels_
            scores[c] = (float(silhouette_score(fit_x[sample_idx], labels_c))
                         if len(set(labels_c.tolist())) > 1 else float("nan"))
        best = max((c for c in ks if scores[c] == scores[c]), key=lambda c: scores[c], default=ks[0])
        model = _kmeans(fit_x, best, random_state)
    else:
        if k > distinct:
            raise JourneymapError(f"Only {distinct} distinct user behaviours, fewer than k={k}; pass a smaller k.")
        model = _kmeans(fit_x, k, random_state)
        best = k
    labels = _relabel(model.predict(x), table["sessions"].to_numpy())
    converted = table["purchases"].to_numpy() > 0 if "purchases" in table else np.zeros(len(table), bool)
    described = _describe(table.drop(columns=["purchases"], errors="ignore"), labels, best, converted)
    return PersonasResult(best, CRITERION if k is None else "fixed k", scores, table, labels, converted,
                          described, notes, fitted_on=len(fit_rows))


def user_features(journeys: Journeys) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per-user behaviour features (index user_id), computed in one set-based query.

    The levels of device, channel and top-level category (their most common few) are read first,
    so that each becomes a share column of the one feature query.
    """
    levels = journeys.query("""
        SELECT 'device' AS kind, device AS level, count(DISTINCT session_key) AS n FROM journey_events
         WHERE device IS NOT NULL GROUP BY 1, 2
        UNION ALL
        SELECT 'channel', channel, count(DISTINCT session_key) FROM journey_events
         WHERE channel IS NOT NULL GROUP BY 1, 2
        UNION ALL
        SELECT 'category', split_part(category, '.', 1), count(*) FROM journey_events
         WHERE event_type = 'product_view' AND category IS NOT NULL GROUP BY 1, 2
        ORDER BY kind, n DESC, level""").fetchall()
    top: dict[str, list[str]] = {"device": [], "channel": [], "category": []}
    for kind, level, _ in levels:
        if len(top[kind]) < TOP_LEVELS:
            top[kind].append(level)

    def col(kind: str, level: str) -> str:
        return '"' + f"{kind}_{level}".replace('"', "") + '"'

    device_cols = "".join(f", avg((device = {lit(v)})::INT) AS {col('device', v)}" for v in top["device"])
    channel_cols = "".join(f", avg((channel = {lit(v)})::INT) AS {col('channel', v)}" for v in top["channel"])
    category_cols = "".join(
        f", avg((split_part(category, '.', 1) = {lit(v)})::INT) AS {col('category', v)}" for v in top["category"])
    category_select = "".join(f", coalesce(c.{col('category', v)}, 0) AS {col('category', v)}"
                              for v in top["category"])

    sql = f"""
    , sess AS (
        SELECT user_id, session_key, min(ts) AS start, count(*) AS n,
               mode(device) AS device, mode(channel) AS channel,
               count(*) FILTER (WHERE event_type = 'product_view') AS views,
               count(*) FILTER (WHERE event_type = 'search') AS searches,
               count(*) FILTER (WHERE event_type = 'add_to_cart') AS carts,
               count(*) FILTER (WHERE event_type = 'purchase') > 0 AS bought,
               count(*) FILTER (WHERE event_type = 'promotion_view') > 0 AS promoted
        FROM journey_events GROUP BY user_id, session_key
    ), numbered AS (
        SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY start, session_key) AS visit FROM sess
    ), per_session AS (
        SELECT user_id, count(*) AS sessions, avg(n) AS events_per_session, avg(views) AS views_per_session,
               avg(searches) AS searches_per_session, avg((searches > 0)::INT) AS search_rate,
               avg((views = 0)::INT) AS bounce_rate, avg(carts) AS carts_per_session,
               coalesce(avg((NOT bought)::INT) FILTER (WHERE carts > 0), 0) AS cart_abandon_rate,
               avg(bought::INT) AS purchases_per_session,
               max((bought AND visit = 1)::INT) AS first_visit_purchase,
               max((bought AND visit > 1)::INT) AS return_visit_purchase,
               avg(promoted::INT) AS promotion_rate,
               max((bought AND promoted)::INT) AS promotion_purchase
               {device_cols}{channel_cols}
        FROM numbered GROUP BY user_id
    ), item_price AS (
        -- each item's price rank within its category (0 cheapest .. 1 dearest), item-weighted
        SELECT item_id, category, percent_rank() OVER (PARTITION BY category ORDER BY price) AS price_rank
        FROM (SELECT item_id, category, median(price) AS price FROM journey_events
              WHERE event_type = 'product_view' AND price > 0 AND item_id IS NOT NULL GROUP BY 1, 2)
    ), per_view AS (
        SELECT user_id, avg(price_rank) AS relative_price {category_cols}
        FROM journey_events JOIN item_price USING (item_id, category)
        WHERE event_type = 'product_view' GROUP BY user_id
    ), per_event AS (
        SELECT user_id, count(DISTINCT ts::DATE) AS days_active,
               count(*) FILTER (WHERE event_type = 'review') AS reviews,
               count(*) FILTER (WHERE event_type = 'purchase') AS purchases
        FROM journey_events GROUP BY user_id
    )
    SELECT s.*, coalesce(c.relative_price, 0.5) AS relative_price {category_select},
           e.days_active, e.reviews, e.purchases
    FROM per_session s JOIN per_event e USING (user_id) LEFT JOIN per_view c USING (user_id)
    ORDER BY user_id"""
    table = journeys.query(sql).df()
    table = table.set_index("user_id")
    for c in table.columns:
        table[c] = table[c].astype(float)
    notes = {
        "relative_price": "mean log of viewed price over its category's median price (0 = typical)",
        "device_*": "share of the user's sessions on each device",
        "channel_*": "share of the user's sessions from each channel",
        "category_*": "share of the user's product views in each top-level category",
    }
    return table, notes


_COUNTS = ("sessions", "events_per_session", "views_per_session", "searches_per_session", "carts_per_session",
           "days_active", "reviews")


def _scale(table: pd.DataFrame) -> np.ndarray:
    """Put features on one footing: counts log1p'd and standardised, shares kept as shares.

    Shares already share a unit (a 0-1 fraction; doubled so a full swing weighs about two
    standard deviations). Dividing a rare share by its tiny standard deviation would let, say, the
    few reviewers own a cluster. Each family of share columns (devices, channels, categories)
    is divided by the square root of its size so a family weighs alike whatever its number of
    levels, then weighted by FAMILY_WEIGHT; outcome and exposure features get WEIGHTS.
    """
    families: dict[str, int] = {}
    for c in table.columns:
        family = c.split("_")[0] if c.startswith(_FAMILIES) else c
        families[family] = families.get(family, 0) + 1
    columns = []
    for c in table.columns:
        v = table[c].to_numpy(float)
        if c in _COUNTS or c == "relative_price":
            v = np.log1p(v) if c in _COUNTS else v
            std = v.std()
            v = (v - np.median(v)) / (std if std > 0 else 1.0)
        else:
            v = 2.0 * v
        if c.startswith(_FAMILIES):
            family = c.split("_")[0]
            v = v / np.sqrt(families[family]) * FAMILY_WEIGHT
        else:
            v = v * WEIGHTS.get(c, 1.0)
        columns.append(np.clip(v, -CLIP, CLIP))
    return np.column_stack(columns)


def _kmeans(x: np.ndarray, k: int, random_state: int, n_init: int = 10):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(x)


def _relabel(labels: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """Persona ids by size, largest first, so ids do not depend on k-means' arbitrary numbering."""
    ids = np.unique(labels)
    order = sorted(ids, key=lambda i: (-(labels == i).sum(), sessions[labels == i].mean(), i))
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping[v] for v in labels.tolist()], dtype=int)


def _phrase(feature: str) -> tuple[str, str, str, str, str]:
    if feature in _BASE:
        return _BASE[feature]
    kind, _, level = feature.partition("_")
    if kind == "device":
        return (f"mostly {level}", f"rarely {level}", level, f"non-{level}", "share")
    if kind == "channel":
        nice = level.replace("_", " ")
        return (f"often arrives via {nice}", f"rarely arrives via {nice}", f"{nice}-led", "", "share")
    if kind == "category":
        return (f"views {level} a lot", f"rarely views {level}", level, "", "share")
    return (f"high {feature}", f"low {feature}", feature, "", "num")


def _fmt(value: float, unit: str, feature: str) -> str:
    if unit == "share":
        of = ("sessions" if feature.startswith(("device_", "channel_")) or feature.endswith(("_rate", "_session"))
              else "views" if feature.startswith("category_") else "users")
        return f"{value:.0%} of {of}"
    return f"{value:.2f}" if abs(value) < 1 else f"{value:.1f}"


def _describe(table: pd.DataFrame, labels: np.ndarray, k: int, converted: np.ndarray) -> list[dict[str, Any]]:
    overall = table.mean()
    std = table.std(ddof=0).replace(0, np.nan)
    out = []
    for pid in range(k):
        members = labels == pid
        means = table[members].mean()
        z = ((means - overall) / std).fillna(0.0)
        ranked = z.sort_values()
        highs = [f for f in ranked.index[::-1][:3] if z[f] > 0.25]
        lows = [f for f in ranked.index[:3] if z[f] < -0.25]
        words, tags = [], []
        for f in sorted(highs + lows, key=lambda f: -abs(z[f])):
            high, low, tag_high, tag_low, unit = _phrase(f)
            up = z[f] > 0
            words.append(f"{high if up else low} ({_fmt(means[f], unit, f)} vs {_fmt(overall[f], unit, f)} overall)")
            tag = tag_high if up else tag_low
            if tag and tag not in tags:
                tags.append(tag)
        name = " ".join(tags[:2]) or "typical"
        conv = float(converted[members].mean())
        out.append({
            "id": pid,
            "name": name,
            "description": "; ".join(words) or "close to the average user on every feature",
            "size": int(members.sum()),
            "share": round(float(members.mean()), 4),
            "conversion_rate": round(conv, 4),
            "converted": int(converted[members].sum()),
            "mean_sessions": round(float(table.loc[members, "sessions"].mean()), 3),
            "features": {f: jsonable(round(float(means[f]), 4)) for f in table.columns},
            "zscores": {f: round(float(z[f]), 3) for f in table.columns},
            "distinguishing": {f: round(float(z[f]), 3) for f in highs + lows},
        })
    return out
