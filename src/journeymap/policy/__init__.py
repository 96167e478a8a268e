"""Policies over next-best actions, learned online, and their evaluation from decision logs.

``ContextualBandit`` chooses among a decision's actions by Vowpal Wabbit's ``--cb_explore_adf``;
``OnlinePolicy`` serves it: it logs every decision, joins rewards back from the user's later
events (``RewardDefinition``) or explicitly, and has the bandit learn each reward once;
``BanditPolicy`` evaluates a bandit offline as a candidate policy.

``read_log`` reads a decision log (journeymap's own JSON lines / Parquet, or the Open Bandit
Dataset's CSV); ``evaluate_policy`` estimates a candidate policy's mean reward from it by IPS,
SNIPS, doubly robust and direct method, with confidence intervals (``ips``, ``snips``,
``doubly_robust``, ``direct_method`` run one each). Candidate policies: ``Uniform``, ``Logged``,
``FixedAction``, ``ActionTable`` (probabilities from a file), ``empirical_policy`` (the action
distribution another log shows) and ``BetaThompson``; ``parse_policy`` reads the CLI spelling.
"""

from __future__ import annotations

from journeymap.policy._bandit import BanditPolicy, Choice, ContextualBandit
from journeymap.policy._log import (
    DecisionLog,
    from_records,
    read_log,
    read_obp,
    write_log,
)
from journeymap.policy._ope import (
    ESTIMATORS,
    POLICY_SPECS,
    ActionProbabilities,
    ActionTable,
    BetaThompson,
    Estimate,
    FixedAction,
    Logged,
    OPEResult,
    Policy,
    RewardModel,
    Uniform,
    cross_fit,
    direct_method,
    doubly_robust,
    empirical_policy,
    evaluate_policy,
    ips,
    parse_policy,
    snips,
)
from journeymap.policy._rewards import (
    Decision,
    OnlinePolicy,
    PolicyConfig,
    RewardConflictError,
    RewardDefinition,
    Settled,
    UnknownDecisionError,
    context_features,
)

__all__ = [
    "ActionProbabilities",
    "ActionTable",
    "BanditPolicy",
    "BetaThompson",
    "Choice",
    "ContextualBandit",
    "Decision",
    "DecisionLog",
    "ESTIMATORS",
    "Estimate",
    "FixedAction",
    "Logged",
    "OPEResult",
    "OnlinePolicy",
    "POLICY_SPECS",
    "Policy",
    "PolicyConfig",
    "RewardConflictError",
    "RewardDefinition",
    "RewardModel",
    "Settled",
    "Uniform",
    "UnknownDecisionError",
    "context_features",
    "cross_fit",
    "direct_method",
    "doubly_robust",
    "empirical_policy",
    "evaluate_policy",
    "from_records",
    "ips",
    "parse_policy",
    "read_log",
    "read_obp",
    "snips",
    "write_log",
]
