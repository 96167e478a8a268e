"""Off-policy evaluation validated on the Open Bandit sample, side by side with obp.

    .venv/bin/python benchmarks/ope.py                       # every campaign; obp rows when its venv exists
    bash benchmarks/ope_setup.sh                             # once: benchmarks/out/venv-obp with obp

The question (Saito et al. 2020's own OBD experiment): estimate the Bernoulli-TS (BTS) policy's
click rate from the *random* policy's log, and compare with the click rate the BTS log itself shows
(on-policy: the ground truth). Both logs are from the same campaign and week; each row is one item
shown in one of 3 slots, and every slot is a decision (OBP's position-wise convention), so the
value is the click rate per impression over all slots.

The evaluation policy's action distribution (the probability of each item in each slot) is
context-free for BTS, and is taken two ways:
  empirical   (journeymap's choice) the share of each item in each slot in the BTS log
              (``empirical_policy``). BTS is context-free, so its slot distribution is all there is
              to it, and the truth is the click rate of BTS *as it ran over the week*, its batch
              updates included: the week's average slot distribution, which these shares estimate
              without bias, is the distribution that truth belongs to. Needs nothing but the data.
  obp-prior   obp's ``BernoulliTS(is_zozotown_prior=True, campaign=...).compute_batch_action_dist``
              (Monte Carlo over Beta(alpha, beta) with ZOZOTOWN's production priors, as in obp's OBD
              examples): BTS's parameters at the *start* of the week. The priors ship with obp
              only, so this needs its environment. journeymap's
              ``BetaThompson`` on the same priors is shown to reproduce the table (max |difference|).
Both libraries get the identical table for each variant. Reward model: logistic regression (C=1),
3-fold cross-fitting in both; obp's features are its defaults (user-feature dummies and
label-encoded item features, one model per slot), journeymap's its own (see RewardModel), so DR
may differ a little; IPS and SNIPS use no model and must agree to the digit on the same table.
Intervals: 95% percentile bootstrap, 1000 resamples, in both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from journeymap.policy import (
    ActionTable,
    BetaThompson,
    empirical_policy,
    evaluate_policy,
    read_log,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "obp-open-bandit-sample"
OUT = Path(__file__).resolve().parent / "out" / "ope"
OBP_VENV = Path(__file__).resolve().parent / "out" / "venv-obp"
OBP_RUNNER = Path(__file__).resolve().parent / "ope_obp.py"
ESTIMATORS = ("ips", "snips", "dr")
OBP_NAMES = {"ips": "ipw", "snips": "snipw", "dr": "dr"}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    import sklearn

    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
            f"scikit-learn {sklearn.__version__} ({time.strftime('%Y-%m-%d')})")


def table_matrix(table: ActionTable, positions: list[int], actions: tuple[str, ...]) -> np.ndarray:
    """(slots, items) matrix of a per-position action table."""
    wide = table.table.pivot_table(index="position", columns="action", values="probability", fill_value=0.0)
    return wide.reindex(index=positions, columns=list(actions), fill_value=0.0).to_numpy()


def matrix_table(matrix: np.ndarray, positions: list[int], actions: tuple[str, ...], name: str) -> ActionTable:
    rows = [{"position": p, "action": a, "probability": float(matrix[j, k])}
            for j, p in enumerate(positions) for k, a in enumerate(actions)]
    return ActionTable(pd.DataFrame(rows), name=name, source=name)


def ours(random, policy, args) -> tuple[dict, float]:
    started = time.perf_counter()
    result = evaluate_policy(random, policy, estimators=ESTIMATORS, n_resamples=args.resamples, seed=args.seed)
    return {e.estimator: {"estimate": e.value, "ci": list(e.ci), "ess": e.effective_sample_size,
                          "max_weight": e.max_weight} for e in result.estimates}, time.perf_counter() - started


def run_obp(campaigns: list[str], tables: dict[str, np.ndarray], args) -> dict | None:
    python = OBP_VENV / "bin" / "python"
    if not python.exists():
        print(f"obp rows skipped: no benchmark environment at {OBP_VENV} (create it with "
              "`bash benchmarks/ope_setup.sh`).", file=sys.stderr)
        return None
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "tables.npz", **tables)
    out = OUT / "obp.json"
    command = [str(python), str(OBP_RUNNER), "--data", str(args.data), "--campaigns", *campaigns,
               "--tables", str(OUT / "tables.npz"), "--out", str(out), "--resamples", str(args.resamples)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"obp run failed ({done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    report = json.loads(out.read_text())
    report["wall_seconds"] = time.perf_counter() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--campaigns", nargs="+", default=["all", "men", "women"])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-obp", action="store_true", help="skip obp even when its environment exists")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"The Open Bandit sample is not at {args.data} (see shared/data/README.md).")

    print(f"Machine: {machine()}\n")
    rows: list[dict] = []
    logs, tables, truths, seconds = {}, {}, {}, {}
    for campaign in args.campaigns:
        random = read_log(args.data / "random" / campaign / f"{campaign}.csv")
        bts = read_log(args.data / "bts" / campaign / f"{campaign}.csv")
        truths[campaign] = float(bts.decisions["reward"].mean())
        positions = sorted(int(p) for p in random.decisions["position"].unique())
        policy = empirical_policy(bts)
        tables[f"{campaign}/empirical"] = table_matrix(policy, positions, random.actions)
        estimates, secs = ours(random, policy, args)
        seconds[(campaign, "empirical")] = secs
        rows += [{"campaign": campaign, "policy": "empirical", "library": "journeymap", "estimator": e, **v}
                 for e, v in estimates.items()]
        logs[campaign] = (random, positions)

    report = None if args.no_obp else run_obp(args.campaigns, tables, args)
    mc_gap = {}
    if report:
        for campaign in args.campaigns:
            obp = report["campaigns"][campaign]
            random, positions = logs[campaign]
            assert abs(obp["truth"] - truths[campaign]) < 1e-12, "obp and journeymap read different BTS logs"
            prior = np.asarray(obp["prior_table"])  # (slots, items), obp's Monte Carlo
            estimates, secs = ours(random, matrix_table(prior, positions, random.actions, "obp-prior"), args)
            seconds[(campaign, "obp-prior")] = secs
            rows += [{"campaign": campaign, "policy": "obp-prior", "library": "journeymap", "estimator": e, **v}
                     for e, v in estimates.items()]
            own = BetaThompson({str(k): a for k, a in enumerate(obp["alpha"])},
                               {str(k): b for k, b in enumerate(obp["beta"])}, n_sim=100_000, seed=args.seed)
            mine = table_matrix(own.table(positions), positions, random.actions)
            mc_gap[campaign] = float(np.abs(mine - prior).max())
            estimates, _ = ours(random, own, args)
            rows += [{"campaign": campaign, "policy": "BetaThompson", "library": "journeymap", "estimator": e, **v}
                     for e, v in estimates.items()]
            for variant, values in obp["variants"].items():
                policy_name = "obp-prior" if variant == "prior" else variant
                rows += [{"campaign": campaign, "policy": policy_name, "library": "obp", "estimator": e,
                          **values[OBP_NAMES[e]]} for e in ESTIMATORS]

    order = {"empirical": 0, "obp-prior": 1, "BetaThompson": 2}
    rows.sort(key=lambda r: (args.campaigns.index(r["campaign"]), order[r["policy"]], ESTIMATORS.index(r["estimator"]),
                             r["library"] != "journeymap"))
    print("| campaign | BTS action distribution | library | estimator | estimate | 95% CI | truth (BTS log) | "
          "relative error |")
    print("|---|---|---|---|---:|---|---:|---:|")
    for r in rows:
        truth = truths[r["campaign"]]
        error = abs(r["estimate"] - truth) / truth
        print(f"| {r['campaign']} | {r['policy']} | {r['library']} | {r['estimator'].upper()} | {r['estimate']:.5f} | "
              f"[{r['ci'][0]:.5f}, {r['ci'][1]:.5f}] | {truth:.4f} | {error:.1%} |")
    print()
    for campaign in args.campaigns:
        random, _ = logs[campaign]
        random_value = float(random.decisions["reward"].mean())
        ess = next(r["ess"] for r in rows if r["campaign"] == campaign and r["library"] == "journeymap")
        print(f"- {campaign}: random policy's own click rate {random_value:.4f}, BTS's {truths[campaign]:.4f}; "
              f"{len(random):,} decisions, effective sample size {ess:,.0f} (empirical table); journeymap "
              f"{seconds[(campaign, 'empirical')]:.1f} s for IPS+SNIPS+DR with 1000 bootstrap resamples"
              + (f"; BetaThompson vs obp Monte Carlo table: max |difference| {mc_gap[campaign]:.4f}"
                 if campaign in mc_gap else ""))
    if report:
        print(f"- obp {report['obp']} (numpy {report['numpy']}, scikit-learn {report['scikit-learn']}, Python "
              f"{report['python']}), {report['wall_seconds']:.0f} s for every campaign, of which "
              + ", ".join(f"{c}: Monte Carlo {v['monte_carlo_seconds']:.1f} s, reward model "
                          f"{v['reward_model_seconds']:.1f} s" for c, v in report["campaigns"].items()))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"machine": machine(), "truth": truths, "rows": rows,
                                                  "monte_carlo_gap": mc_gap}, indent=1))


if __name__ == "__main__":
    main()
