"""obp's own off-policy estimates on the Open Bandit sample, for benchmarks/ope.py to compare with.

Runs inside the benchmark-only environment (``bash benchmarks/ope_setup.sh``), never journeymap's:

    benchmarks/out/venv-obp/bin/python benchmarks/ope_obp.py --data ../shared/data/obp-open-bandit-sample \
        --campaigns all men women --tables benchmarks/out/ope/tables.npz --out benchmarks/out/ope/obp.json

Per campaign, as obp's own OBD example does: ``OpenBanditDataset`` reads the random policy's log,
``BernoulliTS(is_zozotown_prior=True, campaign=...)`` gives the evaluation policy's action
distribution (``compute_batch_action_dist``, Monte Carlo), ``RegressionModel`` with logistic
regression fits the reward model by 3-fold cross-fitting, and ``OffPolicyEvaluation`` runs IPW,
SNIPW and DR with bootstrap intervals; the truth is ``calc_on_policy_policy_value_estimate`` on the
BTS log. With ``--tables`` the same estimators also run on action distributions given by
benchmarks/ope.py (one (slots, items) table per campaign and variant), so that both libraries see
the same distribution. The priors and obp's Monte Carlo tables are written out too, so that
journeymap can be run on exactly the same distribution.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")  # obp and its dependencies warn about deprecated APIs of newer releases
logging.disable(logging.INFO)


def run_campaign(data: Path, campaign: str, tables: dict, args: argparse.Namespace) -> dict:
    from obp.dataset import OpenBanditDataset
    from obp.ope import (
        DoublyRobust,
        InverseProbabilityWeighting,
        OffPolicyEvaluation,
        RegressionModel,
        SelfNormalizedInverseProbabilityWeighting,
    )
    from obp.policy import BernoulliTS
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    obd = OpenBanditDataset(behavior_policy="random", campaign=campaign, data_path=data)
    feedback = obd.obtain_batch_bandit_feedback()
    truth = float(OpenBanditDataset.calc_on_policy_policy_value_estimate(
        behavior_policy="bts", campaign=campaign, data_path=data))
    policy = BernoulliTS(n_actions=obd.n_actions, len_list=obd.len_list, is_zozotown_prior=True,
                         campaign=campaign, random_state=args.seed)
    t0 = time.perf_counter()
    prior_dist = policy.compute_batch_action_dist(n_rounds=1, n_sim=args.n_sim)[0]  # (items, slots)
    mc_seconds = time.perf_counter() - t0
    model = RegressionModel(n_actions=obd.n_actions, len_list=obd.len_list, action_context=obd.action_context,
                            base_model=LogisticRegression(C=args.C, max_iter=1000))
    t0 = time.perf_counter()
    q_hat = model.fit_predict(context=feedback["context"], action=feedback["action"], reward=feedback["reward"],
                              position=feedback["position"], pscore=feedback["pscore"], n_folds=args.folds,
                              random_state=args.seed)
    fit_seconds = time.perf_counter() - t0
    ope = OffPolicyEvaluation(bandit_feedback=feedback, ope_estimators=[
        InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting(), DoublyRobust()])

    def estimates(table: np.ndarray) -> dict:
        dist = np.broadcast_to(table, (feedback["n_rounds"], *table.shape))  # (n, items, slots)
        t = time.perf_counter()
        values = ope.estimate_policy_values(action_dist=dist, estimated_rewards_by_reg_model=q_hat)
        intervals = ope.estimate_intervals(action_dist=dist, estimated_rewards_by_reg_model=q_hat,
                                           alpha=1 - args.confidence, n_bootstrap_samples=args.resamples,
                                           random_state=args.seed)
        seconds = time.perf_counter() - t
        out = {}
        for name in ("ipw", "snipw", "dr"):
            ci = intervals[name]
            low = next(v for k, v in ci.items() if "lower" in k)
            high = next(v for k, v in ci.items() if "upper" in k)
            out[name] = {"estimate": float(values[name]), "ci": [float(low), float(high)]}
        out["seconds"] = seconds
        return out

    result = {"truth": truth, "random_value": float(feedback["reward"].mean()), "n": int(feedback["n_rounds"]),
              "n_actions": int(obd.n_actions), "len_list": int(obd.len_list),
              "alpha": [float(a) for a in policy.alpha], "beta": [float(b) for b in policy.beta],
              "prior_table": prior_dist.T.tolist(),  # (slots, items), like journeymap's tables
              "monte_carlo_seconds": mc_seconds, "reward_model_seconds": fit_seconds,
              "variants": {"prior": estimates(prior_dist)}}
    for key, table in tables.items():
        camp, _, variant = key.partition("/")
        if camp == campaign:
            table = np.asarray(table, dtype=float)  # (slots, items)
            if table.shape != (obd.len_list, obd.n_actions):
                raise SystemExit(f"table {key} has shape {table.shape}, expected {(obd.len_list, obd.n_actions)}")
            result["variants"][variant] = estimates(table.T)
    result["seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the obp-open-bandit-sample folder")
    parser.add_argument("--campaigns", nargs="+", default=["all", "men", "women"])
    parser.add_argument("--tables", type=Path, help="npz of (slots, items) action tables named CAMPAIGN/VARIANT")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-sim", type=int, default=100_000, help="Monte Carlo draws of BernoulliTS")
    parser.add_argument("--C", type=float, default=1.0, help="logistic regression's C")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    tables = dict(np.load(args.tables)) if args.tables else {}
    report = {"obp": version("sb-obp"), "numpy": np.__version__, "scikit-learn": version("scikit-learn"),
              "python": platform.python_version(), "settings": {k: v for k, v in vars(args).items()
                                                                if k in ("n_sim", "C", "folds", "resamples",
                                                                         "confidence", "seed")},
              "campaigns": {c: run_campaign(args.data, c, tables, args) for c in args.campaigns}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
