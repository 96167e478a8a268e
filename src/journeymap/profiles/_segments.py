"""Segments: users clustered on their profile features (and item-text content vectors when there
are any), each segment named and described in words from what sets it apart.

Features are read from the ``profiles`` table (plus each user's category-group interest from
``profile_state``): activity counts log-compressed and standardised, rates and shares kept as
shares, preferred device and channel one-hot, and each family of share columns weighted like a
couple of features so that no family owns the clustering. k-means with k chosen by the mean
silhouette over ``k_range`` (fitted and scored on a sample of at most 4,000 users). Membership is
saved in the store (``profile_segments``, and the ``segment`` column of ``profiles``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from journeymap.exceptions import JourneymapError, StoreError
from journeymap.store import Store

CRITERION = "silhouette"
SILHOUETTE_SAMPLE = 3000  # silhouette is O(n^2): candidates are fitted and scored on a sample
FIT_SAMPLE = 20_000  # the final k-means is fitted on at most this many users, then assigns everyone
CLIP = 4.0  # scaled values beyond +-CLIP are clipped, so a few extreme users cannot own a segment
# Relative weights after scaling. A segment is first what people shop for (the category family
# weighs like four features, content vectors like two), then how they shop (channel 1.5, device
# 1: most users have one session, so the preferred device is an all-or-nothing column that would
# otherwise split every kind of shopper into a phone half and a desktop half), then how much:
# buying outcomes are rare 0/1-ish events that would split buyers off from otherwise alike users,
# so they weigh half. Tuned on the simulator's planted personas (ARI), see tests/profiles.
FAMILY_WEIGHTS = {"category": 4.0, "device": 1.0, "channel": 1.5, "content": 2.0}
WEIGHTS = {"purchases": 0.5, "monetary": 0.5, "products_carted": 0.5}
CONTENT_DIMS = 8  # content vectors are reduced to this many principal components
TOP_LEVELS = 10  # devices, channels and category groups kept as their own columns
META_KEY = "profile_segments"
# Counts: log1p, then standardised.
COUNTS = ("sessions", "mean_session_events", "products_viewed", "products_carted", "purchases", "monetary",
          "reviews", "active_days")
SHARES = ("bounce_rate", "price_percentile", "searches_per_session")  # 0..1 (searches per session capped at 1)
# Feature -> (phrase when high, phrase when low, unit).
PHRASES: dict[str, tuple[str, str, str]] = {
    "sessions": ("visits often", "visits once", "num"),
    "mean_session_events": ("long sessions", "short sessions", "num"),
    "products_viewed": ("views many products", "views few products", "num"),
    "products_carted": ("carts many products", "rarely carts", "num"),
    "purchases": ("buys repeatedly", "rarely buys", "num"),
    "monetary": ("spends a lot", "spends little", "money"),
    "searches_per_session": ("searches often", "rarely searches", "num"),
    "reviews": ("writes reviews", "writes no reviews", "num"),
    "active_days": ("active on many days", "active on few days", "num"),
    "bounce_rate": ("often leaves after one event", "rarely bounces", "share"),
    "price_percentile": ("views the dearer end of each category", "views the cheap end of each category", "share"),
}


@dataclass(frozen=True)
class Segment:
    """One segment: who is in it, how they convert and spend, and what sets them apart."""

    id: int
    name: str
    description: str
    size: int
    share: float
    conversion_rate: float  # share of members with at least one purchase
    mean_monetary: float  # mean spend per member (no purchase or no price: 0)
    mean_clv: float | None  # mean 1-year CLV of the members that have one (buyers with prices)
    top_categories: list[tuple[str, float]]  # category group -> mean share of members' interest
    distinguishing: dict[str, float]  # feature -> z-score of the members' mean against everyone

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description, "size": self.size,
                "share": round(self.share, 4), "conversion_rate": round(self.conversion_rate, 4),
                "mean_monetary": round(self.mean_monetary, 2),
                "mean_clv": None if self.mean_clv is None else round(self.mean_clv, 2),
                "top_categories": [{"name": n, "share": round(s, 4)} for n, s in self.top_categories],
                "distinguishing": {k: round(v, 3) for k, v in self.distinguishing.items()}}


@dataclass
class SegmentsResult:
    """The segments, the criterion that chose k, and every user's membership."""

    k: int
    criterion: str
    scores: dict[int, float]
    segments: list[Segment]
    assignments: pd.DataFrame  # user_id, segment_id, segment (name)
    content: bool  # content vectors were part of the features
    content_note: str
    conversion_rate: float  # of all users
    features: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # raw features, index user_id

    def users(self, segment: int | str) -> list[str]:
        """The pseudonymous users of one segment (id or name), sorted: saveable as a named segment."""
        seg = self._find(segment)
        return sorted(self.assignments.loc[self.assignments["segment_id"] == seg.id, "user_id"])

    def _find(self, segment: int | str) -> Segment:
        for s in self.segments:
            if s.id == segment or s.name == segment:
                return s
        raise JourneymapError(f"There is no segment {segment!r}; the ids run from 0 to {self.k - 1} "
                              f"({', '.join(s.name for s in self.segments)}).")

    def adjusted_rand(self, truth: dict[str, Any]) -> float:
        """Adjusted Rand index of the segments against known labels (user_id -> label), on shared users."""
        from sklearn.metrics import adjusted_rand_score

        mine = dict(zip(self.assignments["user_id"], self.assignments["segment_id"].tolist()))
        shared = [u for u in mine if u in truth]
        if not shared:
            raise JourneymapError("None of the users with known labels have a segment; check that the truth is "
                                  "keyed by the stored (pseudonymous) user ids.")
        return float(adjusted_rand_score([str(truth[u]) for u in shared], [mine[u] for u in shared]))

    def export(self, path: str | Path) -> Path:
        """Membership (user_id, segment_id, segment) to CSV or Parquet, by the file's suffix."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise JourneymapError(f"Segments export to .csv or .parquet files. Got '{path.name}'.")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = self.assignments[["user_id", "segment_id", "segment"]]
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        return path

    def save_as_segments(self, store_path: str | Path, prefix: str = "profile-segment-") -> dict[str, int]:
        """Save each segment as a named segment (``prefix`` + id) that every journey analysis can
        filter on with ``--segment``; returns name -> size."""
        from journeymap.journeys import save_segment

        return {f"{prefix}{s.id}": save_segment(store_path, f"{prefix}{s.id}", self.users(s.id),
                                                f"{s.name}: {s.description}")
                for s in self.segments}

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "criterion": self.criterion,
                "scores": {int(k): round(v, 4) for k, v in self.scores.items() if not math.isnan(v)},
                "users": len(self.assignments), "content_vectors": self.content, "content_note": self.content_note,
                "conversion_rate": round(self.conversion_rate, 4),
                "segments": [s.to_dict() for s in self.segments]}

    def to_frame(self) -> pd.DataFrame:
        """One row per segment: id, name, size, share, conversion, mean spend, mean CLV, description."""
        return pd.DataFrame([{k: v for k, v in s.to_dict().items() if k not in ("top_categories", "distinguishing")}
                             for s in self.segments])

    def figure(self):
        """Each segment's size against its conversion rate, bubble area by mean spend."""
        import plotly.graph_objects as go

        frame = self.to_frame()
        spend = frame["mean_monetary"].clip(lower=0)
        size = 12 + 40 * np.sqrt(spend / spend.max()) if spend.max() > 0 else 20
        fig = go.Figure(go.Scatter(x=frame["size"], y=frame["conversion_rate"], mode="markers+text",
                                   text=frame["name"], textposition="top center",
                                   marker={"size": size, "sizemode": "diameter"},
                                   hovertext=frame["description"]))
        fig.add_hline(y=self.conversion_rate, line_dash="dot", annotation_text="all users")
        fig.update_layout(title=f"{self.k} segments (k by {self.criterion}): size, conversion and spend",
                          xaxis_title="users", yaxis_title="conversion rate", yaxis_tickformat=".0%")
        return fig


def segments(store_path: str | Path, k: int | None = None, *, k_range: tuple[int, int] = (3, 8),
             content: bool | None = None, image_encoder: Any = None, random_state: int = 0,
             save: bool = True) -> SegmentsResult:
    """Cluster the stored profiles into segments and (``save``) record each user's segment.

    k: a fixed number of segments, or None to choose it in ``k_range`` (inclusive) by the mean
    silhouette. content: add item-text content vectors (``journeymap.items``): None uses them when
    that package is installed and the catalog has item names, True requires them, False skips.
    image_encoder: an image encoder (object or ``module:Class``, see ``journeymap.items``) whose
    item-image vectors join as one more family, when the catalog has image files.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
        raise JourneymapError(f"segments() needs k of at least 2 to split users into groups. Got {k!r}.")
    lo, hi = k_range
    if k is None and not (2 <= lo <= hi):
        raise JourneymapError(f"The k range of segments() must run from at least 2 upwards, like (3, 8). Got ({lo}, {hi}).")
    path = Path(store_path)
    table, groups, meta = _read(path)
    if len(table) < 3:
        raise JourneymapError(f"Segments need at least 3 profiled users; {path} has {len(table)}.")
    vectors, content_used, note = _content(path, table.index, content, meta)
    if image_encoder is not None:
        images, image_note = _images(path, table.index, image_encoder, meta)
        vectors = images if vectors is None else np.column_stack([vectors, images])
        note = f"{note}; images: {image_note}"

    features, families = _features(table, groups)
    x = _scale(features, families)
    if vectors is not None:
        x = np.column_stack([x, vectors])
    x = x[:, x.std(axis=0) > 0]
    if x.shape[1] == 0:
        raise JourneymapError("Every profile looks the same, so there is nothing to cluster.")
    rng = np.random.default_rng(random_state)
    distinct = len(np.unique(x.round(9), axis=0))
    scores: dict[int, float] = {}
    if k is None:
        ks = [c for c in range(lo, hi + 1) if c <= min(distinct, len(x) - 1)]
        if not ks:
            raise JourneymapError(f"Only {distinct} distinct profiles, too few for the k range ({lo}, {hi}); "
                                  "pass a smaller range or a fixed k.")
        sample = (np.arange(len(x)) if len(x) <= SILHOUETTE_SAMPLE
                  else np.sort(rng.choice(len(x), SILHOUETTE_SAMPLE, replace=False)))
        from sklearn.metrics import silhouette_score

        for c in ks:
            labels_c = _kmeans(x[sample], c, random_state, n_init=3).labels_
            scores[c] = (float(silhouette_score(x[sample], labels_c))
                         if len(set(labels_c.tolist())) > 1 else float("nan"))
        best = max((c for c in ks if not math.isnan(scores[c])), key=lambda c: scores[c], default=ks[0])
    else:
        if k > distinct:
            raise JourneymapError(f"Only {distinct} distinct profiles, fewer than k={k}; pass a smaller k.")
        best = k
    fit_rows = (np.arange(len(x)) if len(x) <= FIT_SAMPLE
                else np.sort(rng.choice(len(x), FIT_SAMPLE, replace=False)))
    labels = _relabel(_kmeans(x[fit_rows], best, random_state).predict(x))
    described = _describe(table, features, groups, labels, best)
    names = {s.id: s.name for s in described}
    assignments = pd.DataFrame({"user_id": table.index.to_numpy(), "segment_id": labels,
                                "segment": [names[i] for i in labels.tolist()]})
    converted = float((table["purchases"] > 0).mean())
    result = SegmentsResult(best, CRITERION if k is None else "fixed k", scores, described, assignments,
                            content_used, note, converted, features)
    if save:
        _save(path, result, meta)
    return result


# -- input ------------------------------------------------------------------------------------

def _read(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    from journeymap.profiles._build import has_profiles, profiles_meta

    with Store(path, read_only=True) as st:
        if not has_profiles(st.con):
            raise StoreError(f"{path} has no profiles yet; build them with `journeymap profiles --store {path}`.")
        table = st.con.sql("""
            SELECT user_id, sessions, mean_session_events, products_viewed, products_carted, purchases,
                   coalesce(monetary, 0) AS monetary, searches, reviews, active_days, bounce_rate,
                   price_percentile, recency_days, preferred_device, preferred_channel, clv_1y
            FROM profiles ORDER BY user_id""").df().set_index("user_id")
        # Each user's interest per category group (the part of the category before the first dot),
        # as shares of their decayed interest.
        groups = st.con.sql("""
            SELECT user_id, g.name AS grp, g.score / sum(g.score) OVER (PARTITION BY user_id) AS share
            FROM (SELECT user_id, unnest(group_scores) AS g FROM profile_state)
            WHERE user_id IN (SELECT user_id FROM profiles)""").df()
        meta = profiles_meta(st.con) or {}
    groups = groups.pivot_table(index="user_id", columns="grp", values="share", aggfunc="sum", fill_value=0.0)
    groups = groups.reindex(table.index, fill_value=0.0)
    return table, groups, meta


def _content(path: Path, users: pd.Index, content: bool | None, meta: dict[str, Any]
             ) -> tuple[np.ndarray | None, bool, str]:
    """Content vectors reduced to CONTENT_DIMS standardised components, weighted as one family."""
    if content is False:
        return None, False, "not asked for"
    try:
        from journeymap.items import user_content_vectors
    except ImportError:
        if content:
            raise JourneymapError("Content vectors need the journeymap.items package, which is not installed.") from None
        return None, False, "journeymap.items is not installed"
    with Store(path, read_only=True) as st:
        named = st.con.execute("SELECT count(*) FROM items WHERE name IS NOT NULL").fetchall()[0][0]
    if not named:
        if content:
            raise JourneymapError(f"Content vectors need item names in the catalog, and {path} has none.")
        return None, False, "the catalog has no item names"
    ids, matrix = user_content_vectors(path, users=list(users),
                                       half_life_days=meta.get("options", {}).get("half_life_days", 30.0),
                                       as_of=meta.get("as_of"))
    if not len(ids):
        return None, False, "no user engaged with an item that has a vector"
    out, dims = _reduce(users, ids, matrix)
    return out, True, f"{len(ids):,} of {len(users):,} users have a content vector ({dims} components)"


def _images(path: Path, users: pd.Index, encoder: Any, meta: dict[str, Any]) -> tuple[np.ndarray, str]:
    """Users' image vectors (the mean of the pictures of what they engaged with), as one family."""
    from journeymap.items import user_content_vectors

    ids, matrix = user_content_vectors(path, users=list(users), encoder=encoder,
                                       half_life_days=meta.get("options", {}).get("half_life_days", 30.0),
                                       as_of=meta.get("as_of"))
    if not len(ids):
        raise JourneymapError(f"No user of {path} engaged with an item that has an image vector; check the "
                              "catalog's image column (or the image/image_path event properties).")
    out, dims = _reduce(users, ids, matrix)
    return out, f"{len(ids):,} of {len(users):,} users have an image vector ({dims} components)"


def _reduce(users: pd.Index, ids: list[str], matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """Vectors reduced to CONTENT_DIMS standardised components, weighted as one family; zero rows
    for users without one."""
    from sklearn.decomposition import PCA

    dims = min(CONTENT_DIMS, matrix.shape[1], len(ids))
    pca = PCA(n_components=dims, random_state=0)
    reduced = pca.fit_transform(np.asarray(matrix, dtype=float))
    # Components with no real variance (fewer distinct vectors than dims) would be rounding noise
    # blown up by the standardisation below: drop them.
    real = pca.explained_variance_ratio_ > 1e-9
    reduced, dims = reduced[:, real], max(int(real.sum()), 1)
    reduced = (reduced - reduced.mean(axis=0)) / np.where(reduced.std(axis=0) > 0, reduced.std(axis=0), 1.0)
    reduced = np.clip(reduced, -CLIP, CLIP) / np.sqrt(dims) * FAMILY_WEIGHTS["content"]
    out = np.zeros((len(users), dims))
    position = pd.Series(np.arange(len(users)), index=users)
    out[position.loc[ids].to_numpy()] = reduced
    return out, dims


def _features(table: pd.DataFrame, groups: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Raw feature values (index user_id) and the share families (name -> columns)."""
    out = table[list(COUNTS)].astype(float).copy()
    out["bounce_rate"] = table["bounce_rate"].astype(float)
    out["price_percentile"] = table["price_percentile"].astype(float).fillna(0.5)
    out["searches_per_session"] = (table["searches"] / table["sessions"]).astype(float).clip(upper=1.0)
    families: dict[str, list[str]] = {}
    for kind in ("device", "channel"):
        values = table[f"preferred_{kind}"]
        levels = values.value_counts().index[:TOP_LEVELS].tolist()
        families[kind] = []
        for level in levels:
            column = f"{kind}_{level}"
            out[column] = (values == level).astype(float)
            families[kind].append(column)
    top = groups.sum().sort_values(ascending=False).index[:TOP_LEVELS].tolist()
    families["category"] = []
    for grp in top:
        column = f"category_{grp}"
        out[column] = groups[grp].astype(float)
        families["category"].append(column)
    return out, families


def _scale(features: pd.DataFrame, families: dict[str, list[str]]) -> np.ndarray:
    """Counts log1p'd and standardised; shares doubled (a full swing ~ two standard deviations);
    each share family divided by the square root of its size and weighted by FAMILY_WEIGHTS,
    other features by WEIGHTS."""
    in_family = {c: f for f, cols in families.items() for c in cols}
    columns = []
    for c in features.columns:
        v = features[c].to_numpy(float)
        if c in COUNTS:
            v = np.log1p(np.maximum(v, 0))
            std = v.std()
            v = (v - v.mean()) / (std if std > 0 else 1.0)
        else:
            v = 2.0 * v
        if c in in_family:
            v = v / np.sqrt(len(families[in_family[c]])) * FAMILY_WEIGHTS[in_family[c]]
        else:
            v = v * WEIGHTS.get(c, 1.0)
        columns.append(np.clip(v, -CLIP, CLIP))
    return np.column_stack(columns)


def _kmeans(x: np.ndarray, k: int, random_state: int, n_init: int = 5):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(x)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Segment ids by size, largest first, so ids do not depend on k-means' arbitrary numbering."""
    ids, counts = np.unique(labels, return_counts=True)
    order = [i for _, i in sorted(zip(-counts, ids))]
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping[v] for v in labels.tolist()], dtype=int)


# -- words ------------------------------------------------------------------------------------

def _phrase(feature: str) -> tuple[str, str, str]:
    if feature in PHRASES:
        return PHRASES[feature]
    kind, _, level = feature.partition("_")
    nice = level.replace("_", " ")
    if kind == "device":
        return (f"mostly on {nice}", f"rarely on {nice}", "share")
    if kind == "channel":
        return (f"often arrives via {nice}", f"rarely arrives via {nice}", "share")
    return (f"interested in {nice}", f"rarely interested in {nice}", "share")


def _fmt(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value:.0%}"
    if unit == "money":
        return f"{value:,.2f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:,.1f}"


def _describe(table: pd.DataFrame, features: pd.DataFrame, groups: pd.DataFrame, labels: np.ndarray,
              k: int) -> list[Segment]:
    overall = features.mean()
    std = features.std(ddof=0).replace(0, np.nan)
    bought = (table["purchases"] > 0).to_numpy()
    base_rate = float(bought.mean())
    spend = table["monetary"].to_numpy(float)
    clv = table["clv_1y"].to_numpy(float, na_value=np.nan)
    out, used = [], set()
    for sid in range(k):
        members = labels == sid
        means = features[members].mean()
        z = ((means - overall) / std).fillna(0.0)
        ranked = z.abs().sort_values(ascending=False)
        top = [f for f in ranked.index if abs(z[f]) > 0.25][:4]
        words = []
        for f in top:
            high, low, unit = _phrase(f)
            words.append(f"{high if z[f] > 0 else low} ({_fmt(means[f], unit)} vs {_fmt(overall[f], unit)})")
        conv = float(bought[members].mean())
        cats = groups[members].mean().sort_values(ascending=False)
        top_cats = [(str(n), float(s)) for n, s in cats.items() if s >= 0.05][:3]
        member_clv = clv[members]
        mean_clv = float(np.nanmean(member_clv)) if np.isfinite(member_clv).any() else None
        name = _name(means, z, conv, base_rate, top_cats, used)
        used.add(name)
        size = int(members.sum())
        text = (f"{size:,} users ({members.mean():.0%}); conversion {conv:.1%} vs {base_rate:.1%} overall; "
                f"mean spend {spend[members].mean():,.2f} vs {spend.mean():,.2f}")
        if mean_clv is not None:
            text += f"; mean 1-year CLV of its buyers {mean_clv:,.2f}"
        if top_cats:
            text += "; top categories " + ", ".join(f"{n} ({s:.0%})" for n, s in top_cats)
        if words:
            text += "; " + ", ".join(words)
        out.append(Segment(sid, name, text, size, float(members.mean()), conv, float(spend[members].mean()),
                           mean_clv, top_cats, {f: float(z[f]) for f in top}))
    return out


def _name(means: pd.Series, z: pd.Series, conv: float, base_rate: float, cats: list[tuple[str, float]],
          used: set[str]) -> str:
    """'mobile beauty buyers': a device that dominates, a category that dominates, and buying."""
    tags = []
    devices = [c for c in means.index if c.startswith("device_")]
    if devices:
        top = max(devices, key=lambda c: means[c])
        if means[top] >= 0.6 and z[top] > 0.25:
            tags.append(top.partition("_")[2].replace("_", " "))
    if cats and cats[0][1] >= 0.4:
        tags.append(cats[0][0].replace("_", " "))
    if base_rate and conv >= 2 * base_rate:
        tags.append("repeat buyers" if z.get("purchases", 0) > 1.0 and means["purchases"] >= 1.5 else "buyers")
    elif conv <= 0.5 * base_rate:
        tags.append("one-visit browsers" if means["sessions"] < 1.2 else "browsers")
    else:
        tags.append("shoppers")
    name = " ".join(tags)
    if name in used:
        extra = next((f for f in z.abs().sort_values(ascending=False).index), None)
        if extra is not None:
            high, low, _ = _phrase(extra)
            name = f"{name} ({high if z[extra] > 0 else low})"
    n = 2
    base = name
    while name in used:
        name, n = f"{base} ({n})", n + 1
    return name


# -- storage ----------------------------------------------------------------------------------

def _save(path: Path, result: SegmentsResult, meta: dict[str, Any]) -> None:
    """Membership into profile_segments and the profiles' segment columns, in one transaction."""
    with Store(path) as st:
        con = st.con
        con.begin()
        try:
            con.execute("CREATE OR REPLACE TABLE profile_segments "
                        "(user_id VARCHAR PRIMARY KEY, segment_id INTEGER, segment VARCHAR)")
            con.register("__segments", result.assignments[["user_id", "segment_id", "segment"]])
            con.execute("INSERT INTO profile_segments SELECT user_id, segment_id::INTEGER, segment FROM __segments")
            con.unregister("__segments")
            con.execute("""UPDATE profiles SET segment = s.segment, segment_id = s.segment_id
                           FROM profile_segments s WHERE profiles.user_id = s.user_id""")
            info = {**result.to_dict(), "profiles_as_of": meta.get("as_of"),
                    "created_at": datetime.now().replace(microsecond=0).isoformat(sep=" ")}
            con.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [META_KEY, json.dumps(info)])
            con.commit()
        except BaseException:
            con.rollback()
            raise
