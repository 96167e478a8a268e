"""Decisions served online, logged, and learned from once their reward is known.

``OnlinePolicy`` wraps a ``ContextualBandit``: ``decide`` chooses and logs, ``observe`` joins rewards
from the shop's later events (by default a purchase by the same user within 30 minutes gives 1;
none by then gives 0; ``RewardDefinition`` sets the event types, their rewards and the horizon),
``reward`` takes an explicit one. Each decision is settled once and learned once. ``PolicyConfig``
holds the settings (``[policy]`` in journeymap.toml). Files, beside the event store ``shop.duckdb``
(or where ``PolicyConfig.log`` says):

    shop.decisions.jsonl          settled decisions with their reward, in settlement order: a
                                  journeymap decision log (``read_log``, ``journeymap ope --log``)
    shop.decisions.pending.jsonl  decisions still waiting for their reward (replayed on restart)
    shop.decisions.bandit.zip     the bandit's checkpoint, with how many log lines it has learned

JSON lines rather than a table in the store: the service's event writer owns the DuckDB file, a
decision must be logged in microseconds, and the log is then directly what the OPE tools read.
A decision enters the log only once settled, so the log is append-only and never rewritten.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from journeymap.config import parse_duration
from journeymap.exceptions import ConfigError, FormatError, JourneymapError
from journeymap.policy._bandit import (
    EXPLORATIONS,
    INTERACTIONS,
    ContextualBandit,
    Scalar,
    check_features,
    normalize_actions,
)
from journeymap.policy._log import DecisionLog, from_records

REWARD_VALUES = ("one", "amount")
# Profile fields (the JSON of `journeymap profile`) that become context features when present.
PROFILE_NUMERIC = (
    "sessions", "sessions_7d", "sessions_30d", "events", "product_views", "cart_adds", "checkouts", "purchases",
    "recency_days", "tenure_days", "days_since_purchase", "monetary", "avg_order_value", "price_percentile",
    "bounce_rate", "mean_session_events", "purchase_propensity", "churn_propensity", "probability_alive",
)
PROFILE_CATEGORICAL = ("lifecycle", "segment", "price_band", "preferred_device", "preferred_channel", "funnel_stage")
_COMPACT_AFTER = 1000  # pending-journal lines before it may be rewritten without the settled ones
# An event stamped further ahead of the server's clock than this moves the watermark only this far,
# so one client with a wrong clock cannot close every pending decision at once.
MAX_CLOCK_AHEAD = timedelta(minutes=5)


class UnknownDecisionError(JourneymapError):
    """A reward names a decision this policy never made."""


class RewardConflictError(JourneymapError):
    """A reward arrives for a decision already settled with another reward."""


# -- configuration ------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(data: Mapping[str, Any], key: str, what: str, where: str, low: float | None = None,
            high: float | None = None, strict: bool = False, integer: bool = False) -> Any:
    """``data[key]`` checked to be a number (an integer if asked) within bounds, or a ConfigError
    naming ``what``, the range and what arrived."""
    value = data[key]
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else _is_number(value)
    if ok:
        ok = (low is None or (value > low if strict else value >= low)) and (high is None or value <= high)
    if not ok:
        kind = "an integer" if integer else "a number"
        if low is not None and high is not None:
            rule = f"{kind} from {low:g} to {high:g}"
        elif low is not None:
            rule = f"{kind} {'above' if strict else 'of at least'} {low:g}"
        else:
            rule = kind
        raise ConfigError(f"{what}{where} must be {rule}, like {_EXAMPLES.get(key, 1)}. Got {value!r}.")
    return value


_EXAMPLES = {"epsilon": 0.1, "softmax_lambda": 10, "gamma_scale": 5, "bag": 5, "learning_rate": 0.01, "power_t": 0.5,
             "clip_p": 0.1, "seed": 0, "checkpoint_every": 1000, "default": 0}


@dataclass(frozen=True)
class RewardDefinition:
    """How a decision's reward is read from the user's later events.

    ``events`` maps event types to rewards: an event of one of them by the same user within
    ``horizon`` after the decision earns its value, and the decision's reward is the highest value
    reached (settled at once when no type is worth more, else at the horizon); with none by the
    horizon the reward is ``default``. ``event_type`` is the one-type spelling (``"purchase"``:
    ``{"purchase": 1.0}``, the default). ``value="amount"`` instead sums price x quantity of the
    ``event_type`` events and settles at the horizon. No event type (``event_type=None`` and no
    ``events``): explicit rewards only (``default=None``: wait for them indefinitely).
    """

    event_type: str | None = "purchase"
    horizon: timedelta = timedelta(minutes=30)  # a session's length: long enough to buy, short enough to attribute
    value: str = "one"
    default: float | None = 0.0
    events: Mapping[str, float] | None = None  # event type -> reward; replaces event_type

    def __post_init__(self) -> None:
        if self.value not in REWARD_VALUES:
            raise ConfigError(f"A reward's value is 'one' (1 per decision followed by the event) or 'amount' "
                              f"(the events' price x quantity). Got '{self.value}'.")
        if not isinstance(self.horizon, timedelta) or self.horizon <= timedelta(0):
            raise ConfigError(f"The reward horizon must be a positive duration like '30m'. Got {self.horizon!r}.")
        if self.events is not None:
            if self.value == "amount":
                raise ConfigError("A reward's value 'amount' sums the price x quantity of one event_type; `events` "
                                  "gives each event type a fixed reward. Use one or the other.")
            bad = {k: v for k, v in self.events.items() if not _is_number(v)}
            if bad:
                name, got = next(iter(bad.items()))
                raise ConfigError(f"The reward of event type '{name}' must be a number, like 1.0. Got {got!r}.")
            object.__setattr__(self, "events", {str(k): float(v) for k, v in self.events.items()})
            object.__setattr__(self, "event_type", None)  # replaced by events

    @property
    def values(self) -> dict[str, float]:
        """Event type -> reward, whichever way it was given (empty: explicit rewards only)."""
        if self.events is not None:
            return dict(self.events)
        return {} if self.event_type is None else {self.event_type: 1.0}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "", vocabulary: Any = None,
                     defaults: RewardDefinition | None = None) -> RewardDefinition:
        """From a config table like ``[policy.reward]``: ``events`` ({type = reward}) or
        ``event_type``, ``horizon`` ('30m'), ``value`` ('one' or 'amount'), ``default``. Keys not
        given keep ``defaults``; event types are checked against ``vocabulary`` when given."""
        if isinstance(data, RewardDefinition):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"policy.reward{where} must be a table like {{events = {{purchase = 1.0}}, "
                              f"horizon = \"30m\"}}. Got {data!r}.")
        known = ("default", "event_type", "events", "horizon", "value")
        unknown = set(data) - set(known)
        if unknown:
            raise ConfigError(f"Unknown reward setting(s) {', '.join(sorted(unknown))}{where}; known ones are "
                              f"{', '.join(known)}.")
        kwargs: dict[str, Any] = {}
        if "horizon" in data:
            horizon = data["horizon"]
            kwargs["horizon"] = horizon if isinstance(horizon, timedelta) else \
                parse_duration(horizon, f"policy.reward.horizon{where}")
        if "value" in data:
            if data["value"] not in REWARD_VALUES:
                raise ConfigError(f"policy.reward.value{where} is 'one' (the event type's reward) or 'amount' (the "
                                  f"events' price x quantity). Got {data['value']!r}.")
            kwargs["value"] = data["value"]
        if "default" in data:
            kwargs["default"] = None if data["default"] is None else \
                float(_number(data, "default", "policy.reward.default", where))
        if "event_type" in data:
            name = data["event_type"]
            if name is not None and (not isinstance(name, str) or not name.strip()):
                raise ConfigError(f"policy.reward.event_type{where} must be an event type like 'purchase'. "
                                  f"Got {name!r}.")
            kwargs["event_type"] = None if name is None else _event_type(name, "policy.reward.event_type", where,
                                                                         vocabulary)
            kwargs["events"] = None
        if "events" in data:
            events = data["events"]
            if not isinstance(events, Mapping):
                raise ConfigError(f"policy.reward.events{where} must be a table of event type = reward, like "
                                  f"{{purchase = 1.0, add_to_cart = 0.2}}. Got {events!r}.")
            checked = {}
            for name in events:
                key = _event_type(str(name), f"policy.reward.events.{name}", where, vocabulary)
                checked[key] = float(_number(events, name, f"policy.reward.events.{name}", where))
            kwargs["events"] = checked
        base = defaults if defaults is not None else cls()
        try:
            return replace(base, **kwargs)
        except ConfigError as exc:
            raise ConfigError(f"policy.reward{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "events": self.values, "horizon_seconds": self.horizon.total_seconds(),
                "value": self.value, "default": self.default}


def _event_type(name: str, what: str, where: str, vocabulary: Any) -> str:
    """The canonical name of a configured event type (as the stored events carry it)."""
    if vocabulary is None:
        return name
    canonical = vocabulary.canonical(name)
    if canonical is None:
        raise ConfigError(f"{what}{where} names event type '{name}', which is not a known event type; use one of "
                          f"{', '.join(vocabulary.event_types)} (or add it under [event_types] custom = [...]).")
    return canonical


@dataclass(frozen=True)
class PolicyConfig:
    """The online policy's settings: the bandit's exploration and learning, the reward, where the
    decision log goes and how often the bandit is checkpointed. ``journeymap.toml``'s ``[policy]``
    table (``Settings.policy``) holds the same keys."""

    # SquareCB explores by how far each action's estimate trails the best; it lost less than
    # epsilon-greedy in the closed-loop benchmark (benchmarks/bandit.py), as did a small learning rate
    # that decays (AdaGrad) and pairs of context features; see ContextualBandit.
    exploration: str = "squarecb"
    epsilon: float = 0.1  # epsilon and bag: the share of decisions spread over all actions
    softmax_lambda: float = 10.0
    gamma_scale: float = 5.0
    bag: int = 5
    interactions: tuple[str, ...] = INTERACTIONS
    learning_rate: float | None = 0.01
    power_t: float | None = 0.5
    clip_p: float | None = 0.1  # a reward weighs at most 1 / clip_p; see ContextualBandit
    seed: int = 0
    vw_args: str = ""
    reward: RewardDefinition = field(default_factory=RewardDefinition)
    checkpoint_every: int = 1000  # learned rewards between checkpoints; the log replays the rest on restart
    log: Path | None = None  # the decision log (.jsonl); None: beside the event store (shop.decisions.jsonl)

    def bandit(self) -> ContextualBandit:
        return ContextualBandit(exploration=self.exploration, epsilon=self.epsilon,
                                softmax_lambda=self.softmax_lambda, gamma_scale=self.gamma_scale, bag=self.bag,
                                interactions=self.interactions, learning_rate=self.learning_rate, power_t=self.power_t,
                                clip_p=self.clip_p, seed=self.seed, vw_args=self.vw_args)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | PolicyConfig | None, where: str = "", vocabulary: Any = None,
                     defaults: PolicyConfig | None = None, base_dir: Path | None = None) -> PolicyConfig:
        """From a config table like ``[policy]`` with an optional ``[policy.reward]`` table. Keys
        not given keep ``defaults`` (e.g. the config file's, under a library caller's own); a
        relative ``log`` is taken from ``base_dir`` (the config file's folder). Each key is checked
        and a ConfigError names the key, what it takes and what arrived (``where``: " in FILE")."""
        base = defaults if defaults is not None else cls()
        if data is None:
            return base
        if isinstance(data, PolicyConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"policy{where} must be a table of settings like {{exploration = \"squarecb\"}}. "
                              f"Got {data!r}.")
        data = dict(data)
        known = sorted(f.name for f in fields(cls))
        unknown = set(data) - set(known)
        if unknown:
            raise ConfigError(f"Unknown policy setting(s) {', '.join(sorted(unknown))}{where}; known ones are "
                              f"{', '.join(known)}.")
        if "exploration" in data and data["exploration"] not in EXPLORATIONS:
            raise ConfigError(f"policy.exploration{where} is one of {', '.join(EXPLORATIONS)}. "
                              f"Got {data['exploration']!r}.")
        for key, low, high, strict, integer in (
                ("epsilon", 0, 1, False, False), ("softmax_lambda", 0, None, True, False),
                ("gamma_scale", 0, None, True, False), ("bag", 1, None, False, True),
                ("learning_rate", 0, None, True, False), ("power_t", 0, None, False, False),
                ("clip_p", 0, 1, True, False), ("seed", 0, None, False, True), ("checkpoint_every", 1, None, False, True)):
            if key in data and not (data[key] is None and key in ("learning_rate", "power_t", "clip_p")):
                _number(data, key, f"policy.{key}", where, low, high, strict, integer)
        if "interactions" in data:
            crosses = data["interactions"]
            if isinstance(crosses, str) or not isinstance(crosses, (list, tuple)) or not all(
                    isinstance(q, str) and len(q) >= 2 and set(q) <= set("CNA") for q in crosses):
                raise ConfigError(f"policy.interactions{where} must be a list of namespace crosses, each two or more "
                                  "of C (context categories), N (context numbers) and A (the action), like "
                                  f"[\"CA\", \"NA\", \"CCA\"]. Got {crosses!r}.")
            data["interactions"] = tuple(crosses)
        if "vw_args" in data and not isinstance(data["vw_args"], str):
            raise ConfigError(f"policy.vw_args{where} must be a string of Vowpal Wabbit options, like "
                              f"\"--l2 1e-6\". Got {data['vw_args']!r}.")
        if "log" in data and data["log"] is not None:
            log = data["log"]
            if not isinstance(log, (str, Path)) or Path(log).suffix.lower() not in (".jsonl", ".ndjson"):
                raise ConfigError(f"policy.log{where} must be the decision log's path, a .jsonl file like "
                                  f"\"decisions/shop.decisions.jsonl\". Got {log!r}.")
            log = Path(log).expanduser()
            data["log"] = log if log.is_absolute() or base_dir is None else Path(base_dir) / log
        if "reward" in data:
            data["reward"] = RewardDefinition.from_mapping(data["reward"], where, vocabulary, defaults=base.reward)
        return replace(base, **data)


# -- context -----------------------------------------------------------------------------------------
def context_features(profile: Mapping[str, Any] | None, context: Mapping[str, Any] | None = None) -> dict[str, Scalar]:
    """The bandit's context: the profile's numeric and categorical fields (``PROFILE_NUMERIC``,
    ``PROFILE_CATEGORICAL``, plus ``top_category`` and ``top_brand``), then the request's own
    context (session features such as device or page), which wins on a name clash."""
    out: dict[str, Scalar] = {}
    if profile:
        for name in PROFILE_NUMERIC:
            value = profile.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[name] = value
        for name in PROFILE_CATEGORICAL:
            value = profile.get(name)
            if value is not None and value != "":
                out[name] = str(value)
        for name, key in (("top_category", "top_categories"), ("top_brand", "top_brands")):
            top = profile.get(key) or []
            first = top[0] if top else None
            label = first.get("name") if isinstance(first, Mapping) else getattr(first, "name", first)
            if label:
                out[name] = str(label)
    out.update(check_features(context, "context"))
    return out


# -- events --------------------------------------------------------------------------------------------
def _epoch(value: Any) -> float | None:
    """Seconds since 1970 (UTC) of a datetime, ISO text or number; None when unreadable."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _rows(events: Any) -> Iterable[Any]:
    """Events as an iterable of rows, whatever the container (list, Arrow table, DataFrame)."""
    if hasattr(events, "to_pylist"):  # pyarrow Table / RecordBatch
        return events.to_pylist()
    if hasattr(events, "to_dict") and hasattr(events, "columns"):  # pandas DataFrame
        return events.to_dict("records")
    if isinstance(events, Mapping):
        return [events]
    return events


def _get(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


def _amount(event: Any) -> float:
    price, quantity = _get(event, "price"), _get(event, "quantity")
    price = float(price) if isinstance(price, (int, float)) and not isinstance(price, bool) else 0.0
    quantity = float(quantity) if isinstance(quantity, (int, float)) and not isinstance(quantity, bool) else 1.0
    value = price * quantity
    return value if math.isfinite(value) else 0.0


def _cut_partial_line(path: Path) -> None:
    """Drop a last line a crash cut short, so that appends start on a line of their own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


# -- the online policy ---------------------------------------------------------------------------------
@dataclass
class Decision:
    """One decision as served: the reply's fields plus what was logged."""

    decision_id: str
    action: str
    probability: float
    pmf: dict[str, float]
    ts: datetime
    user: str | None  # pseudonym
    context: dict[str, Scalar]

    def to_public(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "action": self.action, "probability": self.probability,
                "pmf": self.pmf}


@dataclass
class Settled:
    """A decision's reward, joined once: from an event, the horizon, or an explicit call."""

    decision_id: str
    reward: float
    source: str  # event, horizon or explicit
    joined: bool = True  # False: it was settled before, with this same reward (an idempotent repeat)


@dataclass(slots=True)
class _Pending:
    # The decision as its log line: a string, which the garbage collector need not scan. Thousands
    # wait for their rewards at once, and as dicts their full collections stalled a service 100+ ms.
    line: str
    ts: float
    deadline: float  # inf: waits for an explicit reward
    user: str | None
    amount: float = 0.0
    best: float | None = None  # the highest event reward reached so far (``events`` rewards)

    @property
    def record(self) -> dict[str, Any]:
        return json.loads(self.line)


class OnlinePolicy:
    """A contextual bandit serving decisions, logging each, joining rewards back and learning
    from each reward once.

    ``log_path`` is the decision log (``.jsonl``); the pending journal and the checkpoint go beside
    it. ``secret`` pseudonymizes user ids (the store's secret, so rewards match the stored events).
    On construction it resumes what the files hold: the checkpoint, the log lines learned after
    it, and the decisions still pending (a ``bandit`` passed in is used as it is, nothing
    replayed into it). Thread-safe.

    Time is event time: a decision settles at its horizon once an event later than that arrives
    (the watermark, the latest event time seen), so replays and simulations keep their own clocks;
    ``settle(until)`` settles by a given time when no more events come.
    """

    def __init__(self, log_path: str | Path, *, secret: str, config: PolicyConfig | None = None,
                 bandit: ContextualBandit | None = None, fsync: bool = False) -> None:
        from journeymap.privacy import Pseudonymizer

        self.config = config or PolicyConfig()
        self.reward_definition = self.config.reward
        self._values = self.reward_definition.values  # event type -> reward
        self._top = max(self._values.values(), default=math.inf)  # reaching it settles at once
        self.log_path = Path(log_path)
        if self.log_path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise ConfigError(f"The decision log is a .jsonl file. Got {self.log_path}.")
        stem = self.log_path.with_suffix("")
        self.pending_path = stem.with_name(stem.name + ".pending.jsonl")
        self.checkpoint_path = stem.with_name(stem.name + ".bandit.zip")
        self.fsync = fsync
        self._pseudonymize = Pseudonymizer(secret)
        self._lock = threading.RLock()
        self._pending: dict[str, _Pending] = {}
        self._by_user: dict[str, list[str]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._settled: dict[str, float] = {}
        self.watermark_: float | None = None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

        for path in (self.log_path, self.pending_path):
            _cut_partial_line(path)
        replay_from = None
        if bandit is None:
            if self.checkpoint_path.exists():
                bandit = ContextualBandit.load(self.checkpoint_path)
                replay_from = int(bandit.metadata_.get("log_lines", 0))
            else:
                bandit, replay_from = self.config.bandit(), 0
        self.bandit = bandit
        self._log_lines = 0
        for rec in self._read(self.log_path):
            self._settled[str(rec["decision_id"])] = rec.get("reward")
            if replay_from is not None and self._log_lines >= replay_from:
                self._learn(rec)  # settled after the checkpoint: learned again, once
            self._log_lines += 1
        self._since_checkpoint = self._log_lines - (replay_from or 0) if replay_from is not None else 0
        for rec in self._read(self.pending_path):
            if str(rec["decision_id"]) not in self._settled:
                self._register(rec)
        self._rewrite_pending()
        self._log = open(self.log_path, "a", encoding="utf-8")
        self._journal = open(self.pending_path, "a", encoding="utf-8")

    @classmethod
    def for_store(cls, store_path: str | Path, *, secret: str, config: PolicyConfig | None = None,
                  **kwargs: Any) -> OnlinePolicy:
        """The online policy whose files sit beside the event store (``shop.decisions.jsonl``)."""
        return cls(Path(store_path).with_suffix(".decisions.jsonl"), secret=secret, config=config, **kwargs)

    def __repr__(self) -> str:
        return (f"OnlinePolicy({str(self.log_path)!r}, settled={len(self._settled):,}, "
                f"pending={len(self._pending):,})")

    # -- files -------------------------------------------------------------------------------------
    @staticmethod
    def _read(path: Path) -> Iterable[dict[str, Any]]:
        if not path.exists():
            return
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    if fh.read().strip():  # only a last line cut by a crash may be partial
                        raise FormatError(f"{path}, line {number}: not valid JSON; the decision log is damaged.") \
                            from None
                    return

    def _append(self, fh: Any, record: Mapping[str, Any]) -> str:
        """Write ``record`` as a line; returns the line's JSON."""
        line = json.dumps(record, separators=(",", ":"))
        fh.write(line + "\n")
        fh.flush()  # in the OS once the call returns: a killed process loses nothing
        if self.fsync:
            os.fsync(fh.fileno())
        return line

    def _rewrite_pending(self) -> None:
        """The pending journal holding only the decisions still pending (written aside, then renamed)."""
        partial = self.pending_path.with_name(self.pending_path.name + ".partial")
        with open(partial, "w", encoding="utf-8") as fh:
            fh.writelines(p.line + "\n" for p in self._pending.values())
        partial.replace(self.pending_path)
        self._journal_lines = len(self._pending)

    # -- deciding ----------------------------------------------------------------------------------
    def pseudonym(self, user_id: Any) -> str:
        return self._pseudonymize(str(user_id))

    def decide(self, user_id: Any, actions: Any, context: Mapping[str, Any] | None = None,
               profile: Mapping[str, Any] | None = None, ts: datetime | str | None = None) -> Decision:
        """Choose one of ``actions`` for the user and log the decision.

        ``user_id`` is the shop's own id (pseudonymized here; None for an anonymous visitor);
        ``profile`` the user's profile JSON, ``context`` the session's own features (see
        ``context_features``); ``ts`` the decision's time (default: now), from which the reward
        horizon runs.
        """
        acts = normalize_actions(actions)
        features = context_features(profile, context)
        when = _epoch(ts) if ts is not None else datetime.now(UTC).timestamp()
        if when is None:
            raise JourneymapError(f"A decision's ts must be an ISO 8601 time like 2024-05-01T12:00:00Z. Got {ts!r}.")
        user = None if user_id is None else self.pseudonym(user_id)
        choice = self.bandit.choose(features, acts)
        decision_id = uuid.uuid4().hex
        record = {"decision_id": decision_id, "ts": _iso(when), "user": user, "context": features,
                  "actions": [{"id": aid, "features": feats} if feats else aid for aid, feats in acts],
                  "action": choice.action, "propensity": choice.probability, "reward": None, "position": 0}
        with self._lock:
            line = self._append(self._journal, record)
            self._journal_lines += 1
            self._register(record, line)
        return Decision(decision_id, choice.action, choice.probability, choice.pmf,
                        datetime.fromtimestamp(when, UTC), user, features)

    def _register(self, record: dict[str, Any], line: str | None = None) -> None:
        ts = _epoch(record["ts"])
        r = self.reward_definition
        waits = not self._values and r.default is None
        deadline = math.inf if waits else ts + r.horizon.total_seconds()
        decision_id, user = str(record["decision_id"]), record.get("user")
        line = line if line is not None else json.dumps(record, separators=(",", ":"))
        self._pending[decision_id] = _Pending(line, ts, deadline, user)
        if user is not None:
            self._by_user.setdefault(user, []).append(decision_id)
        if deadline < math.inf:
            heapq.heappush(self._deadlines, (deadline, decision_id))

    # -- rewards -----------------------------------------------------------------------------------
    def observe(self, events: Any) -> list[Settled]:
        """Join rewards from newly stored events (rows with ``user_id``, ``ts``, ``event_type`` and,
        for amounts, ``price`` and ``quantity``; the user id raw or already pseudonymized), then
        settle the decisions whose horizon the events' time has passed."""
        settled: list[Settled] = []
        r = self.reward_definition
        latest = (datetime.now(UTC) + MAX_CLOCK_AHEAD).timestamp()
        with self._lock:
            for event in _rows(events):
                ts = _epoch(_get(event, "ts"))
                if ts is None:
                    continue
                if self.watermark_ is None or ts > self.watermark_:
                    self.watermark_ = min(ts, latest)
                value = self._values.get(_get(event, "event_type"))
                if value is None or not self._by_user:
                    continue
                user = self._user_key(_get(event, "user_id"))
                if user is None:
                    continue
                for decision_id in list(self._by_user.get(user, ())):
                    p = self._pending[decision_id]
                    if not p.ts <= ts <= p.deadline:
                        continue
                    if r.value == "amount":
                        p.amount += _amount(event)
                    elif value >= self._top:
                        settled.append(self._settle(decision_id, value, "event", ts))
                    else:
                        p.best = value if p.best is None else max(p.best, value)
            if self.watermark_ is not None:
                settled.extend(self._expire(self.watermark_, strictly_after=True))
        return settled

    def _user_key(self, user_id: Any) -> str | None:
        if user_id is None:
            return None
        key = str(user_id)
        if key in self._by_user:
            return key  # already a pseudonym (events as stored)
        key = self.pseudonym(key)
        return key if key in self._by_user else None

    def settle(self, until: datetime | str | None = None) -> list[Settled]:
        """Settle every decision whose horizon ends by ``until`` (default: now): its amount, or the
        default reward. For the end of a replay or simulation, or a periodic tick."""
        when = _epoch(until) if until is not None else datetime.now(UTC).timestamp()
        if when is None:
            raise JourneymapError(f"settle() takes a time like 2024-05-01T12:00:00Z. Got {until!r}.")
        with self._lock:
            return self._expire(when, strictly_after=False)

    def _expire(self, now: float, strictly_after: bool) -> list[Settled]:
        out = []
        r = self.reward_definition
        while self._deadlines and (self._deadlines[0][0] < now or (not strictly_after and self._deadlines[0][0] <= now)):
            deadline, decision_id = heapq.heappop(self._deadlines)
            p = self._pending.get(decision_id)
            if p is None:
                continue  # settled earlier
            if r.value == "amount" and self._values:
                out.append(self._settle(decision_id, p.amount, "horizon", deadline))
            elif p.best is not None:  # a lesser event reached, settled at the horizon
                out.append(self._settle(decision_id, p.best, "event", deadline))
            elif r.default is not None:
                out.append(self._settle(decision_id, float(r.default), "horizon", deadline))
        return out

    def reward(self, decision_id: str, reward: float, ts: datetime | str | None = None) -> Settled:
        """An explicit reward for a pending decision. Repeating a settled decision's reward is a
        no-op (``joined=False``); a different one is refused, since it was learned already."""
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise JourneymapError(f"A reward must be a finite number. Got {reward!r}.")
        decision_id = str(decision_id)
        with self._lock:
            if decision_id in self._pending:
                when = _epoch(ts) if ts is not None else datetime.now(UTC).timestamp()
                return self._settle(decision_id, float(reward), "explicit", when)
            if decision_id in self._settled:
                before = self._settled[decision_id]
                if before is not None and float(before) == float(reward):
                    return Settled(decision_id, float(reward), "explicit", joined=False)
                raise RewardConflictError(f"Decision '{decision_id}' already has reward {before}; a reward is "
                                          "joined and learned once.")
        raise UnknownDecisionError(f"No decision '{decision_id}' here.")

    def _settle(self, decision_id: str, reward: float, source: str, at: float) -> Settled:
        p = self._pending.pop(decision_id)
        if p.user is not None:
            ids = self._by_user[p.user]
            ids.remove(decision_id)
            if not ids:
                del self._by_user[p.user]
        record = {**p.record, "reward": reward, "reward_source": source, "rewarded_at": _iso(at)}
        self._append(self._log, record)  # logged before learned: a crash in between replays it once
        self._log_lines += 1
        self._settled[decision_id] = reward
        self._learn(record)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.config.checkpoint_every:
            self.checkpoint()
        if not self._pending:
            self._journal.truncate(0)
            self._journal_lines = 0
        elif self._journal_lines > max(_COMPACT_AFTER, 4 * len(self._pending)):
            self._journal.close()
            self._rewrite_pending()
            self._journal = open(self.pending_path, "a", encoding="utf-8")
        return Settled(decision_id, reward, source)

    def _learn(self, record: Mapping[str, Any]) -> None:
        self.bandit.learn(record.get("context") or {}, record["actions"], record["action"], record["propensity"],
                          float(record["reward"]))

    # -- state -------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def settled(self) -> int:
        return len(self._settled)

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        """A decision's record: pending (reward null) or settled; None when unknown."""
        with self._lock:
            p = self._pending.get(str(decision_id))
            if p is not None:
                return dict(p.record)
            if str(decision_id) not in self._settled:
                return None
            self._log.flush()
        for rec in self._read(self.log_path):
            if str(rec["decision_id"]) == str(decision_id):
                return rec
        return None

    def records(self, pending: bool = True) -> list[dict[str, Any]]:
        """Every settled decision (from the log), then the pending ones (reward null)."""
        with self._lock:
            self._log.flush()
            waiting = [dict(p.record) for p in self._pending.values()] if pending else []
        return [*self._read(self.log_path), *waiting]

    def log(self, pending: bool = True) -> DecisionLog:
        """The decisions as a ``DecisionLog`` for ``evaluate_policy``."""
        return from_records(self.records(pending), source=str(self.log_path))

    def checkpoint(self) -> Path:
        """Save the bandit with the number of log lines it has learned."""
        with self._lock:
            path = self.bandit.save(self.checkpoint_path, log_lines=self._log_lines)
            self._since_checkpoint = 0
        return path

    def close(self) -> None:
        """Checkpoint and close the files (pending decisions stay in the journal for next time)."""
        with self._lock:
            if self._log.closed:
                return
            self.checkpoint()
            self._log.close()
            self._journal.close()

    def __enter__(self) -> OnlinePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> dict[str, Any]:
        rewards = [v for v in self._settled.values() if v is not None]
        return {"log": str(self.log_path), "settled": len(self._settled), "pending": len(self._pending),
                "mean_reward": sum(rewards) / len(rewards) if rewards else None,
                "watermark": None if self.watermark_ is None else _iso(self.watermark_),
                "bandit": self.bandit.arguments(), "reward": self.reward_definition.to_dict()}

