"""Drop-off drivers: of those who reached a funnel step, who converted and who dropped, where the
dropped went next, and which events and contexts are over- or under-represented among converters.

Definitions (``dropoff(steps=[a, b, c], at="b")``):

* The funnel is matched per entity (a session by default, or a user): entry is the entity's first
  ``a``; each later step is the first event of that type after the previous step's event, no later
  than ``window`` after entry (greedy from the first entry).
* reached = entities that reached ``at``; converted = those of them that also reached the last
  step; dropped = reached ``at`` but not the last step. So "dropped at b" means *dropped after
  reaching b* (whichever later step they missed), not PostHog's "dropped at the step after b".
  For steps ``begin_checkout,purchase --at begin_checkout`` the dropped are checkout sessions
  without a purchase.
* next = for each dropped entity, the first event after its ``at`` event that is not another
  ``at`` event (a multi-item checkout logs one ``begin_checkout`` per item), within the session
  (per session) and the window; ``leave`` when there is none.
* Features of a reached entity: ``event=T`` for each event type it did up to and including its
  ``at`` event (per user: in the user's whole history up to then), ``device=`` and ``channel=`` of
  its entry event, ``category=`` of those events, and ``key=value`` of their scalar ``properties``
  (``properties.key=value`` where the key shadows a column name).
* Drivers: for each feature held by at least ``min_support`` reached entities and missing from at
  least ``min_support`` (a feature nearly all share separates no one), the odds ratio of
  converting with vs without it, each cell of the 2x2 table plus ``prior`` (Haldane-Anscombe
  at 0.5, Laplace at 1), a Wald confidence interval on the log odds ratio, and Fisher's exact
  two-sided p-value on the raw table. No correction for testing many features: read p-values of
  the long tail with that in mind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy import stats

from journeymap.config import parse_duration
from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Journeys, jsonable, lit, require_events

PER = ("session", "user")
OUTCOMES = ("reached", "converted", "dropped")
_COLUMN_FEATURES = ("event", "device", "channel", "category")


@dataclass(frozen=True)
class Driver:
    """One feature's 2x2 table against the outcome, and its odds ratio of converting."""

    feature: str
    converted: int  # reached entities with the feature that converted
    dropped: int  # ... that dropped
    odds_ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    conversion_rate: float  # converted / (converted + dropped): the rate with the feature
    base_rate: float  # the conversion rate of all reached entities
    lift: float  # conversion_rate / base_rate
    significant: bool  # p_value < alpha

    @property
    def support(self) -> int:
        return self.converted + self.dropped

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "converted": self.converted, "dropped": self.dropped,
                "support": self.support, "odds_ratio": jsonable(self.odds_ratio), "ci_low": jsonable(self.ci_low),
                "ci_high": jsonable(self.ci_high), "p_value": jsonable(self.p_value),
                "significant": self.significant, "conversion_rate": jsonable(self.conversion_rate),
                "base_rate": jsonable(self.base_rate), "lift": jsonable(self.lift)}


@dataclass
class DropoffResult:
    """Who reached a step, who converted and dropped, where the dropped went, and the drivers."""

    steps: list[str]
    at: str
    per: str
    window: str
    reached: int
    converted: int
    dropped: int
    next: list[dict[str, Any]]  # [{"event", "count", "share"}], share of the dropped
    positive: list[Driver]  # over-represented among converters (odds ratio > 1)
    negative: list[Driver]  # under-represented among converters (odds ratio < 1)
    prior: float
    alpha: float
    tested: int  # features that met the support rule
    _entities: pd.DataFrame = field(repr=False)  # entity, user_id, converted, next
    _features: pd.DataFrame = field(repr=False)  # entity, feature (tested features only)

    @property
    def conversion_rate(self) -> float:
        return self.converted / self.reached if self.reached else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "at": self.at, "per": self.per, "window": self.window,
            "reached": self.reached, "converted": self.converted, "dropped": self.dropped,
            "conversion_rate": jsonable(self.conversion_rate),
            "next": self.next,
            "drivers": {"positive": [d.to_dict() for d in self.positive],
                        "negative": [d.to_dict() for d in self.negative]},
            "prior": self.prior, "alpha": self.alpha, "features_tested": self.tested,
        }

    def to_frame(self) -> pd.DataFrame:
        """The drivers, positive then negative, one row each."""
        rows = [{"direction": "positive", **d.to_dict()} for d in self.positive]
        rows += [{"direction": "negative", **d.to_dict()} for d in self.negative]
        columns = ["direction", "feature", "converted", "dropped", "support", "odds_ratio", "ci_low", "ci_high",
                   "p_value", "significant", "conversion_rate", "base_rate", "lift"]
        return pd.DataFrame(rows, columns=columns)

    def figure(self):
        """Horizontal bars of log odds ratios with their confidence intervals."""
        import plotly.graph_objects as go

        drivers = self.negative[::-1] + self.positive
        log_or = [math.log(d.odds_ratio) for d in drivers]
        fig = go.Figure(go.Bar(
            x=log_or, y=[d.feature for d in drivers], orientation="h",
            marker_color=["#2a9d8f" if v > 0 else "#e76f51" for v in log_or],
            error_x={"type": "data", "symmetric": False,
                     "array": [math.log(d.ci_high) - v for d, v in zip(drivers, log_or)],
                     "arrayminus": [v - math.log(d.ci_low) for d, v in zip(drivers, log_or)]},
            customdata=[[d.odds_ratio, d.converted, d.dropped, d.p_value, d.lift] for d in drivers],
            hovertemplate="%{y}<br>odds ratio %{customdata[0]:.2f}<br>converted %{customdata[1]}, "
                          "dropped %{customdata[2]}<br>p=%{customdata[3]:.2g}, lift %{customdata[4]:.2f}"
                          "<extra></extra>",
        ))
        fig.update_layout(
            title=f"Drivers of {' → '.join(self.steps)} after {self.at}: {self.reached:,} {self.per}s reached, "
                  f"{self.conversion_rate:.1%} converted (base rate)",
            xaxis_title="log odds ratio of converting (with vs without)", yaxis_title=None,
            height=max(350, 60 + 24 * len(drivers)),
        )
        # Label every bar: plotly thins crowded category ticks, which hid the top driver.
        fig.update_yaxes(type="category", dtick=1, automargin=True)
        return fig

    def users(self, which: str = "dropped", among: str = "reached") -> list[str]:
        """The users (pseudonyms) behind a number: 'reached', 'converted', 'dropped', 'next=EVENT'
        (dropped, went to EVENT next) or a tested feature such as 'device=mobile' (held by entities
        among 'reached', 'converted' or 'dropped')."""
        ent = self._entities
        if which in OUTCOMES:
            return _unique(_among(ent, which)["user_id"])
        if which.startswith("next="):
            dropped = _among(ent, "dropped")
            return _unique(dropped.loc[dropped["next"] == which.partition("=")[2], "user_id"])
        if among not in OUTCOMES:
            raise JourneymapError(f"users(among=...) takes one of {', '.join(OUTCOMES)}. Got '{among}'.")
        keys = self._features.loc[self._features["feature"] == which, "entity"]
        if keys.empty:
            raise JourneymapError(
                f"'{which}' is not an outcome ({', '.join(OUTCOMES)}), a 'next=EVENT' or a tested feature; "
                f"tested features look like 'device=mobile' (see the drivers).")
        chosen = _among(ent, among)
        return _unique(chosen.loc[chosen["entity"].isin(keys), "user_id"])


def _among(ent: pd.DataFrame, which: str) -> pd.DataFrame:
    if which == "reached":
        return ent
    return ent[ent["converted"]] if which == "converted" else ent[~ent["converted"]]


def _unique(values: pd.Series) -> list[str]:
    return sorted(set(values.tolist()))


def dropoff(journeys: Journeys, steps: list[str] | str, at: str, window: str = "1d", per: str = "session",
            top: int = 10, min_support: int = 30, prior: float = 1.0, alpha: float = 0.05) -> DropoffResult:
    """Who dropped after reaching step ``at`` of the ordered funnel ``steps``, where they went next,
    and the drivers: features over- and under-represented among those who converted."""
    steps = _check(journeys, steps, at, per, top, min_support, prior, alpha)
    seconds = parse_duration(window, "'window' parameter of dropoff()").total_seconds()
    require_events(journeys)
    k_at = steps.index(at) + 1
    n = len(steps)
    entity = "session_key" if per == "session" else "user_id"

    chain = [f"""f1 AS (SELECT entity, any_value(user_id) AS user_id, min(ord) AS o1, min(ts) AS t1
                       FROM ev WHERE event_type = {lit(steps[0])} GROUP BY entity)"""]
    for k in range(2, n + 1):
        chain.append(f"""f{k} AS (
            SELECT p.*, m.o{k} FROM f{k - 1} p LEFT JOIN (
                SELECT p.entity, min(e.ord) AS o{k} FROM f{k - 1} p JOIN ev e
                  ON e.entity = p.entity AND e.event_type = {lit(steps[k - 1])} AND e.ord > p.o{k - 1}
                 AND e.ts <= p.t1 + to_seconds({seconds})
                GROUP BY p.entity) m USING (entity))""")
    base = f"""
        , ev AS (SELECT {entity} AS entity, user_id, ts, event_type, device, channel, category, properties,
                        row_number() OVER (PARTITION BY {entity} ORDER BY ts, event_id) AS ord
                 FROM journey_events),
        {', '.join(chain)},
        reached AS (SELECT entity, user_id, t1, o1, o{k_at} AS oa, o{n} IS NOT NULL AS converted
                    FROM f{n} WHERE o{k_at} IS NOT NULL)"""

    entities = journeys.query(_select_entities(base, at, seconds))
    entities_df = entities.df()
    features_df = journeys.query(_features_sql(base, min_support)).df()
    return _result(steps, at, per, window, entities_df, features_df, top, prior, alpha)


def _select_entities(base: str, at: str, seconds: float) -> str:
    # Next event of a dropped entity: the first later event that is not another `at` event.
    return f"""{base}
        SELECT r.entity, r.user_id, r.converted,
               CASE WHEN r.converted THEN NULL ELSE coalesce(arg_min(e.event_type, e.ord), 'leave') END AS next
        FROM reached r LEFT JOIN ev e
          ON NOT r.converted AND e.entity = r.entity AND e.ord > r.oa AND e.event_type <> {lit(at)}
         AND e.ts <= r.t1 + to_seconds({seconds})
        GROUP BY r.entity, r.user_id, r.converted"""


def _features_sql(base: str, min_support: int) -> str:
    shadow = ", ".join(lit(c) for c in _COLUMN_FEATURES)
    return f"""{base},
        pre AS (SELECT r.entity, e.event_type, e.category, e.properties
                FROM reached r JOIN ev e ON e.entity = r.entity AND e.ord <= r.oa),
        props AS (SELECT entity, k, properties->>k AS v, json_type(properties->k) AS t
                  FROM (SELECT DISTINCT entity, properties FROM pre WHERE properties IS NOT NULL),
                       unnest(json_keys(properties)) AS keys(k)),
        feats AS (
            SELECT DISTINCT entity, feature FROM (
                SELECT entity, 'event=' || event_type AS feature FROM pre
                UNION ALL SELECT entity, 'category=' || category FROM pre WHERE category IS NOT NULL
                UNION ALL SELECT r.entity, 'device=' || e.device FROM reached r
                          JOIN ev e ON e.entity = r.entity AND e.ord = r.o1 WHERE e.device IS NOT NULL
                UNION ALL SELECT r.entity, 'channel=' || e.channel FROM reached r
                          JOIN ev e ON e.entity = r.entity AND e.ord = r.o1 WHERE e.channel IS NOT NULL
                UNION ALL SELECT entity, CASE WHEN k IN ({shadow}) THEN 'properties.' ELSE '' END || k || '=' || v
                          FROM props WHERE v IS NOT NULL AND t NOT IN ('OBJECT', 'ARRAY', 'NULL'))),
        counted AS (SELECT entity, feature, count(*) OVER (PARTITION BY feature) AS support FROM feats)
        SELECT entity, feature FROM counted
        WHERE support >= {min_support} AND (SELECT count(*) FROM reached) - support >= {min_support}"""


def _result(steps: list[str], at: str, per: str, window: str, ent: pd.DataFrame, feats: pd.DataFrame,
            top: int, prior: float, alpha: float) -> DropoffResult:
    ent["converted"] = ent["converted"].astype(bool)
    reached, converted = len(ent), int(ent["converted"].sum())
    dropped = reached - converted
    counts = ent.loc[~ent["converted"], "next"].value_counts()
    nxt = [{"event": str(e), "count": int(c), "share": c / dropped} for e, c in
           sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    drivers: list[Driver] = []
    if not feats.empty and converted and dropped:  # with one outcome only there is nothing to compare
        joined = feats.merge(ent[["entity", "converted"]], on="entity")
        table = joined.groupby("feature")["converted"].agg(["sum", "count"])
        base_rate = converted / reached
        z = stats.norm.ppf(1 - alpha / 2)
        for feature, (a, total) in table.iterrows():
            a, b = int(a), int(total - a)
            c, d = converted - a, dropped - b
            log_or = math.log((a + prior) * (d + prior) / ((b + prior) * (c + prior)))
            se = math.sqrt(1 / (a + prior) + 1 / (b + prior) + 1 / (c + prior) + 1 / (d + prior))
            p = float(stats.fisher_exact([[a, b], [c, d]])[1])
            rate = a / (a + b)
            drivers.append(Driver(str(feature), a, b, math.exp(log_or), math.exp(log_or - z * se),
                                  math.exp(log_or + z * se), p, rate, base_rate, rate / base_rate, p < alpha))
    # Significant first, then by the size of the effect; the feature name breaks ties.
    def order(d: Driver) -> tuple:
        return (not d.significant, -abs(math.log(d.odds_ratio)), d.feature)

    positive = sorted((d for d in drivers if d.odds_ratio > 1), key=order)[:top]
    negative = sorted((d for d in drivers if d.odds_ratio < 1), key=order)[:top]
    return DropoffResult(steps, at, per, window, reached, converted, dropped, nxt, positive, negative,
                         prior, alpha, len(drivers), ent, feats)


def _check(journeys: Journeys, steps: list[str] | str, at: str, per: str, top: int, min_support: int,
           prior: float, alpha: float) -> list[str]:
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    steps = list(steps)
    if len(steps) < 2:
        raise JourneymapError(f"dropoff() needs at least two steps, like begin_checkout,purchase. Got {steps}.")
    known = set(journeys.settings.vocabulary.event_types)
    unknown = [s for s in steps if s not in known]
    if unknown:
        raise JourneymapError(
            f"Unknown step '{unknown[0]}': steps are event types such as {', '.join(sorted(known)[:6])}, ... "
            f"(see the vocabulary in the config).")
    if at not in steps:
        raise JourneymapError(f"The --at step must be one of the steps ({', '.join(steps)}). Got '{at}'.")
    if steps.index(at) == len(steps) - 1:
        raise JourneymapError(
            f"The --at step must come before the last step '{steps[-1]}': no one can drop after the last step.")
    if per not in PER:
        raise JourneymapError(f"The 'per' parameter of dropoff() must be 'session' or 'user'. Got '{per}'.")
    if top < 1 or min_support < 1:
        raise JourneymapError(f"top and min_support must be at least 1. Got top={top}, min_support={min_support}.")
    if not prior > 0:
        raise JourneymapError(
            f"The prior added to each cell must be positive, like 0.5 (Haldane) or 1 (Laplace). Got {prior}.")
    if not 0 < alpha < 1:
        raise JourneymapError(f"alpha must lie between 0 and 1, like 0.05. Got {alpha}.")
    return steps


__all__ = ["Driver", "DropoffResult", "dropoff"]
