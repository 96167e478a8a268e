"""Replay the contexts an HTTP run of ``benchmarks/bandit.py`` logged with other bandit settings.

    .venv/bin/python benchmarks/bandit.py --http-only --http-seconds 900 --http-rate 50    # writes out/bandit/http
    .venv/bin/python benchmarks/bandit_replay.py --variant defaults: --variant "clip:clip_p=0.1,gamma_scale=5"

A closed-loop run takes minutes to hours; comparing settings on it takes many runs. The replay
keeps what a run over HTTP logged (each decision's context, built from the service's stored
profiles, in the order the decisions came) and the simulator's truth beside it (each decision's
persona and every action's true expected reward, ``run.jsonl``). A fresh bandit with the
variant's settings goes through the decisions in order: it chooses from its own pmf, the reward is
drawn from the chosen action's true expected reward, and it learns that reward ``--delay``
decisions later (the service learns when the reward's horizon has passed). Printed per variant,
over ``--seeds``: the regret against the per-persona oracle (mean and standard deviation), and
per persona the final greedy choice = best on its last 1,000 contexts (mean, lowest seed) and
how many seeds' most common greedy choice was not the persona's best action.

What the replay cannot show: the contexts stay those of the logged run, whatever the variant
chooses (over HTTP a purchase the variant's choice would have brought changes the shopper's later
profile). So it ranks settings; the closed loop (``bandit.py``) confirms the choice.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path
from bandit import matters

from journeymap.policy import ContextualBandit
from journeymap.simulator._live import BEST_ACTION
from journeymap.simulator._personas import PERSONAS

HERE = Path(__file__).resolve().parent


def load(folder: Path) -> list[tuple[dict, list, str, dict]]:
    """(context, actions, persona, expected reward per action) per logged decision, in run order."""
    truth = {}
    with open(folder / "run.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("decision_id"):
                truth[d["decision_id"]] = d
    logged = {}
    with open(folder / "shop.decisions.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            logged[rec["decision_id"]] = (rec["context"], rec["actions"])
    return [(*logged[i], d["persona"], d["expected"]) for i, d in truth.items() if i in logged]


def replay(rows: list, params: dict, seed: int, delay: int) -> tuple[float, dict[str, tuple[float, str]]]:
    """(regret, persona -> (final greedy = best share on its last 1,000 contexts, most common greedy))."""
    bandit = ContextualBandit(**{**params, "seed": seed})
    rng = random.Random(seed)
    waiting: deque = deque()
    regret = 0.0
    for context, actions, persona, expected in rows:
        choice = bandit.choose(context, actions)
        regret += expected[BEST_ACTION[persona]] - expected[choice.action]
        reward = 1.0 if rng.random() < expected[choice.action] else 0.0
        waiting.append((context, actions, choice.action, choice.probability, reward))
        if len(waiting) > delay:
            bandit.learn(*waiting.popleft())
    while waiting:
        bandit.learn(*waiting.popleft())
    out = {}
    for q in PERSONAS:
        mine = [(c, a) for c, a, p, e in rows if p == q.name and matters({"expected": e})][-1000:]
        picks = [bandit.greedy(c, a) for c, a in mine]
        best = BEST_ACTION[q.name]
        out[q.name] = (sum(p == best for p in picks) / len(picks), max(set(picks), key=picks.count))
    bandit.close()
    return regret, out


def parse_variant(text: str) -> tuple[str, dict]:
    """``label:key=value,key=value``; values are numbers, ``none``, or text (``vw_args``)."""
    label, _, spec = text.partition(":")
    params: dict = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if not value:
            raise SystemExit(f"--variant takes LABEL:KEY=VALUE,...; got {text!r}")
        if value.lower() == "none":
            params[key] = None
        elif key == "interactions":
            params[key] = tuple(value.split("+"))
        elif key in ("exploration", "vw_args"):
            params[key] = value
        else:
            params[key] = int(value) if key in ("bag",) else float(value)
    return label or "defaults", params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=HERE / "out" / "bandit" / "http",
                        help="an HTTP run's folder (run.jsonl and shop.decisions.jsonl)")
    parser.add_argument("--variant", action="append", default=[],
                        help='LABEL:KEY=VALUE,... of ContextualBandit settings, e.g. "clip:clip_p=0.1,gamma_scale=5" '
                             '(repeatable; "defaults:" for the defaults)')
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--delay", type=int, default=100, help="decisions between a choice and learning its reward")
    args = parser.parse_args()
    rows = load(args.run)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(machine("vowpalwabbit", "numpy", load=True))
    print(f"\n{len(rows):,} logged decisions from {args.run}, {len(seeds)} seeds, rewards learned {args.delay} "
          "decisions later\n")
    names = [q.name for q in PERSONAS]
    print("| variant | regret (sd) | " + " | ".join(names) + " | most common greedy choice wrong | seconds |")
    print("|---|---|" + "---|" * len(names) + "---|---|")
    for label, params in map(parse_variant, args.variant or ["defaults:"]):
        started = time.perf_counter()
        results = [replay(rows, params, seed, args.delay) for seed in seeds]
        regrets = np.array([r for r, _ in results])
        shares = np.array([[out[n][0] for n in names] for _, out in results])
        wrong = sum(out[n][1] != BEST_ACTION[n] for _, out in results for n in names)
        cells = [f"{m:.2f} (min {lo:.2f})" for m, lo in zip(shares.mean(axis=0), shares.min(axis=0))]
        print(f"| {label} | {regrets.mean():,.0f} ({regrets.std():.0f}) | " + " | ".join(cells)
              + f" | {wrong} of {len(seeds) * len(names)} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
