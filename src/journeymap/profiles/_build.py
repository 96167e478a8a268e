"""Build and incrementally update the ``profiles`` table: one row of interpretable features per user.

Two layers, so that an update equals a full rebuild exactly:

* ``profile_state`` holds each user's *sufficient statistics*: numbers that depend only on that
  user's own events up to ``as_of`` (counts, sums, first/last times, session start times, decayed
  affinity sums anchored at the user's own last event, price sums per category). It is the
  expensive part (sessionization and aggregation over every event) and is recomputed only for
  users whose events changed: users with events from ingests the profiles do not cover yet, and
  users with events between the old and the new ``as_of``.
* ``profiles`` is derived from the whole state table every time, cheaply (one row per user): the
  fields that depend on ``as_of`` (recency, tenure, lifecycle, sessions in the last 7/30 days,
  the decayed affinity weights) or on everybody (RFM scores are ranks among buyers; the price
  percentile is against the category's current item prices; CLV is a model fitted on all buyers).

Exponential decay makes the split exact: an affinity sum anchored at the user's last event,
``sum w * 2**(-(last - t) / h)``, becomes the sum at ``as_of`` by one factor
``2**(-(as_of - last) / h)``, so shares and the top 3 never change without new events. Sums that
feed stored values are exact (DECIMAL) or ordered, so they do not depend on the order in which
DuckDB's threads add rows, and the table equals a rebuild bit for bit.

Fields (all over the user's events up to ``as_of``; days are fractional, times UTC):

* counts: events, sessions (the store's one definition), sessions_7d/30d (started in the last 7/30
  days), active_days, product_views, products_viewed/carted (distinct items), cart_adds, checkouts;
  purchases = orders (sessions with a purchase), items_bought (quantities), monetary (price x
  quantity of purchases; null when none has a price), avg_order_value.
* recency_days (since the last event), tenure_days (since the first), days_since_purchase.
* RFM: frequency = repeat purchase days (BG/NBD's); r/f/m_score 1-5 = 1 + floor(5 (rank - 1) / n)
  among buyers by days since purchase (longest first), orders, spend (fewest first); ties share
  the lower score. CLV fields: see ``_lifetime``.
* top_categories / top_brands: up to 3, with the decayed weight at as_of (view 1, wishlist 2, cart
  and checkout 3, purchase 5; halving every half-life) and the share of the user's total.
* price_percentile: per category, the share of the category's catalog items (current prices in
  ``items``) cheaper than the user's mean viewed/carted/bought price there, ties counting half;
  averaged over categories weighted by those events. price_band: low < 1/3 <= mid < 2/3 <= high.
* preferred device/channel (of the sessions' first events), weekday and hour (of session starts):
  most sessions wins; ties go to the alphabetically first value, the earliest day or hour.
* lifecycle: see ``Lifecycle``. funnel_stage: the furthest point of the latest session
  (browsing, carted, checkout, purchased). Session statistics: mean_session_seconds (first to
  last event), mean_session_events (depth), bounce_rate (sessions of one event).
* searches and top_searches (3 most frequent lower-cased queries); reviews and mean_rating.
* embedding, purchase_propensity, churn_propensity: the last ``score_profiles`` run's behaviour
  model outputs (``profile_model``; they describe each user's latest session as of that scoring),
  null until one ran; segment / segment_id: the last ``segments`` run's membership. Both kept
  across builds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError, StoreError
from journeymap.store import Store
from journeymap.store._store import sessionized_sql

Progress = Callable[[str, float], None]  # (what is being done, fraction of the build done 0..1)

STATE_VERSION = 1  # bump when profile_state's meaning changes: the next update rebuilds fully
META_KEY = "profiles"
BATCH_EVENTS = 4_000_000  # events per batch of users: bounds DuckDB's memory on large stores
# How much an event says about interest in its item's category and brand (views < carts < purchases).
EVENT_WEIGHTS: Mapping[str, float] = {
    "product_view": 1.0, "add_to_wishlist": 2.0, "add_to_cart": 3.0, "begin_checkout": 3.0, "purchase": 5.0,
}
PRICE_EVENTS = ("product_view", "add_to_cart", "purchase")  # prices a user looked at or paid
# Furthest point of the main funnel a session reached, by event type.
FUNNEL_STAGES = ("browsing", "carted", "checkout", "purchased")
_FUNNEL_RANK = {"add_to_cart": 2, "view_cart": 2, "begin_checkout": 3, "add_shipping_info": 3,
                "add_payment_info": 3, "purchase": 4}
PRICE_BANDS = ((1 / 3, "low"), (2 / 3, "mid"), (math.inf, "high"))  # percentile below bound -> band
LIFECYCLE_STAGES = ("new", "active", "at_risk", "dormant", "churned")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TOP = 3  # categories, brands and searches kept per user


@dataclass(frozen=True)
class Lifecycle:
    """Day thresholds of the lifecycle stages, measured back from ``as_of``.

    ``recency`` is days since the user's last event, ``tenure`` days since the first. Checked in
    this order: churned (recency >= churned_days), dormant (>= dormant_days), at_risk
    (>= at_risk_days), new (tenure < new_days), else active. A user exactly at a threshold is in
    the later stage: 14.0 days quiet is at risk.
    """

    new_days: float = 14.0  # first seen within two weeks
    at_risk_days: float = 14.0  # two quiet weeks: a shop's typical repurchase prompt
    dormant_days: float = 30.0  # a quiet month
    churned_days: float = 90.0  # a quiet quarter: the usual e-commerce churn definition

    def __post_init__(self) -> None:
        values = (self.at_risk_days, self.dormant_days, self.churned_days)
        if self.new_days <= 0 or not all(v > 0 for v in values) or list(values) != sorted(values):
            raise JourneymapError(
                "Lifecycle thresholds must be positive with at_risk_days <= dormant_days <= churned_days. "
                f"Got new={self.new_days}, at_risk={self.at_risk_days}, dormant={self.dormant_days}, "
                f"churned={self.churned_days}.")


@dataclass
class ProfileTable:
    """What a build or update did, and the profiles it left in the store."""

    store: str
    as_of: datetime
    last_ingest: int | None
    mode: str  # "full" or "incremental"
    user_count: int
    recomputed: int  # users whose sufficient statistics were recomputed
    removed: int  # users dropped (no events up to as_of any more)
    seconds: float
    clv: dict[str, Any]
    reason: str = ""  # why an update ran as a full build
    stage_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # lifecycle, funnel_stage -> counts
    _frame: pd.DataFrame | None = field(default=None, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """The profiles table, one row per user (index: user_id), read from the store on first use."""
        if self._frame is None:
            with Store(self.store, read_only=True) as st:
                frame = st.con.sql("SELECT * FROM profiles ORDER BY user_id").df()
            self._frame = frame.set_index("user_id", drop=False).rename_axis(None)
        return self._frame

    def counts(self, column: str) -> dict[str, int]:
        """Users per value of a column (lifecycle, funnel_stage, price_band, preferred_device...)."""
        if column in self.stage_counts:
            return dict(self.stage_counts[column])
        frame = self.to_frame()
        if column not in frame.columns:
            raise JourneymapError(f"No profile column '{column}'; columns are {', '.join(frame.columns)}.")
        values = frame[column].fillna("(none)").astype(str)
        return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}

    def users(self, **where: Any) -> list[str]:
        """The users behind a count, e.g. ``users(lifecycle="at_risk", funnel_stage="carted")``."""
        frame = self.to_frame()
        mask = pd.Series(True, index=frame.index)
        for column, value in where.items():
            if column not in frame.columns:
                raise JourneymapError(f"No profile column '{column}'; columns are {', '.join(frame.columns)}.")
            mask &= frame[column] == value
        return sorted(frame.index[mask])

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store, "as_of": self.as_of.isoformat(sep=" "), "last_ingest": self.last_ingest,
            "mode": self.mode, "reason": self.reason, "users": self.user_count,
            "recomputed": self.recomputed, "removed": self.removed, "seconds": round(self.seconds, 3),
            "lifecycle": self.counts("lifecycle"), "funnel_stage": self.counts("funnel_stage"),
            "clv": self.clv,
        }

    def figure(self):
        """Users per lifecycle stage, split by where their latest session stopped in the funnel."""
        import plotly.graph_objects as go

        frame = self.to_frame()
        table = (frame.groupby(["lifecycle", "funnel_stage"]).size().unstack(fill_value=0)
                 .reindex(index=list(LIFECYCLE_STAGES), columns=list(FUNNEL_STAGES), fill_value=0))
        fig = go.Figure([go.Bar(name=stage, x=list(table.index), y=table[stage].tolist()) for stage in table.columns])
        fig.update_layout(barmode="stack", title=f"{len(frame):,} profiles as of {self.as_of:%Y-%m-%d %H:%M} "
                                                 "by lifecycle stage and funnel position",
                          yaxis_title="users", legend_title="latest session")
        return fig


# -- public entry points ----------------------------------------------------------------------

def build_profiles(store_path: str | Path, as_of: datetime | str | None = None, *,
                   half_life_days: float = 30.0, lifecycle: Lifecycle | None = None,
                   settings: Settings | None = None, progress: Progress | None = None) -> ProfileTable:
    """Compute every user's profile from scratch and store it in the ``profiles`` table.

    as_of: the time the profile describes (events after it are ignored); default the store's
    last event. half_life_days: an event this old counts half in the category and brand
    affinities. lifecycle: stage thresholds. The session gap comes from ``settings``.
    """
    return _run(store_path, as_of, half_life_days, lifecycle, settings, progress, incremental=False)


def update_profiles(store_path: str | Path, as_of: datetime | str | None = None, *,
                    half_life_days: float | None = None, lifecycle: Lifecycle | None = None,
                    settings: Settings | None = None, progress: Progress | None = None) -> ProfileTable:
    """Bring the profiles up to date, recomputing only the users whose events changed.

    The result equals ``build_profiles`` with the same arguments. Options not given are those of
    the last build; a changed half-life or session gap (or no profiles yet) means a full build.
    """
    return _run(store_path, as_of, half_life_days, lifecycle, settings, progress, incremental=True)


def profiles_meta(con) -> dict[str, Any] | None:
    """The meta row of the last build (as_of, last ingest covered, options), or None."""
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [META_KEY]).fetchall()
    return json.loads(rows[0][0]) if rows else None


def has_profiles(con) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'profiles'").fetchall()[0][0])


# -- the run ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Options:
    half_life_days: float
    gap_seconds: float
    lifecycle: Lifecycle
    version: int = STATE_VERSION

    def state_key(self) -> tuple:
        """What profile_state depends on; a change invalidates it."""
        return (self.half_life_days, self.gap_seconds, self.version)


def start_job(store_path: str | Path, settings: Settings | None, progress: Progress | None
              ) -> tuple[float, Progress, Settings, Path]:
    """What a job over the profiles starts with: its clock, its progress callback (or one that
    does nothing), the settings (default: the config's) and the store's path, which must exist."""
    path = Path(store_path)
    if not path.exists():
        raise StoreError(f"No store at {path}; create one with `journeymap ingest FILE --store {path}`.")
    return time.perf_counter(), progress or (lambda what, done: None), settings or Settings.load(), path


def _run(store_path, as_of, half_life_days, lifecycle, settings, progress, incremental: bool) -> ProfileTable:
    started, report, settings, path = start_job(store_path, settings, progress)
    with Store(path) as st:
        con = st.con
        con.execute("SET TimeZone = 'UTC'")
        previous = profiles_meta(con) if has_profiles(con) and _has_state(con) else None
        old = previous.get("options", {}) if previous else {}
        if half_life_days is None:
            half_life_days = float(old.get("half_life_days", 30.0))
        if not (isinstance(half_life_days, (int, float)) and half_life_days > 0):
            raise JourneymapError(f"half_life_days must be a positive number of days, like 30. Got {half_life_days!r}.")
        if lifecycle is None:
            lifecycle = Lifecycle(**old["lifecycle"]) if "lifecycle" in old else Lifecycle()
        options = _Options(float(half_life_days), settings.session_gap.total_seconds(), lifecycle)

        last_ts, last_ingest = con.execute(
            "SELECT (SELECT max(ts) FROM events), "
            "(SELECT max(ingest_id) FROM ingests WHERE finished_at IS NOT NULL)").fetchall()[0]
        if last_ts is None:
            raise StoreError("The store holds no events yet; ingest some with `journeymap ingest FILE --store STORE`.")
        cutoff = _as_of(as_of) if as_of is not None else last_ts

        reason = ""
        if incremental and previous is None:
            incremental, reason = False, "no profiles yet"
        elif incremental and tuple(old.get("state_key", ())) != options.state_key():
            incremental, reason = False, "the half-life, session gap or profile version changed"

        report("reading events", 0.0)
        con.begin()
        try:
            con.execute(STATE_DDL)
            if incremental:
                recomputed, removed = _update_state(con, previous, cutoff, options, report)
            else:
                con.execute("DELETE FROM profile_state")
                recomputed = _compute_state(con, cutoff, options, None, report)
                removed = 0
            report("deriving profiles", 0.8)
            users, counts, clv = _derive(con, cutoff, options, report)
            meta = {"as_of": cutoff.isoformat(sep=" "), "last_ingest": last_ingest,
                    "built_at": datetime.now().replace(microsecond=0).isoformat(sep=" "),
                    "users": users, "options": {**asdict(options), "state_key": list(options.state_key())},
                    "clv": clv}
            con.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [META_KEY, json.dumps(meta)])
            con.commit()
        except BaseException:
            con.rollback()
            raise
    report("done", 1.0)
    return ProfileTable(str(path), cutoff, last_ingest, "incremental" if incremental else "full", users,
                        recomputed, removed, time.perf_counter() - started, clv, reason, counts)


def _as_of(value: datetime | str) -> datetime:
    """A naive UTC datetime from a datetime (aware ones converted) or ISO text."""
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise JourneymapError(
                f"as_of must be a UTC time like 2024-01-31 or 2024-01-31 13:00. Got '{value}'.") from None
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _has_state(con) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'profile_state'").fetchall()[0][0])


def _ts(value: datetime | str) -> str:
    """A time as an SQL literal; a string is already an SQL expression (such as a bound parameter)."""
    return f"TIMESTAMP '{value.isoformat(sep=' ')}'" if isinstance(value, datetime) else value


# -- sufficient statistics --------------------------------------------------------------------

STATE_DDL = """
CREATE TABLE IF NOT EXISTS profile_state (
    user_id VARCHAR PRIMARY KEY,
    first_seen TIMESTAMP, last_seen TIMESTAMP, events BIGINT, active_days BIGINT,
    product_views BIGINT, products_viewed BIGINT, cart_adds BIGINT, products_carted BIGINT,
    checkouts BIGINT, purchase_events BIGINT, items_bought BIGINT, monetary DOUBLE,
    first_purchase TIMESTAMP, last_purchase TIMESTAMP, purchase_days BIGINT, repeat_monetary DOUBLE,
    searches BIGINT, top_searches STRUCT(query VARCHAR, count BIGINT)[],
    reviews BIGINT, rating_sum DOUBLE, ratings BIGINT,
    sessions BIGINT, session_starts TIMESTAMP[], session_ms BIGINT, bounces BIGINT, orders BIGINT,
    last_session_start TIMESTAMP, last_session_rank INTEGER,
    preferred_device VARCHAR, preferred_channel VARCHAR, preferred_weekday INTEGER, preferred_hour INTEGER,
    category_scores STRUCT(name VARCHAR, score DOUBLE)[], category_total DOUBLE,
    brand_scores STRUCT(name VARCHAR, score DOUBLE)[], brand_total DOUBLE,
    group_scores STRUCT(name VARCHAR, score DOUBLE)[],
    price_stats STRUCT(category VARCHAR, n BIGINT, mean_price DOUBLE)[]
)"""
# Sessions by the store's one definition; per-user aggregates; scores and lists kept in a fixed
# order. Only the columns used are read, and only the target users' events up to the cutoff.
_STATE_SQL = """
WITH events AS (
    SELECT event_id, user_id, ts, event_type, session_id, item_id, category, brand, price, quantity,
           channel, device, query, rating
    FROM main.events WHERE ts <= {cutoff} AND {who}
), ev AS (
    SELECT *, max(ts) OVER (PARTITION BY user_id) AS __last FROM {sessions}
), sess AS (
    SELECT user_id, session_key, min(ts) AS start, max(ts) AS stop, count(*) AS n,
           arg_min(device, (ts, event_id)) FILTER (WHERE device IS NOT NULL) AS device,
           arg_min(channel, (ts, event_id)) FILTER (WHERE channel IS NOT NULL) AS channel,
           max(CASE event_type {funnel_rank} ELSE 1 END) AS rank,
           bool_or(event_type = 'purchase') AS bought
    FROM ev GROUP BY user_id, session_key
), per_session AS (
    SELECT user_id, count(*) AS sessions, list(start ORDER BY start, session_key) AS session_starts,
           sum(epoch_ms(stop) - epoch_ms(start)) AS session_ms, count_if(n = 1) AS bounces,
           count_if(bought) AS orders, max(start) AS last_session_start,
           arg_max(rank, (start, session_key)) AS last_session_rank
    FROM sess GROUP BY user_id
), pref AS (
    -- most sessions wins; ties go to the alphabetically first device/channel, the earliest day/hour
    SELECT user_id, first(v) FILTER (WHERE kind = 'device') AS device,
           first(v) FILTER (WHERE kind = 'channel') AS channel,
           first(v) FILTER (WHERE kind = 'weekday')::INTEGER AS weekday,
           first(v) FILTER (WHERE kind = 'hour')::INTEGER AS hour
    FROM (SELECT user_id, kind, first(v ORDER BY n DESC, v) AS v FROM (
        SELECT user_id, kind, v, count(*) AS n FROM (
            SELECT user_id, 'device' AS kind, device AS v FROM sess WHERE device IS NOT NULL
            UNION ALL SELECT user_id, 'channel', channel FROM sess WHERE channel IS NOT NULL
            UNION ALL SELECT user_id, 'weekday', lpad(isodow(start)::VARCHAR, 2, '0') FROM sess
            UNION ALL SELECT user_id, 'hour', lpad(hour(start)::VARCHAR, 2, '0') FROM sess
        ) GROUP BY ALL
    ) GROUP BY user_id, kind)
    GROUP BY user_id
), per_event AS (
    SELECT user_id, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS events,
           count(DISTINCT ts::DATE) AS active_days,
           count_if(event_type = 'product_view') AS product_views,
           count(DISTINCT item_id) FILTER (WHERE event_type = 'product_view') AS products_viewed,
           count_if(event_type = 'add_to_cart') AS cart_adds,
           count(DISTINCT item_id) FILTER (WHERE event_type = 'add_to_cart') AS products_carted,
           count_if(event_type = 'begin_checkout') AS checkouts,
           count_if(event_type = 'purchase') AS purchase_events,
           coalesce(sum(coalesce(quantity, 1)) FILTER (WHERE event_type = 'purchase'), 0) AS items_bought,
           sum(CAST(price * coalesce(quantity, 1) AS DECIMAL(38, 6)))
               FILTER (WHERE event_type = 'purchase' AND price IS NOT NULL) AS monetary,
           min(ts) FILTER (WHERE event_type = 'purchase') AS first_purchase,
           max(ts) FILTER (WHERE event_type = 'purchase') AS last_purchase,
           count(DISTINCT ts::DATE) FILTER (WHERE event_type = 'purchase') AS purchase_days,
           count_if(event_type = 'search') AS searches,
           count_if(event_type = 'review') AS reviews,
           sum(CAST(rating AS DECIMAL(38, 6))) FILTER (WHERE event_type = 'review') AS rating_sum,
           count(rating) FILTER (WHERE event_type = 'review') AS ratings
    FROM ev GROUP BY user_id
), repeat AS (
    -- spend on purchase days after the first (what Gamma-Gamma's monetary value averages)
    SELECT user_id, sum(CAST(price * coalesce(quantity, 1) AS DECIMAL(38, 6)))
                        FILTER (WHERE ts::DATE > first_day) AS repeat_monetary
    FROM (SELECT user_id, ts, price, quantity, min(ts::DATE) OVER (PARTITION BY user_id) AS first_day
          FROM ev WHERE event_type = 'purchase')
    WHERE price IS NOT NULL GROUP BY user_id
), searched AS (
    SELECT user_id, list({{'query': q, 'count': n}} ORDER BY n DESC, q)[1:{top}] AS top_searches
    FROM (SELECT user_id, lower(trim(query)) AS q, count(*) AS n FROM ev
          WHERE event_type = 'search' AND nullif(trim(query), '') IS NOT NULL GROUP BY ALL)
    GROUP BY user_id
), weighted AS (
    -- exact decimal terms: the sums do not depend on the order rows are added in
    SELECT user_id, category, brand,
           CAST(w.weight * pow(2.0, -(epoch_us(__last) - epoch_us(ts)) / {half_life_us}) AS DECIMAL(38, 15)) AS d
    FROM ev JOIN (VALUES {weights}) AS w(event_type, weight) USING (event_type)
), cats AS (
    SELECT user_id, list({{'name': category, 'score': s::DOUBLE}} ORDER BY s DESC, category)[1:{top}] AS category_scores,
           sum(s)::DOUBLE AS category_total
    FROM (SELECT user_id, category, sum(d) AS s FROM weighted WHERE category IS NOT NULL GROUP BY ALL)
    GROUP BY user_id
), groups AS (
    SELECT user_id, list({{'name': g, 'score': s::DOUBLE}} ORDER BY s DESC, g) AS group_scores
    FROM (SELECT user_id, split_part(category, '.', 1) AS g, sum(d) AS s FROM weighted
          WHERE category IS NOT NULL GROUP BY ALL)
    GROUP BY user_id
), brands AS (
    SELECT user_id, list({{'name': brand, 'score': s::DOUBLE}} ORDER BY s DESC, brand)[1:{top}] AS brand_scores,
           sum(s)::DOUBLE AS brand_total
    FROM (SELECT user_id, brand, sum(d) AS s FROM weighted WHERE brand IS NOT NULL GROUP BY ALL)
    GROUP BY user_id
), priced AS (
    SELECT user_id, list({{'category': category, 'n': n, 'mean_price': (s / n)::DOUBLE}} ORDER BY category) AS price_stats
    FROM (SELECT user_id, category, count(*) AS n, sum(CAST(price AS DECIMAL(38, 6))) AS s FROM ev
          WHERE event_type IN ({price_events}) AND price > 0 AND category IS NOT NULL GROUP BY ALL)
    GROUP BY user_id
)
SELECT e.user_id, e.first_seen, e.last_seen, e.events, e.active_days, e.product_views, e.products_viewed,
       e.cart_adds, e.products_carted, e.checkouts, e.purchase_events, e.items_bought, e.monetary::DOUBLE,
       e.first_purchase, e.last_purchase, e.purchase_days,
       CASE WHEN e.purchase_days > 1 THEN coalesce(r.repeat_monetary, 0)::DOUBLE END,
       e.searches, coalesce(q.top_searches, []), e.reviews, e.rating_sum::DOUBLE, e.ratings,
       s.sessions, s.session_starts, s.session_ms, s.bounces, s.orders, s.last_session_start, s.last_session_rank,
       f.device, f.channel, f.weekday, f.hour,
       coalesce(c.category_scores, []), coalesce(c.category_total, 0), coalesce(b.brand_scores, []),
       coalesce(b.brand_total, 0), coalesce(g.group_scores, []), coalesce(pr.price_stats, [])
FROM per_event e JOIN per_session s USING (user_id) JOIN pref f USING (user_id)
     LEFT JOIN repeat r USING (user_id) LEFT JOIN searched q USING (user_id)
     LEFT JOIN cats c USING (user_id) LEFT JOIN brands b USING (user_id)
     LEFT JOIN groups g USING (user_id) LEFT JOIN priced pr USING (user_id)
"""


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _state_sql(cutoff: datetime | str, options: _Options, who: str) -> str:
    """Each user's sufficient statistics (profile_state's columns) from their events up to
    ``cutoff`` (a time, or an SQL expression such as a bound parameter)."""
    funnel_rank = " ".join(f"WHEN {_lit(t)} THEN {r}" for t, r in _FUNNEL_RANK.items())
    weights = ", ".join(f"({_lit(t)}, {w})" for t, w in EVENT_WEIGHTS.items())
    return _STATE_SQL.format(
        cutoff=_ts(cutoff), who=who, sessions=sessionized_sql(timedelta(seconds=options.gap_seconds)),
        funnel_rank=funnel_rank, top=TOP, half_life_us=repr(options.half_life_days * 86400e6), weights=weights,
        price_events=", ".join(map(_lit, PRICE_EVENTS)))


def _compute_state(con, cutoff: datetime, options: _Options, targets: str | None, report: Progress) -> int:
    """Insert the state rows of all users (targets None) or of those in the temp table ``targets``."""
    who = "TRUE" if targets is None else f"user_id IN (SELECT user_id FROM {targets})"
    n_events = con.execute(f"SELECT count(*) FROM main.events WHERE ts <= {_ts(cutoff)} AND {who}").fetchall()[0][0]
    batches = max(1, math.ceil(n_events / BATCH_EVENTS))
    before = con.execute("SELECT count(*) FROM profile_state").fetchall()[0][0]
    for b in range(batches):
        report(f"per-user statistics ({b + 1}/{batches})", 0.05 + 0.75 * b / batches)
        part = who if batches == 1 else f"{who} AND hash(user_id) % {batches} = {b}"
        con.execute(f"INSERT INTO profile_state {_state_sql(cutoff, options, part)}")
    return con.execute("SELECT count(*) FROM profile_state").fetchall()[0][0] - before


def _update_state(con, previous: dict, cutoff: datetime, options: _Options, report: Progress) -> tuple[int, int]:
    """Recompute the users whose events changed since the last build; drop users with no events left."""
    old_cutoff = datetime.fromisoformat(previous["as_of"])
    covered = previous.get("last_ingest") or 0
    lo, hi = min(old_cutoff, cutoff), max(old_cutoff, cutoff)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE __profile_targets AS
        SELECT DISTINCT user_id FROM main.events
        WHERE (ingest_id > {int(covered)} AND ts <= {_ts(cutoff)}) OR (ts > {_ts(lo)} AND ts <= {_ts(hi)})""")
    before = con.execute("SELECT count(*) FROM profile_state").fetchall()[0][0]
    con.execute("DELETE FROM profile_state WHERE user_id IN (SELECT user_id FROM __profile_targets)")
    # Users whose events are gone (erased) or all after a moved-back cutoff: their profile goes too.
    con.execute(f"""DELETE FROM profile_state WHERE user_id NOT IN
                    (SELECT DISTINCT user_id FROM main.events WHERE ts <= {_ts(cutoff)})""")
    kept = con.execute("SELECT count(*) FROM profile_state").fetchall()[0][0]
    recomputed = _compute_state(con, cutoff, options, "__profile_targets", report)
    con.execute("DROP TABLE __profile_targets")
    targets_gone = before - kept  # rows deleted, some of which came back recomputed
    return recomputed, max(0, targets_gone - recomputed)


# -- derived fields ---------------------------------------------------------------------------

_DERIVE_SQL = """
WITH s AS ({state}),
prices AS (SELECT user_id, unnest(price_stats, recursive := true) FROM s),
item_prices AS (
    SELECT category, price, count(*) AS c FROM items WHERE price > 0 AND category IS NOT NULL GROUP BY ALL
), dist AS (
    SELECT category, price, c, sum(c) OVER (PARTITION BY category ORDER BY price) AS n_le FROM item_prices
), totals AS (
    SELECT category, sum(c) AS total FROM item_prices GROUP BY category
), pct AS (
    -- share of the category's items cheaper than the user's mean price there (ties count half)
    SELECT p.user_id, p.category, p.n,
           CASE WHEN d.price IS NULL THEN 0.0
                WHEN d.price = p.mean_price THEN (d.n_le - d.c / 2.0) / t.total
                ELSE d.n_le / t.total END AS pct
    FROM prices p JOIN totals t USING (category)
         ASOF LEFT JOIN dist d ON p.category = d.category AND p.mean_price >= d.price
), user_price AS (
    SELECT user_id, sum(n * pct ORDER BY category) / sum(n) AS price_percentile FROM pct GROUP BY user_id
), base AS (
    SELECT s.*, up.price_percentile,
           (epoch_us({as_of}) - epoch_us(last_seen)) / 86400e6 AS recency_days,
           (epoch_us({as_of}) - epoch_us(first_seen)) / 86400e6 AS tenure_days,
           (epoch_us({as_of}) - epoch_us(last_purchase)) / 86400e6 AS days_since_purchase,
           pow(2.0, -(epoch_us({as_of}) - epoch_us(last_seen)) / {half_life_us}) AS decay
    FROM s LEFT JOIN user_price up USING (user_id)
), scored AS (
    SELECT user_id,
           1 + floor(5 * (rank() OVER (ORDER BY days_since_purchase DESC) - 1) / count(*) OVER ())::INTEGER AS r_score,
           1 + floor(5 * (rank() OVER (ORDER BY orders) - 1) / count(*) OVER ())::INTEGER AS f_score
    FROM base WHERE orders > 0
), scored_m AS (
    SELECT user_id, 1 + floor(5 * (rank() OVER (ORDER BY monetary) - 1) / count(*) OVER ())::INTEGER AS m_score
    FROM base WHERE orders > 0 AND monetary IS NOT NULL
)
SELECT b.user_id,
       CASE WHEN recency_days >= {churned} THEN 'churned' WHEN recency_days >= {dormant} THEN 'dormant'
            WHEN recency_days >= {at_risk} THEN 'at_risk' WHEN tenure_days < {new} THEN 'new'
            ELSE 'active' END AS lifecycle,
       first_seen, last_seen, tenure_days, recency_days, events, sessions,
       len(list_filter(session_starts, lambda x: x > {as_of} - INTERVAL 7 DAY)) AS sessions_7d,
       len(list_filter(session_starts, lambda x: x > {as_of} - INTERVAL 30 DAY)) AS sessions_30d,
       active_days, product_views, products_viewed, cart_adds, products_carted, checkouts,
       orders AS purchases, items_bought, monetary,
       CASE WHEN orders > 0 AND monetary IS NOT NULL THEN monetary / orders END AS avg_order_value,
       first_purchase, last_purchase, days_since_purchase,
       CASE WHEN purchase_days > 0 THEN purchase_days - 1 END AS frequency,
       r_score, f_score, m_score,
       CASE WHEN r_score IS NOT NULL THEN r_score::VARCHAR || f_score::VARCHAR || coalesce(m_score::VARCHAR, '-') END AS rfm,
       CASE WHEN purchase_days > 0 THEN date_diff('day', first_purchase::DATE, last_purchase::DATE) END AS clv_recency,
       CASE WHEN purchase_days > 0 THEN date_diff('day', first_purchase::DATE, {as_of}::DATE) END AS clv_t,
       CASE WHEN purchase_days > 1 THEN repeat_monetary / (purchase_days - 1)
            WHEN purchase_days = 1 AND monetary IS NOT NULL THEN 0.0 END AS clv_monetary,
       list_transform(category_scores, lambda x: {{'name': x.name, 'weight': x.score * decay,
                                               'share': x.score / category_total}}) AS top_categories,
       list_transform(brand_scores, lambda x: {{'name': x.name, 'weight': x.score * decay,
                                            'share': x.score / brand_total}}) AS top_brands,
       price_percentile,
       CASE WHEN price_percentile < {low} THEN 'low' WHEN price_percentile < {mid} THEN 'mid'
            WHEN price_percentile IS NOT NULL THEN 'high' END AS price_band,
       preferred_device, preferred_channel,
       [{weekdays}][preferred_weekday] AS preferred_weekday, preferred_hour,
       session_ms / 1000.0 / sessions AS mean_session_seconds, events / sessions AS mean_session_events,
       bounces / sessions AS bounce_rate,
       [{stages}][last_session_rank] AS funnel_stage, last_session_start,
       searches, top_searches, reviews, CASE WHEN ratings > 0 THEN rating_sum / ratings END AS mean_rating
FROM base b LEFT JOIN scored USING (user_id) LEFT JOIN scored_m USING (user_id)
ORDER BY b.user_id
"""

# The public table's columns, in order; model fields stay null until score_profiles fills them.
COLUMNS = (
    "user_id", "summary", "lifecycle", "segment", "segment_id", "first_seen", "last_seen", "tenure_days",
    "recency_days", "events", "sessions", "sessions_7d", "sessions_30d", "active_days", "product_views",
    "products_viewed", "cart_adds", "products_carted", "checkouts", "purchases", "items_bought", "monetary",
    "avg_order_value", "first_purchase", "last_purchase", "days_since_purchase", "frequency", "r_score",
    "f_score", "m_score", "rfm", "expected_purchases_90d", "probability_alive", "clv_1y", "clv_note",
    "top_categories", "top_brands", "price_percentile", "price_band", "preferred_device", "preferred_channel",
    "preferred_weekday", "preferred_hour", "mean_session_seconds", "mean_session_events", "bounce_rate",
    "funnel_stage", "last_session_start", "searches", "top_searches", "reviews", "mean_rating",
    "embedding", "purchase_propensity", "churn_propensity",
)
MODEL_COLUMNS = {"embedding": "FLOAT[]", "purchase_propensity": "DOUBLE", "churn_propensity": "DOUBLE"}


def _derive_sql(cutoff: datetime | str, options: _Options, state: str = "SELECT * FROM profile_state") -> str:
    """The derived fields of every user in ``state`` (a query with profile_state's columns) at ``cutoff``
    (a time, or an SQL expression)."""
    lc = options.lifecycle
    return _DERIVE_SQL.format(
        state=state, as_of=_ts(cutoff), half_life_us=repr(options.half_life_days * 86400e6),
        churned=lc.churned_days, dormant=lc.dormant_days, at_risk=lc.at_risk_days, new=lc.new_days,
        low=repr(PRICE_BANDS[0][0]), mid=repr(PRICE_BANDS[1][0]),
        weekdays=", ".join(map(_lit, WEEKDAYS)), stages=", ".join(map(_lit, FUNNEL_STAGES)))


def _derive(con, cutoff: datetime, options: _Options, report: Progress
            ) -> tuple[int, dict[str, dict[str, int]], dict[str, Any]]:
    """Replace the profiles table with every user's derived fields; return the number of users,
    their counts per lifecycle stage and funnel stage, and the CLV status."""
    import pyarrow as pa

    from journeymap.profiles._lifetime import OUTPUTS, clv_fields
    from journeymap.profiles._model_fields import MODEL_TABLE, has_model_fields
    from journeymap.profiles._summary import SUMMARY_FIELDS, summarize

    con.execute(f"CREATE OR REPLACE TEMP TABLE __derived AS {_derive_sql(cutoff, options)}")
    report("lifetime value", 0.85)
    clv_input = con.sql(
        "SELECT user_id, frequency, clv_recency, clv_t, clv_monetary FROM __derived ORDER BY user_id").df()
    clv_frame, clv = clv_fields(clv_input)

    report("summaries", 0.9)
    rows = con.sql(f"SELECT {', '.join(SUMMARY_FIELDS)} FROM __derived ORDER BY user_id").to_arrow_table().to_pylist()
    segments = _segment_assignments(con)
    users = clv_frame["user_id"].tolist()
    extra = pa.table({
        "user_id": pa.array(users, pa.string()),
        **{c: pa.array(clv_frame[c].to_numpy(object, na_value=None),
                       pa.string() if c == "clv_note" else pa.float64()) for c in OUTPUTS},
        "summary": pa.array([summarize(r) for r in rows], pa.string()),
        "segment_id": pa.array([segments.get(u, (None, None))[0] for u in users], pa.int32()),
        "segment": pa.array([segments.get(u, (None, None))[1] for u in users], pa.string()),
    })

    report("writing", 0.95)
    con.register("__profile_extra", extra)
    # Model fields come from the last score_profiles run, kept across builds (users it did not score: null).
    scored = has_model_fields(con)
    select = []
    for column in COLUMNS:
        if column in MODEL_COLUMNS:
            select.append(f"m.{column}" if scored else f"NULL::{MODEL_COLUMNS[column]} AS {column}")
        elif column in extra.column_names and column != "user_id":
            select.append(f"x.{column}")
        else:
            select.append(f"d.{column}")
    model_join = f" LEFT JOIN {MODEL_TABLE} m USING (user_id)" if scored else ""
    con.execute(f"""CREATE OR REPLACE TABLE profiles AS
        SELECT {', '.join(select)} FROM __derived d JOIN __profile_extra x USING (user_id){model_join}
        ORDER BY user_id""")
    con.unregister("__profile_extra")
    con.execute("DROP TABLE __derived")
    counts: dict[str, dict[str, int]] = {}
    for column in ("lifecycle", "funnel_stage"):
        counts[column] = {str(k): int(v) for k, v in con.execute(
            f"SELECT coalesce({column}, '(none)') AS v, count(*) FROM profiles GROUP BY v ORDER BY v").fetchall()}
    return len(users), counts, clv


def _segment_assignments(con) -> dict[str, tuple[int, str]]:
    """user -> (segment id, name) of the last `segments` run, kept across builds (new users: none)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'profile_segments'").fetchall()[0][0]
    if not exists:
        return {}
    return {u: (int(i), n) for u, i, n in con.execute(
        "SELECT user_id, segment_id, segment FROM profile_segments").fetchall()}
