"""Off-policy evaluation: what a candidate policy's mean reward would have been, estimated from a
decision log written under another (logging) policy, with confidence intervals.

Estimators: IPS (inverse propensity scoring), SNIPS (self-normalized IPS), DR (doubly robust, with
a cross-fitted reward model) and DM (the reward model alone). Each decision weighs
w = pi_e(a|x) / pi_b(a|x), the candidate's probability of the logged action over its logged
propensity. Decisions whose reward is not joined yet are left out (and counted).

Multi-slot pages (the Open Bandit Dataset's 3 positions) are evaluated as OBP does: every slot is
a decision of its own, the candidate's probability is that of the logged item *in that slot*, and
the estimate is the mean reward per slot, pooled over slots (``by="position"`` adds one per slot).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import norm

from journeymap.exceptions import FormatError, JourneymapError
from journeymap.policy._log import DecisionLog, read_log

ESTIMATORS = ("ips", "snips", "dr", "dm")
CI_METHODS = ("bootstrap", "normal")
_SUM_TOLERANCE = 1e-4  # a policy file's probabilities per decision must sum to 1 within this
_BOOTSTRAP_CELLS = 20_000_000  # resample counts held in memory at once (160 MB of float64)


# -- candidate policies ---------------------------------------------------------------------------
@dataclass
class ActionProbabilities:
    """The candidate policy on each logged decision."""

    chosen: np.ndarray  # (n,) pi_e(logged action | x)
    dist: np.ndarray | None  # (n, K) pi_e(. | x); None where only the logged action's is known


class Policy:
    """A candidate policy: gives each logged decision a distribution over its action set."""

    name = "policy"

    def probabilities(self, log: DecisionLog) -> ActionProbabilities:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _from_dist(log: DecisionLog, dist: np.ndarray) -> ActionProbabilities:
    return ActionProbabilities(chosen=dist[np.arange(len(log)), log.chosen], dist=dist)


class Uniform(Policy):
    """Every action of the decision's action set equally likely."""

    name = "uniform"

    def probabilities(self, log: DecisionLog) -> ActionProbabilities:
        avail = log.availability().astype(np.float64)
        return _from_dist(log, avail / avail.sum(axis=1, keepdims=True))


class Logged(Policy):
    """The logging policy itself (an on-policy sanity check: every weight is 1).

    Its probabilities of the actions not taken are not in the log, so DR's model term uses the
    logged action as a one-draw sample of it, and DR reads the on-policy mean exactly too.
    """

    name = "logged"

    def probabilities(self, log: DecisionLog) -> ActionProbabilities:
        return ActionProbabilities(chosen=log.decisions["propensity"].to_numpy(dtype=np.float64), dist=None)


class FixedAction(Policy):
    """Always the same action."""

    def __init__(self, action: Any) -> None:
        self.action = str(action)
        self.name = f"action:{self.action}"

    def probabilities(self, log: DecisionLog) -> ActionProbabilities:
        k = log.action_index(self.action)
        offered = log.availability()[:, k]
        if not offered.all():
            i = int(np.argmin(offered))
            row = log.decisions.iloc[i]
            raise JourneymapError(f"The policy {self.name} cannot be evaluated on {log.source}: decision "
                                  f"'{row['decision_id']}' ({row['line']}) does not offer action '{self.action}'.")
        dist = np.zeros((len(log), log.n_actions))
        dist[:, k] = 1.0
        return _from_dist(log, dist)


class ActionTable(Policy):
    """Action probabilities from a table: columns ``action``, ``probability`` and the keys they
    depend on, ``decision_id`` (one distribution per decision) and/or ``position`` (one per slot);
    with neither, one distribution for every decision."""

    KEYS = ("decision_id", "position")

    def __init__(self, table: pd.DataFrame, name: str = "table", source: str = "policy table",
                 first_line: int | None = None) -> None:
        self.name = name
        self.source = source
        # where row i is: a CSV's line (first_line = 2 below its header) or the i-th row
        where = (lambda i: f"line {first_line + i}") if first_line is not None else (lambda i: f"row {i + 1}")
        missing = [c for c in ("action", "probability") if c not in table.columns]
        if missing:
            raise FormatError(f"{source}: a policy table needs columns action and probability "
                              f"(and decision_id and/or position). Missing: {', '.join(missing)}.")
        self.keys = [k for k in self.KEYS if k in table.columns]
        table = table[[*self.keys, "action", "probability"]].copy()
        table["action"] = table["action"].map(_id_text)
        if "decision_id" in self.keys:
            table["decision_id"] = table["decision_id"].map(_id_text)
        if "position" in self.keys:
            pos = pd.to_numeric(table["position"], errors="coerce")
            if pos.isna().any() or (pos != pos.round()).any():
                i = int(np.argmax((pos.isna() | (pos != pos.round())).to_numpy()))
                raise FormatError(f"{source}, {where(i)}: field 'position' must be a whole number. "
                                  f"Got '{_shown(table['position'].iloc[i])}'.")
            table["position"] = pos.astype(np.int64)
        prob = pd.to_numeric(table["probability"], errors="coerce")
        bad = (prob.isna() | (prob < 0) | (prob > 1)).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise FormatError(f"{source}, {where(i)}: field 'probability' must be a number in [0, 1]. "
                              f"Got '{_shown(table['probability'].iloc[i])}'.")
        table["probability"] = prob.astype(np.float64)
        dup = table.duplicated([*self.keys, "action"])
        if dup.any():
            i = int(np.argmax(dup.to_numpy()))
            raise FormatError(f"{source}, {where(i)}: action '{table['action'].iloc[i]}' appears twice for "
                              f"the same {' and '.join(self.keys) or 'policy'}.")
        sums = table.groupby(self.keys)["probability"].sum() if self.keys else pd.Series([table["probability"].sum()])
        off = (sums - 1.0).abs() > _SUM_TOLERANCE
        if off.any():
            key = sums.index[int(np.argmax(off.to_numpy()))]
            where = f" for {_describe_key(self.keys, key)}" if self.keys else ""
            raise FormatError(f"{source}: the probabilities{where} must sum to 1. Got {sums[off].iloc[0]:.6g}.")
        self.table = table.reset_index(drop=True)

    @classmethod
    def read(cls, path: str | Path, name: str | None = None) -> ActionTable:
        """A policy table from CSV, JSON lines, JSON (a list of rows) or Parquet."""
        path = Path(path)
        if not path.is_file():
            raise FormatError(f"Policy file {path} not found.")
        suffix = path.suffix.lower()
        try:
            if suffix == ".parquet":
                frame = pd.read_parquet(path)
            elif suffix in (".jsonl", ".ndjson"):
                frame = pd.read_json(path, lines=True, dtype=False)
            elif suffix == ".json":
                frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
            else:
                frame = pd.read_csv(path, dtype={"action": str, "decision_id": str})
        except (ValueError, pd.errors.ParserError) as exc:
            raise FormatError(f"{path}: not readable as a policy table ({exc}).") from None
        return cls(frame, name=name or f"file:{path}", source=str(path),
                   first_line=2 if suffix not in (".parquet", ".jsonl", ".ndjson", ".json") else None)

    def probabilities(self, log: DecisionLog) -> ActionProbabilities:
        table = self.table[self.table["probability"] > 0]
        unknown = sorted(set(table["action"]) - set(log.actions))
        if unknown:
            raise JourneymapError(f"{self.source} gives probability to action(s) {', '.join(unknown[:5])} that "
                                  f"{log.source} never offers, so the log holds no evidence about them.")
        cols = np.array([log.action_index(a) for a in table["action"]], dtype=np.int64)
        if self.keys:
            key_frame = table[self.keys].drop_duplicates().reset_index(drop=True)
            key_index = pd.MultiIndex.from_frame(key_frame)
            rows = key_index.get_indexer(pd.MultiIndex.from_frame(table[self.keys]))
            matrix = np.zeros((len(key_frame), log.n_actions))
            matrix[rows, cols] = table["probability"].to_numpy()
            wanted = pd.MultiIndex.from_frame(log.decisions[self.keys].astype(
                {"decision_id": object} if "decision_id" in self.keys else {}))
            which = key_index.get_indexer(wanted)
            if (which < 0).any():
                i = int(np.argmax(which < 0))
                row = log.decisions.iloc[i]
                raise JourneymapError(f"{self.source} has no probabilities for decision '{row['decision_id']}' "
                                      f"({_describe_key(self.keys, tuple(row[k] for k in self.keys))}) of "
                                      f"{log.source}.")
            dist = matrix[which]
        else:
            dist = np.zeros((len(log), log.n_actions))
            dist[:, cols] = table["probability"].to_numpy()
        if log.available is not None:
            outside = (dist > 0) & ~log.available
            if outside.any():
                i = int(np.argmax(outside.any(axis=1)))
                k = int(np.argmax(outside[i]))
                row = log.decisions.iloc[i]
                raise JourneymapError(f"{self.source} gives action '{log.actions[k]}' probability "
                                      f"{dist[i, k]:.3g} in decision '{row['decision_id']}' ({row['line']}), "
                                      "which does not offer it.")
        return _from_dist(log, dist)


def _shown(value: Any) -> str:
    return str(value.item() if isinstance(value, np.generic) else value)


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe_key(keys: Sequence[str], key: Any) -> str:
    values = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{k} {v}" for k, v in zip(keys, values))


def empirical_policy(log: DecisionLog, by: Sequence[str] = ("position",), name: str | None = None) -> ActionTable:
    """The action distribution a log shows, per ``by`` (default per slot): how often each action
    was chosen. For a context-free logging policy (OBP's Bernoulli TS), its time-averaged policy."""
    keys = list(by)
    counts = log.decisions.groupby([*keys, "action"]).size().rename("count").reset_index()
    totals = counts.groupby(keys)["count"].transform("sum") if keys else counts["count"].sum()
    counts["probability"] = counts["count"] / totals
    return ActionTable(counts.drop(columns="count"), name=name or f"empirical:{log.source}",
                       source=f"empirical distribution of {log.source}")


class BetaThompson(Policy):
    """Bernoulli Thompson sampling frozen at Beta(alpha, beta) per action, filling the slots in the
    order of the sampled click rates (OBP's ``BernoulliTS.compute_batch_action_dist``): the slot
    probabilities come from ``n_sim`` Monte Carlo draws. Slots map to the log's positions in
    increasing order."""

    def __init__(self, alpha: Mapping[str, float], beta: Mapping[str, float], n_sim: int = 100_000,
                 seed: int = 0, name: str = "thompson") -> None:
        if set(map(str, alpha)) != set(map(str, beta)):
            raise JourneymapError("Thompson sampling needs alpha and beta for the same actions.")
        self.alpha = {str(k): float(v) for k, v in alpha.items()}
        self.beta = {str(k): float(beta[k]) for k in alpha}
        bad = [k for k in self.alpha if not (self.alpha[k] > 0 and self.beta[k] > 0)]
        if bad:
            raise JourneymapError(f"Beta priors must be positive. Got alpha {self.alpha[bad[0]]}, beta "
                                  f"{self.beta[bad[0]]} for action '{bad[0]}'.")
        self.n_sim, self.seed, self.name = int(n_sim), seed, name

    @classmethod
    def read(cls, path: str | Path, **kwargs: Any) -> BetaThompson:
        """From JSON ``{"alpha": ..., "beta": ...}``: objects action -> value, or lists indexed by
        action ids 0..K-1 (OBP's layout); optional ``n_sim`` and ``seed``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise FormatError(f"{path}: not readable as Thompson-sampling priors ({exc}).") from None
        if not isinstance(data, dict) or "alpha" not in data or "beta" not in data:
            raise FormatError(f"{path}: Thompson-sampling priors are a JSON object with 'alpha' and 'beta'.")
        options = {k: data[k] for k in ("n_sim", "seed") if k in data}
        return cls(_as_map(data["alpha"]), _as_map(data["beta"]), name=f"thompson:{path}", **{**options, **kwargs})

    def table(self, positions: Sequence[int]) -> ActionTable:
        """Per slot (position), the probability of each action being shown there."""
        actions = list(self.alpha)
        a = np.array([self.alpha[k] for k in actions])
        b = np.array([self.beta[k] for k in actions])
        slots = len(positions)
        if slots > len(actions):
            raise JourneymapError(f"Thompson sampling over {len(actions)} actions cannot fill {slots} slots.")
        rng = np.random.default_rng(self.seed)
        counts = np.zeros((slots, len(actions)))
        block = max(1, 2_000_000 // len(actions))
        for start in range(0, self.n_sim, block):
            size = min(block, self.n_sim - start)
            draws = rng.beta(a, b, size=(size, len(actions)))  # (S, K)
            top = np.argpartition(-draws, slots - 1, axis=1)[:, :slots] if slots < len(actions) else \
                np.tile(np.arange(len(actions)), (size, 1))
            order = np.argsort(-np.take_along_axis(draws, top, axis=1), axis=1)
            ranked = np.take_along_axis(top, order, axis=1)  # (S, slots)
            for j in range(slots):
                counts[j] += np.bincount(ranked[:, j], minlength=len(actions))
        rows = [{"position": int(p), "action": actions[k], "probability": counts[j, k] / self.n_sim}
                for j, p in enumerate(positions) for k in range(len(actions))]
        return ActionTable(pd.DataFrame(rows), name=self.name, source=self.name)

    def probabilities(self, log: DecisionLog) -> ActionProbabilities:
        positions = sorted(int(p) for p in log.decisions["position"].unique())
        return self.table(positions).probabilities(log)


def _as_map(values: Any) -> Any:
    """OBP's priors are lists indexed by item id; journeymap's are objects action -> value."""
    return dict(enumerate(values)) if isinstance(values, list) else values


POLICY_SPECS = ("uniform", "logged", "action:ID", "file:PATH", "empirical:LOG", "thompson:PRIORS.json")


def parse_policy(spec: str | Policy, format: str | None = None) -> Policy:
    """A policy from its command-line spelling (see ``POLICY_SPECS``); ``format`` reads an
    ``empirical:`` log."""
    if isinstance(spec, Policy):
        return spec
    text = str(spec).strip()
    kind, sep, arg = text.partition(":")
    if text == "uniform":
        return Uniform()
    if text == "logged":
        return Logged()
    if sep and kind == "action" and arg:
        return FixedAction(arg)
    if sep and kind == "file" and arg:
        return ActionTable.read(arg)
    if sep and kind == "empirical" and arg:
        return empirical_policy(read_log(arg, format=format))
    if sep and kind == "thompson" and arg:
        return BetaThompson.read(arg)
    if Path(text).is_file():
        return ActionTable.read(text)
    raise JourneymapError(f"A policy is one of {', '.join(POLICY_SPECS)} (a bare path means file:PATH). "
                          f"Got '{text}'.")


# -- reward model ---------------------------------------------------------------------------------
class RewardModel:
    """Expected reward of every action in every decision, for DR and DM.

    A linear model on [context features, the action (one-hot), the action's features, the
    per-decision action features (e.g. user-item affinity), the position (one-hot)]: logistic
    regression for 0/1 rewards, ridge regression otherwise. Linear, so the predictions for all K
    actions of n decisions come from n + K partial scores, not an n*K design matrix.
    """

    def __init__(self, kind: str = "auto", C: float = 1.0, max_iter: int = 1000) -> None:
        self.kind = kind  # auto: logistic when every reward is 0 or 1, else ridge
        self.C = C  # inverse regularisation strength (ridge alpha = 1 / C)
        self.max_iter = max_iter

    def clone(self) -> RewardModel:
        """The same hyperparameters, unfitted."""
        return type(self)(kind=self.kind, C=self.C, max_iter=self.max_iter)

    def _check(self) -> None:
        if self.kind not in ("auto", "logistic", "ridge"):
            raise JourneymapError(f"A reward model's kind is auto, logistic or ridge. Got '{self.kind}'.")
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise JourneymapError(f"A reward model's C must be a positive number. Got {self.C!r}.")

    # feature blocks, learned from the decisions passed to fit
    def _learn_encoding(self, log: DecisionLog, rows: np.ndarray) -> None:
        ctx = log.context.iloc[rows]
        self.numeric_ = {}
        self.levels_ = {}
        for name in log.context.columns:
            col = ctx[name]
            if pd.api.types.is_numeric_dtype(col):
                values = col.to_numpy(dtype=float)
                mean = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
                std = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
                self.numeric_[name] = (mean, std if std > 0 else 1.0)
            else:
                self.levels_[name] = sorted(col.dropna().astype(str).unique())
        feats = log.action_features
        parts = []
        for name in feats.columns:
            col = feats[name]
            if pd.api.types.is_numeric_dtype(col):
                values = col.to_numpy(dtype=float)
                std = np.nanstd(values)
                parts.append(np.nan_to_num((values - np.nanmean(values)) / (std if std > 0 else 1.0))[:, None])
            else:
                parts.append(pd.get_dummies(col.astype(str)).to_numpy(dtype=float))
        self.action_block_ = np.hstack(parts) if parts else np.zeros((log.n_actions, 0))  # (K, d_a)
        self.per_decision_ = {}
        chosen = log.chosen[rows]
        for name, grid in log.decision_action_features.items():
            values = grid[rows, chosen]
            std = np.nanstd(values) if np.isfinite(values).any() else 1.0
            self.per_decision_[name] = (float(np.nanmean(values)) if np.isfinite(values).any() else 0.0,
                                        float(std) if std > 0 else 1.0)
        self.positions_ = sorted(int(p) for p in log.decisions["position"].iloc[rows].unique())
        self.actions_ = log.actions

    def _context_block(self, log: DecisionLog, rows: np.ndarray) -> np.ndarray:
        ctx = log.context.iloc[rows]
        parts = []
        for name, (mean, std) in self.numeric_.items():
            parts.append(np.nan_to_num((ctx[name].to_numpy(dtype=float) - mean) / std)[:, None])
        for name, levels in self.levels_.items():
            codes = pd.Index(levels).get_indexer(ctx[name].astype(object).where(ctx[name].notna(), None))
            block = np.zeros((len(rows), len(levels)))
            hit = codes >= 0
            block[np.flatnonzero(hit), codes[hit]] = 1.0
            parts.append(block)
        pos = log.decisions["position"].to_numpy()[rows]
        parts.append((pos[:, None] == np.array(self.positions_)[None, :]).astype(float))
        return np.hstack(parts) if parts else np.zeros((len(rows), 0))

    def _decision_action_block(self, log: DecisionLog, rows: np.ndarray) -> np.ndarray:
        """(m, K, d) per-decision action features, standardised, missing as 0."""
        grids = [np.nan_to_num((log.decision_action_features[name][rows] - mean) / std)
                 for name, (mean, std) in self.per_decision_.items()]
        return np.stack(grids, axis=2) if grids else np.zeros((len(rows), len(self.actions_), 0))

    def fit(self, log: DecisionLog, rows: np.ndarray | None = None) -> RewardModel:
        """Fit on the decisions ``rows`` (default: every decision with a reward)."""
        self._check()
        rows = np.flatnonzero(log.rewarded) if rows is None else np.asarray(rows)
        if len(rows) == 0:
            raise JourneymapError(f"A reward model needs decisions with a reward; {log.source} has none joined yet.")
        y = log.decisions["reward"].to_numpy(dtype=float)[rows]
        binary = bool(np.isin(y, (0.0, 1.0)).all())
        if self.kind == "logistic" and not binary:
            raise JourneymapError("A logistic reward model needs 0/1 rewards; use kind='ridge' for real rewards.")
        self.kind_ = "logistic" if self.kind == "auto" and binary else ("ridge" if self.kind == "auto" else self.kind)
        self._learn_encoding(log, rows)
        chosen = log.chosen[rows]
        ctx = self._context_block(log, rows)
        onehot = sparse.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), chosen)),
                                   shape=(len(rows), len(self.actions_)))
        per = self._decision_action_block(log, rows)[np.arange(len(rows)), chosen]  # (m, d)
        design = sparse.hstack([sparse.csr_matrix(ctx), onehot, sparse.csr_matrix(self.action_block_[chosen]),
                                sparse.csr_matrix(per)], format="csr")
        self.constant_ = None
        if self.kind_ == "logistic" and len(np.unique(y)) < 2:
            self.constant_ = float(y[0])  # every reward alike: nothing to learn
            self.coef_ = np.zeros(design.shape[1])
            self.intercept_ = 0.0
        elif self.kind_ == "logistic":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(design, y)
            self.coef_, self.intercept_ = model.coef_[0], float(model.intercept_[0])
        else:
            from sklearn.linear_model import Ridge

            model = Ridge(alpha=1.0 / self.C).fit(design, y)
            self.coef_, self.intercept_ = np.asarray(model.coef_).ravel(), float(model.intercept_)
        self.n_features_ = design.shape[1]
        return self

    def predict(self, log: DecisionLog, rows: np.ndarray | None = None) -> np.ndarray:
        """(m, K) expected reward of every action in the decisions ``rows`` (default: all)."""
        if not hasattr(self, "coef_"):
            from journeymap.models._base import NotFittedError

            raise NotFittedError("This RewardModel is not fitted yet: call fit(log) first.")
        if log.actions != self.actions_:
            raise JourneymapError("This reward model was fitted on a log with other actions; refit it on this one.")
        rows = np.arange(len(log)) if rows is None else np.asarray(rows)
        if self.constant_ is not None:
            return np.full((len(rows), len(self.actions_)), self.constant_)
        ctx = self._context_block(log, rows)
        d_c, k = ctx.shape[1], len(self.actions_)
        d_a = self.action_block_.shape[1]
        w_c, w_k = self.coef_[:d_c], self.coef_[d_c:d_c + k]
        w_a, w_d = self.coef_[d_c + k:d_c + k + d_a], self.coef_[d_c + k + d_a:]
        score = (ctx @ w_c + self.intercept_)[:, None] + (w_k + self.action_block_ @ w_a)[None, :]  # (m, K)
        if len(w_d):
            score = score + self._decision_action_block(log, rows) @ w_d
        return 1.0 / (1.0 + np.exp(-score)) if self.kind_ == "logistic" else score

    def describe(self) -> dict[str, Any]:
        return {"kind": getattr(self, "kind_", self.kind), "C": self.C,
                "features": getattr(self, "n_features_", None)}


def cross_fit(model: RewardModel, log: DecisionLog, rows: np.ndarray, folds: int = 3, seed: int = 0) -> np.ndarray:
    """(len(rows), K) predictions for ``rows``, each from a model fitted on the other folds, so
    that no decision's reward informs its own prediction (cross-fitting; 1 fold: in-sample)."""
    return _cross_fit(model, log, rows, folds, seed)[0]


def _cross_fit(model: RewardModel, log: DecisionLog, rows: np.ndarray, folds: int,
               seed: int) -> tuple[np.ndarray, RewardModel]:
    from sklearn.model_selection import KFold

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise JourneymapError(f"Cross-fitting folds must be a whole number >= 1. Got {folds!r}.")
    rows = np.asarray(rows)
    if folds == 1:
        fitted = model.clone().fit(log, rows)
        return fitted.predict(log, rows), fitted
    if len(rows) < 2 * folds:
        raise JourneymapError(f"Cross-fitting {folds} folds needs at least {2 * folds} decisions with a reward. "
                              f"Got {len(rows)}.")
    q_hat = np.zeros((len(rows), log.n_actions))
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(rows):
        fitted = model.clone().fit(log, rows[train])
        q_hat[test] = fitted.predict(log, rows[test])
    return q_hat, fitted


# -- estimates -------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """One estimator's estimate of a candidate policy's mean reward, with its interval and the
    weights behind it."""

    estimator: str  # ips, snips, dr or dm
    value: float
    ci: tuple[float, float]
    ci_method: str  # bootstrap (percentile) or normal
    confidence: float
    std_error: float  # normal approximation, whatever the interval's method
    n: int  # decisions with a reward, the estimate's denominator
    effective_sample_size: float  # (sum w)^2 / sum w^2
    max_weight: float
    mean_weight: float  # about 1 when the propensities are right (IPS's sanity check)
    logged_value: float  # the same decisions' mean reward under the logging policy: the base rate
    policy: str = ""
    group: str = ""  # e.g. "position=1" in a breakdown; "" for all decisions

    @property
    def lift(self) -> float:
        """Relative change over the logging policy's mean reward."""
        return self.value / self.logged_value - 1.0 if self.logged_value else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "policy": self.policy, "group": self.group or None,
                "estimate": _num(self.value), "ci": [_num(self.ci[0]), _num(self.ci[1])],
                "ci_method": self.ci_method, "confidence": self.confidence, "std_error": _num(self.std_error),
                "n": self.n, "effective_sample_size": _num(self.effective_sample_size),
                "max_weight": _num(self.max_weight), "mean_weight": _num(self.mean_weight),
                "logged_value": _num(self.logged_value), "lift": _num(self.lift)}

    def to_frame(self) -> pd.DataFrame:
        data = self.to_dict()
        low, high = data.pop("ci")
        return pd.DataFrame([{**data, "ci_low": low, "ci_high": high}])

    def figure(self):
        """The estimate with its interval beside the logging policy's mean reward."""
        return _figure([self], f"{self.estimator.upper()} estimate of {self.policy} (n={self.n:,})")


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class OPEResult:
    """Every requested estimator's estimate of one candidate policy on one decision log."""

    policy: str
    estimates: list[Estimate]
    log: dict[str, Any]  # source, format, decisions, rewarded, pending, actions, positions, logged_value
    reward_model: dict[str, Any] | None = None  # kind, C, features, folds (DR and DM only)
    groups: dict[str, list[Estimate]] = field(default_factory=dict)  # "position=1" -> estimates
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, estimator: str) -> Estimate:
        for e in self.estimates:
            if e.estimator == estimator:
                return e
        raise KeyError(f"No {estimator} estimate here; estimators run: {', '.join(e.estimator for e in self.estimates)}.")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"policy": self.policy, "log": self.log,
                                "estimates": [e.to_dict() for e in self.estimates]}
        if self.reward_model:
            data["reward_model"] = self.reward_model
        if self.groups:
            data["groups"] = {g: [e.to_dict() for e in es] for g, es in self.groups.items()}
        data["warnings"] = list(self.warnings)
        return data

    def to_frame(self) -> pd.DataFrame:
        """One row per estimator; with a breakdown, one per estimator and group after them."""
        every = self.estimates + [e for es in self.groups.values() for e in es]
        frame = pd.concat([e.to_frame() for e in every], ignore_index=True)
        return frame if self.groups else frame.drop(columns="group")

    def figure(self):
        """Each estimator's estimate and interval, beside the logging policy's mean reward."""
        return _figure(self.estimates, f"Off-policy estimates of {self.policy} from {self.log.get('source')} "
                                       f"(n={self.log.get('rewarded', 0):,})")


def _figure(estimates: Sequence[Estimate], title: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    names = [e.estimator.upper() + (f" {e.group}" if e.group else "") for e in estimates]
    values = [e.value for e in estimates]
    fig.add_scatter(
        x=names, y=values, mode="markers", marker={"size": 10}, name="estimate",
        error_y={"type": "data", "symmetric": False,
                 "array": [e.ci[1] - e.value for e in estimates], "arrayminus": [e.value - e.ci[0] for e in estimates]},
        customdata=[[e.n, e.effective_sample_size, e.max_weight] for e in estimates],
        hovertemplate="%{x}: %{y:.4g}<br>n=%{customdata[0]:,}, effective n=%{customdata[1]:,.0f}, "
                      "max weight %{customdata[2]:.3g}<extra></extra>")
    if estimates:
        fig.add_hline(y=estimates[0].logged_value, line_dash="dash",
                      annotation_text=f"logging policy {estimates[0].logged_value:.4g}")
    fig.update_layout(title=title, yaxis_title="mean reward per decision",
                      xaxis_title=f"estimator ({estimates[0].confidence:.0%} {estimates[0].ci_method} interval)"
                      if estimates else "estimator")
    return fig


def _resample_counts(n: int, n_resamples: int, seed: int):
    """Blocks of bootstrap resamples as (block, n) case counts."""
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_CELLS // max(n, 1))
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        cells = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        yield np.bincount(cells.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def _estimates(names: Sequence[str], w: np.ndarray, r: np.ndarray, terms: Mapping[str, np.ndarray | None],
               ci: str, confidence: float, n_resamples: int, seed: int, policy: str,
               group: str = "") -> list[Estimate]:
    """Each estimator's estimate from per-decision weights, rewards and terms (the mean of its
    terms; SNIPS a ratio), every bootstrap interval from the same resamples."""
    n = len(w)
    nan = float("nan")
    if n == 0:
        return [Estimate(e, nan, (nan, nan), ci, confidence, nan, 0, 0.0, nan, nan, nan, policy, group)
                for e in names]
    z = float(norm.ppf(0.5 + confidence / 2.0))
    wsum = float(w.sum())
    values: dict[str, float] = {}
    errors: dict[str, float] = {}
    for e in names:
        if e == "snips":
            value = float(w @ r / wsum) if wsum > 0 else nan
            influence = w * (r - value) / (wsum / n)  # delta method for the ratio
        else:
            value = float(terms[e].mean())
            influence = terms[e] - value
        values[e] = value
        errors[e] = float(influence.std(ddof=1) / math.sqrt(n)) if n > 1 and math.isfinite(value) else nan
    intervals = {e: (values[e] - z * errors[e], values[e] + z * errors[e]) for e in names}
    if ci == "bootstrap":
        draws: dict[str, list[np.ndarray]] = {e: [] for e in names}
        for counts in _resample_counts(n, n_resamples, seed):  # (B, n)
            for e in names:
                if e == "snips":
                    den = counts @ w
                    with np.errstate(invalid="ignore", divide="ignore"):
                        draws[e].append(np.where(den > 0, (counts @ (w * r)) / den, np.nan))
                else:
                    draws[e].append(counts @ terms[e] / n)
        tail = (1.0 - confidence) / 2.0
        for e in names:
            boot = np.concatenate(draws[e])
            boot = boot[np.isfinite(boot)]
            intervals[e] = (tuple(float(v) for v in np.quantile(boot, [tail, 1 - tail]))
                            if len(boot) and math.isfinite(values[e]) else (nan, nan))
    ess = wsum ** 2 / float(w @ w) if w.any() else 0.0
    return [Estimate(e, values[e], (float(intervals[e][0]), float(intervals[e][1])), ci, confidence, errors[e],
                     n, ess, float(w.max()), float(w.mean()), float(r.mean()), policy, group) for e in names]


def evaluate_policy(log: DecisionLog | str | Path, policy: Policy | str,
                    estimators: Sequence[str] = ("ips", "snips", "dr"), ci: str = "bootstrap",
                    confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0,
                    reward_model: RewardModel | None = None, folds: int = 3, by: str | None = None,
                    format: str | None = None) -> OPEResult:
    """Estimate ``policy``'s mean reward per decision from ``log`` with each of ``estimators``.

    ``ci``: ``bootstrap`` (percentile, ``n_resamples`` resamples of the decisions; the reward
    model stays fixed) or ``normal`` (estimate +- z * standard error; SNIPS by the delta method).
    DR and DM use ``reward_model`` (default: ``RewardModel()``), cross-fitted over ``folds``.
    ``by="position"`` adds the estimates of each slot.
    """
    if not isinstance(log, DecisionLog):
        log = read_log(log, format=format)
    policy = parse_policy(policy, format=format)
    names = list(dict.fromkeys(str(e).strip().lower() for e in estimators))
    unknown = [e for e in names if e not in ESTIMATORS]
    if unknown or not names:
        raise JourneymapError(f"Estimators are some of {', '.join(ESTIMATORS)}. Got '{', '.join(unknown) or 'none'}'.")
    if ci not in CI_METHODS:
        raise JourneymapError(f"The interval method is bootstrap or normal. Got '{ci}'.")
    if not 0 < confidence < 1:
        raise JourneymapError(f"The confidence level must be between 0 and 1, like 0.95. Got {confidence!r}.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise JourneymapError(f"The number of bootstrap resamples must be a whole number >= 1. Got {n_resamples!r}.")
    if by not in (None, "position"):
        raise JourneymapError(f"A breakdown is by position (or none). Got '{by}'.")

    probs = policy.probabilities(log)
    rows = np.flatnonzero(log.rewarded)
    summary = log.summary()
    if len(rows) == 0:
        raise JourneymapError(f"No decision in {log.source} has a reward yet ({len(log):,} pending); "
                              "join the rewards back before evaluating.")
    r = log.decisions["reward"].to_numpy(dtype=float)[rows]
    w = probs.chosen[rows] / log.decisions["propensity"].to_numpy(dtype=float)[rows]
    chosen = log.chosen[rows]
    terms: dict[str, np.ndarray | None] = {"ips": w * r, "snips": None}
    model_info = None
    if "dr" in names or "dm" in names:
        model = reward_model if reward_model is not None else RewardModel()
        q_hat, fitted = _cross_fit(model, log, rows, folds, seed)  # (m, K)
        q_logged = q_hat[np.arange(len(rows)), chosen]
        dm = q_logged if probs.dist is None else (probs.dist[rows] * q_hat).sum(axis=1)
        terms["dm"] = dm
        terms["dr"] = dm + w * (r - q_logged)
        model_info = {**fitted.describe(), "folds": folds}

    def run(mask: np.ndarray, group: str) -> list[Estimate]:
        return _estimates(names, w[mask], r[mask], {e: None if t is None else t[mask] for e, t in terms.items()},
                          ci, confidence, n_resamples, seed, policy.name, group)

    estimates = run(np.ones(len(rows), dtype=bool), "")
    groups = {}
    if by == "position":
        pos = log.decisions["position"].to_numpy()[rows]
        groups = {f"position={p}": run(pos == p, f"position={p}") for p in sorted(np.unique(pos))}
    return OPEResult(policy=policy.name, estimates=estimates, log=summary, reward_model=model_info,
                     groups=groups, warnings=_warnings(w, len(rows), policy))


def _warnings(w: np.ndarray, n: int, policy: Policy) -> list[str]:
    out = []
    if not w.any():
        out.append("No logged decision took an action the candidate policy would take (every weight is 0): IPS "
                   "reads 0 and SNIPS is undefined; DR and DM rest on the reward model's extrapolation alone.")
    elif not isinstance(policy, Logged):
        ess = w.sum() ** 2 / (w @ w)
        if ess < max(30.0, 0.01 * n):
            out.append(f"The effective sample size is {ess:,.0f} of {n:,} decisions: a few decisions carry the "
                       "estimate, so intervals are wide and may undercover; log with more exploration.")
    return out


def ips(log: DecisionLog, policy: Policy | str, **options: Any) -> Estimate:
    """Inverse propensity scoring: mean of w * reward."""
    return evaluate_policy(log, policy, estimators=("ips",), **options)["ips"]


def snips(log: DecisionLog, policy: Policy | str, **options: Any) -> Estimate:
    """Self-normalized IPS: sum(w * reward) / sum(w)."""
    return evaluate_policy(log, policy, estimators=("snips",), **options)["snips"]


def doubly_robust(log: DecisionLog, policy: Policy | str, **options: Any) -> Estimate:
    """Doubly robust: the reward model's value of the policy plus the IPS-weighted model error."""
    return evaluate_policy(log, policy, estimators=("dr",), **options)["dr"]


def direct_method(log: DecisionLog, policy: Policy | str, **options: Any) -> Estimate:
    """The reward model's value of the policy alone (biased where the model is wrong)."""
    return evaluate_policy(log, policy, estimators=("dm",), **options)["dm"]
