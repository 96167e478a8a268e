"""An online contextual bandit over Vowpal Wabbit's ``--cb_explore_adf``: it chooses one of a
decision's candidate actions from the context, says how likely that choice was, and learns from
the reward once it is known.

Features go to VW in three namespaces: ``C`` the context's categorical features (``device=mobile``),
``N`` its numeric ones (``sessions:3``), ``A`` the action's id and features; ``-q CA -q NA`` lets
every context feature weigh each action differently, and ``CCA`` and ``CNA`` every pair of them
(``channel=email`` with ``category=apparel``), since which action is best depends on who the
shopper is, which no single feature tells. ``BanditPolicy`` turns a bandit into a
candidate policy for ``evaluate_policy``, rebuilding each logged decision's features from the log.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from journeymap.exceptions import FormatError, JourneymapError, MissingDependencyError
from journeymap.policy._log import DecisionLog
from journeymap.policy._ope import ActionProbabilities, Policy

EXPLORATIONS = ("epsilon", "softmax", "squarecb", "bag")
INTERACTIONS = ("CA", "NA", "CCA", "CNA")  # VW namespace crosses; see the module docstring
CHECKPOINT_VERSION = 1
_UNSAFE = re.compile(r"[\s|:]+")  # VW's text format splits on whitespace, '|' and ':'

Scalar = str | int | float | bool | None


class Choice(NamedTuple):
    """A bandit's choice: the action, its probability under the policy, and the whole pmf."""

    action: str
    probability: float
    pmf: dict[str, float]  # action id -> probability, in the order the actions were given


def _vowpalwabbit():
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        raise MissingDependencyError("The contextual bandit needs Vowpal Wabbit: pip install 'journeymap[serve]'.") \
            from None
    return Workspace


# -- inputs -----------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_features(features: Any, what: str) -> dict[str, Scalar]:
    """A flat object of feature: value (number, string, boolean or null), or a JourneymapError."""
    if features is None:
        return {}
    if not isinstance(features, Mapping):
        raise JourneymapError(f"The {what} must be an object of feature: value. Got {type(features).__name__}.")
    out: dict[str, Scalar] = {}
    for name, value in features.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise JourneymapError(f"Feature '{name}' of the {what} must be a number, string, boolean or null. "
                                  f"Got {type(value).__name__}.")
        out[str(name)] = value
    return out


def normalize_actions(actions: Any) -> list[tuple[str, dict[str, Scalar]]]:
    """A decision's candidate actions as ``(id, features)``: each given as an id, as
    ``{"id": ..., "features": {...}}`` or as ``(id, features)``; at least one, no id twice."""
    if isinstance(actions, (str, bytes)) or not isinstance(actions, Sequence) or not actions:
        raise JourneymapError('A decision needs a non-empty list of actions, each an id or {"id": ..., '
                              f'"features": {{...}}}}. Got {actions!r}.')
    out: list[tuple[str, dict[str, Scalar]]] = []
    seen: set[str] = set()
    for j, item in enumerate(actions):
        features: Any = {}
        if isinstance(item, Mapping):
            features = item.get("features")
            item = item.get("id")
        elif isinstance(item, tuple) and len(item) == 2:  # already (id, features)
            item, features = item
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
            raise JourneymapError(f"Action {j + 1} needs an id (a non-empty string or an integer). Got {item!r}.")
        aid = str(item)
        if aid in seen:
            raise JourneymapError(f"Action '{aid}' appears twice in one decision; give each action once.")
        seen.add(aid)
        out.append((aid, check_features(features, f"action '{aid}'")))
    return out


# -- VW text format ---------------------------------------------------------------------------------
def _token(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _number(value: float) -> str:
    return f"{float(value):.9g}"


def _namespaces(features: Mapping[str, Scalar]) -> tuple[list[str], list[str]]:
    """(categorical tokens, numeric tokens) of a feature object; null and non-finite values are absent."""
    cats, nums = [], []
    for name, value in features.items():
        if value is None:
            continue
        if isinstance(value, bool):
            nums.append(f"{_token(name)}:{int(value)}")
        elif _is_number(value):
            if math.isfinite(value):
                nums.append(f"{_token(name)}:{_number(value)}")
        else:
            cats.append(_token(f"{name}={value}"))
    return cats, nums


def _shared_line(context: Mapping[str, Scalar]) -> str:
    cats, nums = _namespaces(context)
    return "shared |C " + " ".join(cats) + " |N " + " ".join(nums)


_ACTION_LINES: dict[tuple, str] = {}  # the same few actions recur in every decision


def _action_line(aid: str, features: Mapping[str, Scalar]) -> str:
    key = (aid, *features.items())
    line = _ACTION_LINES.get(key)
    if line is None:
        cats, nums = _namespaces(features)
        line = "|A " + " ".join([_token(f"id={aid}"), *cats, *nums])
        if len(_ACTION_LINES) > 100_000:
            _ACTION_LINES.clear()
        _ACTION_LINES[key] = line
    return line


class ContextualBandit:
    """A contextual bandit over Vowpal Wabbit's ``--cb_explore_adf``.

    ``exploration``: ``squarecb`` (the default: SquareCB, inverse gap weighting scaled by
    ``gamma_scale``), ``epsilon`` (epsilon-greedy, ``epsilon`` of the mass spread over all actions),
    ``softmax`` (probabilities ~ exp(``softmax_lambda`` * score)) or ``bag`` (``bag`` bootstrapped
    policies, plus ``epsilon``).
    ``seed`` fixes VW's random numbers and the sampling of the chosen action, so the same decisions
    in the same order give the same choices. ``interactions``: the namespace crosses (``-q`` for
    pairs, ``--interactions`` for longer). ``learning_rate``, ``power_t`` (the exponent of VW's
    per-feature adaptive step decay: 0 keeps the step constant, 0.5 is AdaGrad), ``l2`` and ``clip_p``
    (a reward weighs 1 / max(probability, ``clip_p``) in learning) pass to VW (None: VW's own
    default); ``vw_args`` adds any further VW options.

    The defaults come from the closed-loop benchmark (``benchmarks/bandit.py``, figures in
    ``benchmarks/README.md``), where rewards are rare purchases: VW's own learning rate (0.5) let a
    few lucky purchases swing the estimates; a constant 0.01 (``power_t`` 0) never settled, so the
    greedy choice for a kind of shopper kept flipping between two actions; 0.01 with AdaGrad's decay
    (``power_t`` 0.5) settles and lost the least. Pairs of context features (``CCA``, ``CNA``) let
    the bandit tell apart shoppers whom no single feature separates (a first-visit window shopper
    from organic search and a returning bargain hunter from organic search want different actions).
    A reward weighs 1 / (the chosen action's probability) in VW's regression, so once SquareCB
    gives the actions it ranks low 1-2% each, one lucky purchase after such a choice weighed 50-100
    ordinary ones and could flip the greedy choice for a kind of shopper long after it had settled
    (on one seed, right for mobile impulse buyers on 0.88 of their contexts at 40,000 decisions and
    on 0.21 at 80,000); ``clip_p`` 0.1 caps that weight at 10, and with SquareCB's ``gamma_scale`` 5
    (exploring a little less) the share of right choices kept rising on every seed and regret fell
    by a quarter.

    ``choose(context, actions)`` samples an action; ``learn(context, actions, chosen, probability,
    reward)`` updates on its reward (VW's cost is -reward). Thread-safe.
    """

    def __init__(self, exploration: str = "squarecb", epsilon: float = 0.1, softmax_lambda: float = 10.0,
                 gamma_scale: float = 5.0, bag: int = 5, interactions: Sequence[str] = INTERACTIONS,
                 learning_rate: float | None = 0.01, power_t: float | None = 0.5, l2: float | None = None,
                 clip_p: float | None = 0.1, seed: int = 0, vw_args: str = "") -> None:
        self.exploration = exploration
        self.epsilon = epsilon
        self.softmax_lambda = softmax_lambda
        self.gamma_scale = gamma_scale
        self.bag = bag
        self.interactions = tuple(interactions)
        self.learning_rate = learning_rate
        self.power_t = power_t
        self.l2 = l2
        self.clip_p = clip_p
        self.seed = seed
        self.vw_args = vw_args
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        self.n_choices_ = 0
        self.n_learned_ = 0

    def get_params(self) -> dict[str, Any]:
        return {"exploration": self.exploration, "epsilon": self.epsilon, "softmax_lambda": self.softmax_lambda,
                "gamma_scale": self.gamma_scale, "bag": self.bag, "interactions": list(self.interactions),
                "learning_rate": self.learning_rate, "power_t": self.power_t, "l2": self.l2, "clip_p": self.clip_p,
                "seed": self.seed, "vw_args": self.vw_args}

    def __repr__(self) -> str:
        return f"ContextualBandit({self.arguments()!r}, learned={self.n_learned_:,})"

    def arguments(self) -> str:
        """The VW command line this bandit runs."""
        if self.exploration not in EXPLORATIONS:
            raise JourneymapError(f"The bandit's exploration is one of {', '.join(EXPLORATIONS)}. "
                                  f"Got '{self.exploration}'.")
        if self.exploration in ("epsilon", "bag") and not 0 <= self.epsilon <= 1:
            raise JourneymapError(f"The bandit's epsilon must be between 0 and 1, like 0.1. Got {self.epsilon!r}.")
        explore = {
            "epsilon": f"--epsilon {self.epsilon}",
            "softmax": f"--softmax --lambda {self.softmax_lambda}",
            "squarecb": f"--squarecb --gamma_scale {self.gamma_scale}",
            "bag": f"--bag {int(self.bag)} --epsilon {self.epsilon}",
        }[self.exploration]
        for q in self.interactions:
            if not (isinstance(q, str) and len(q) >= 2 and set(q) <= set("CNA")):
                raise JourneymapError("Each of the bandit's interactions is two or more of the namespaces C (context "
                                      f"categories), N (context numbers) and A (the action), like 'CA'. Got {q!r}.")
        # VW's -q takes pairs only; --interactions any length
        crosses = [f"-q {q}" if len(q) == 2 else f"--interactions {q}" for q in self.interactions]
        parts = ["--cb_explore_adf", explore, *crosses,
                 f"--random_seed {int(self.seed)}", "--quiet"]
        if self.learning_rate is not None:
            parts.append(f"--learning_rate {self.learning_rate}")
        if self.power_t is not None:
            parts.append(f"--power_t {self.power_t}")
        if self.l2 is not None:
            parts.append(f"--l2 {self.l2}")
        if self.clip_p is not None:
            if not (_is_number(self.clip_p) and 0 < self.clip_p <= 1):
                raise JourneymapError(f"The bandit's clip_p must be a probability in (0, 1], like 0.1. Got {self.clip_p!r}.")
            parts.append(f"--clip_p {self.clip_p}")
        if self.vw_args:
            parts.append(self.vw_args)
        return " ".join(parts)

    @property
    def workspace_(self):
        """The VW workspace, started on first use."""
        ws = self.__dict__.get("_workspace")
        if ws is None:
            ws = self._workspace = _vowpalwabbit()(self.arguments())
        return ws

    # -- deciding ---------------------------------------------------------------------------------
    def _pmf(self, context: Mapping[str, Scalar], actions: list[tuple[str, dict[str, Scalar]]]) -> np.ndarray:
        lines = [_shared_line(context), *(_action_line(aid, feats) for aid, feats in actions)]
        with self._lock:
            raw = self.workspace_.predict(lines)
        pmf = np.clip(np.asarray(raw, dtype=np.float64), 0.0, None)  # VW's float32 pmf, renormalised
        total = pmf.sum()
        return pmf / total if total > 0 else np.full(len(actions), 1.0 / len(actions))

    def probabilities(self, context: Mapping[str, Scalar] | None, actions: Any) -> dict[str, float]:
        """The policy's probability of each action (the pmf ``choose`` samples from)."""
        acts = normalize_actions(actions)
        pmf = self._pmf(check_features(context, "context"), acts)
        return {aid: float(p) for (aid, _), p in zip(acts, pmf)}

    def greedy(self, context: Mapping[str, Scalar] | None, actions: Any) -> str:
        """The action the policy ranks first (the most probable; ties go to the first given)."""
        pmf = self.probabilities(context, actions)
        return max(pmf, key=pmf.__getitem__)

    def choose(self, context: Mapping[str, Scalar] | None, actions: Any) -> Choice:
        """Sample one action from the policy's pmf: ``(action, probability, pmf)``."""
        acts = normalize_actions(actions)
        pmf = self._pmf(check_features(context, "context"), acts)
        with self._lock:
            u = self._rng.random()
            self.n_choices_ += 1
        k = min(int(np.searchsorted(np.cumsum(pmf), u, side="right")), len(acts) - 1)
        while pmf[k] <= 0:  # float round-off at the top of the cumulative sum
            k -= 1
        return Choice(acts[k][0], float(pmf[k]), {aid: float(p) for (aid, _), p in zip(acts, pmf)})

    # -- learning ---------------------------------------------------------------------------------
    def learn(self, context: Mapping[str, Scalar] | None, actions: Any, chosen: str, probability: float,
              reward: float) -> ContextualBandit:
        """Learn from one decision: ``chosen`` was taken with ``probability`` and earned ``reward``."""
        acts = normalize_actions(actions)
        ids = [aid for aid, _ in acts]
        if str(chosen) not in ids:
            raise JourneymapError(f"The chosen action '{chosen}' is not one of the decision's actions "
                                  f"({', '.join(ids[:10])}).")
        if not (_is_number(probability) and 0 < probability <= 1):
            raise JourneymapError(f"The chosen action's probability must be in (0, 1]. Got {probability!r}.")
        if not (_is_number(reward) and math.isfinite(reward)):
            raise JourneymapError(f"A reward must be a finite number. Got {reward!r}.")
        lines = [_shared_line(check_features(context, "context"))]
        for aid, feats in acts:
            label = f"0:{_number(-float(reward))}:{_number(probability)} " if aid == str(chosen) else ""
            lines.append(label + _action_line(aid, feats))
        with self._lock:
            self.workspace_.learn(lines)
            self.n_learned_ += 1
        return self

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, path: str | Path, **metadata: Any) -> Path:
        """Write a checkpoint that rebuilds this bandit: its settings, counts and VW weights in one
        zip file (``metadata`` is kept alongside, e.g. how many log lines it has learned)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model.vw"
            self.workspace_.save(str(model))
            header = {"version": CHECKPOINT_VERSION, "params": self.get_params(), "n_choices": self.n_choices_,
                      "n_learned": self.n_learned_, "rng": self._rng.bit_generator.state, "metadata": metadata}
            partial = path.with_name(path.name + ".partial")
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("bandit.json", json.dumps(header))
                zf.write(model, "model.vw")
            partial.replace(path)  # a crash mid-save leaves the previous checkpoint intact
        return path

    @classmethod
    def load(cls, path: str | Path) -> ContextualBandit:
        """A bandit from a checkpoint written by ``save``; its ``metadata_`` is what was saved with it."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as zf:
                header = json.loads(zf.read("bandit.json"))
                model = zf.read("model.vw")
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise FormatError(f"{path} is not a journeymap bandit checkpoint ({exc}).") from None
        if header.get("version") != CHECKPOINT_VERSION:
            raise FormatError(f"{path} is a bandit checkpoint of version {header.get('version')}; this journeymap "
                              f"reads version {CHECKPOINT_VERSION}.")
        # a checkpoint from before clip_p was a setting learned without it, as its model file says
        bandit = cls(**{"clip_p": None, **header["params"]})
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "model.vw"
            file.write_bytes(model)
            # The model file carries its own VW options (exploration, interactions) with the weights.
            bandit._workspace = _vowpalwabbit()(f"--quiet -i {file}")
        bandit.n_choices_ = int(header.get("n_choices", 0))
        bandit.n_learned_ = int(header.get("n_learned", 0))
        if header.get("rng"):
            bandit._rng.bit_generator.state = header["rng"]
        bandit.metadata_ = header.get("metadata", {})
        return bandit

    def close(self) -> None:
        ws = self.__dict__.pop("_workspace", None)
        if ws is not None:
            ws.finish()


# -- a bandit as a candidate policy for off-policy evaluation ----------------------------------------
def _log_context(row: Mapping[str, Any]) -> dict[str, Scalar]:
    """A logged context row as the log types it: numeric columns as floats, the rest as text."""
    out: dict[str, Scalar] = {}
    for name, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out[str(name)] = float(value) if _is_number(value) or isinstance(value, np.number) else str(value)
    return out


def _action_feature_plan(log: DecisionLog) -> list[tuple[np.ndarray, str, str | None]]:
    """How to read each per-decision action feature back: (grid, name, level). Text features come
    one-hot from the log as ``name=level`` columns of 0/1 and go back to ``name: level`` (level
    set); numeric ones stay numbers (level None)."""
    plan = []
    for column, grid in log.decision_action_features.items():
        head, sep, level = column.partition("=")
        values = grid[np.isfinite(grid)]
        if sep and np.isin(values, (0.0, 1.0)).all():
            plan.append((grid, head, level))
        else:
            plan.append((grid, column, None))
    return plan


def _log_action_features(plan: list[tuple[np.ndarray, str, str | None]], i: int, k: int) -> dict[str, Scalar]:
    """Action k's features in decision i, as the bandit saw them."""
    out: dict[str, Scalar] = {}
    for grid, name, level in plan:
        value = grid[i, k]
        if not math.isfinite(value):
            continue
        if level is None:
            out[name] = float(value)
        elif value == 1.0:
            out[name] = level
    return out


class BanditPolicy(Policy):
    """A bandit as a candidate policy: on each logged decision, its pmf over that decision's
    actions given the logged context and action features (``greedy``: all mass on its first choice).

    The features come back from the log as it types them (numbers as floats, text as text), which
    is how the bandit saw them when the log was written by ``OnlinePolicy``.
    """

    def __init__(self, bandit: ContextualBandit, greedy: bool = False, name: str | None = None) -> None:
        self.bandit = bandit
        self.greedy = greedy
        self.name = name or ("bandit:greedy" if greedy else "bandit")

    def probabilities(self, log: DecisionLog) -> ActionProbabilities:
        avail = log.availability()
        dist = np.zeros((len(log), log.n_actions))
        contexts = log.context.to_dict("records")
        plan = _action_feature_plan(log)
        for i in range(len(log)):
            ks = np.flatnonzero(avail[i])
            actions = [{"id": log.actions[k], "features": _log_action_features(plan, i, k)} for k in ks]
            pmf = self.bandit._pmf(_log_context(contexts[i]), normalize_actions(actions))
            if self.greedy:
                dist[i, ks[int(np.argmax(pmf))]] = 1.0
            else:
                dist[i, ks] = pmf
        return ActionProbabilities(chosen=dist[np.arange(len(log)), log.chosen], dist=dist)

