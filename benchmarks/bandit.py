"""Closed loop: the contextual bandit learning from simulated live traffic, in process and over HTTP.

    .venv/bin/python benchmarks/bandit.py                                  # 100,000 sessions per policy, then 60 s over HTTP
    .venv/bin/python benchmarks/bandit.py --sessions 20000 --http-seconds 0  # quicker, no service

The live simulator's shoppers (``journeymap.simulator._live``) ask for the next-best action at each
session's first product view (nothing, coupon, free-shipping banner, recommendation carousel) and
respond with a planted per-persona purchase uplift; each persona has one best action (the truth).
Every decision records every action's true expected reward, so regret is exact, not sampled:

* regret: the per-persona oracle's expected reward (its persona's best action) minus that of the
  action taken, summed over decisions; uniform random's regret is the same sum for the mean over
  actions, on the same decisions;
* per persona: how often the final bandit's greedy choice is the persona's best action, on the
  persona's last 1,000 logged contexts where the choice matters (not the bargain hunter's first
  visits, where no action moves anything);
* offline: the final greedy policy (and fixed ones) evaluated from the decision log by IPS, SNIPS
  and DR (normal 95% intervals) against what it really earns on fresh simulated traffic.

The bandit only sees what a shop would know: the session (device, channel, landing page, search,
the category and price level of the product on screen, visit number) and a profile of what the
user did before; never the persona. Over HTTP, ``journeymap serve`` runs on a fresh store with its
own profiles, and the simulator posts events and decisions to it at ``--http-rate`` sessions/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path

from journeymap.policy import (
    BanditPolicy,
    ContextualBandit,
    FixedAction,
    OnlinePolicy,
    PolicyConfig,
    Uniform,
    evaluate_policy,
    read_log,
)
from journeymap.simulator._live import (
    ACTIONS,
    BEST_ACTION,
    FixedTarget,
    InProcessTarget,
    LiveRun,
    run_http,
    run_live,
)
from journeymap.simulator._personas import PERSONAS

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "bandit"
SECRET = "benchmark-secret-0123456789"
API_KEY = "benchmark-key-0123456789abcdef"


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a Markdown table (no tabulate needed)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.{digits}f}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def checkpoints(n: int) -> list[int]:
    marks = [m for m in (1000, 2500, 5000, 10_000, 20_000, 30_000, 40_000, 60_000, 80_000) if m < n]
    return [*marks, n]


def regret_table(run: LiveRun, label: str) -> pd.DataFrame:
    table = run.regret(checkpoints(len(run.decisions)))
    previous = table[["decisions", "regret_policy", "regret_uniform"]].shift(fill_value=0)
    span = table["decisions"] - previous["decisions"]
    table["per_decision_policy"] = (table["regret_policy"] - previous["regret_policy"]) / span
    table["per_decision_uniform"] = (table["regret_uniform"] - previous["regret_uniform"]) / span
    table.insert(0, "policy", label)
    return table


def matters(d: dict) -> bool:
    """The actions differ in expected reward (not so on the bargain hunter's first visit)."""
    values = d["expected"].values()
    return max(values) - min(values) > 1e-12


def greedy_by_persona(bandit: ContextualBandit, run: LiveRun, log_path: Path, last: int = 1000) -> pd.DataFrame:
    contexts = {}
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        contexts[rec["decision_id"]] = (rec["context"], rec["actions"])
    rows = []
    for q in PERSONAS:
        mine = [d for d in run.decisions if d["persona"] == q.name and d["decision_id"] in contexts and matters(d)]
        recent = mine[-last:]
        picks = pd.Series([bandit.greedy(*contexts[d["decision_id"]]) for d in recent], dtype=object)
        taken = pd.Series([d["action"] for d in recent], dtype=object)
        best = BEST_ACTION[q.name]
        rows.append({"persona": q.name, "best action": best, "decisions": len(mine),
                     "greedy = best": float((picks == best).mean()) if len(picks) else None,
                     "greedy mode": picks.mode().iloc[0] if len(picks) else None,
                     "taken = best (recent)": float((taken == best).mean()) if len(taken) else None})
    return pd.DataFrame(rows)


def fresh_value(choose, sessions: int, seed: int) -> tuple[float, float, int]:
    """A fixed policy on fresh traffic: (realized purchase rate, true expected rate, decisions)."""
    run = run_live(FixedTarget(choose), sessions=sessions, seed=seed)
    realized = np.mean([d["purchased"] for d in run.decisions])
    expected = np.mean([d["expected"][d["action"]] for d in run.decisions])
    return float(realized), float(expected), len(run.decisions)


def offline_table(policy: OnlinePolicy, fresh_sessions: int, seed: int) -> pd.DataFrame:
    log = read_log(policy.log_path)
    bandit = policy.bandit
    rng = random.Random(seed)
    candidates = [
        ("bandit, greedy", BanditPolicy(bandit, greedy=True), lambda ctx, acts: bandit.greedy(ctx, acts)),
        ("uniform", Uniform(), lambda ctx, acts: rng.choice(acts)["id"]),
        *[(f"always {a}", FixedAction(a), (lambda a: lambda ctx, acts: a)(a)) for a in ACTIONS],
    ]
    rows = []
    for name, candidate, choose in candidates:
        started = time.perf_counter()
        result = evaluate_policy(log, candidate, ci="normal")
        seconds = time.perf_counter() - started
        realized, expected, n = fresh_value(choose, fresh_sessions, seed + 1)
        row = {"policy": name}
        for e in result.estimates:
            row[e.estimator] = f"{e.value:.4f} [{e.ci[0]:.4f}, {e.ci[1]:.4f}]"
            row[f"{e.estimator}_value"] = e.value
        row.update({"ess": round(result["ips"].effective_sample_size), "fresh realized": realized,
                    "fresh truth": expected, "fresh decisions": n, "ope seconds": round(seconds, 1)})
        rows.append(row)
    return pd.DataFrame(rows)


def figure(path: Path, runs: dict[str, LiveRun]) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, run in runs.items():
        exp = np.array([[d["expected"][a] for a in ACTIONS] for d in run.decisions])
        chosen = np.array([ACTIONS.index(d["action"]) for d in run.decisions])
        best = np.array([ACTIONS.index(BEST_ACTION[d["persona"]]) for d in run.decisions])
        rows = np.arange(len(chosen))
        shown = rows[::max(1, len(rows) // 2000)]  # 2,000 points a line are plenty for the eye
        fig.add_scatter(x=shown + 1, y=np.cumsum(exp[rows, best] - exp[rows, chosen])[shown],
                        name=f"bandit ({label})", mode="lines")
        if label == next(iter(runs)):
            fig.add_scatter(x=shown + 1, y=np.cumsum(exp[rows, best] - exp.mean(axis=1))[shown], name="uniform random",
                            mode="lines", line={"dash": "dash"})
    fig.update_layout(title="Cumulative expected regret against the per-persona oracle",
                      xaxis_title="decisions", yaxis_title="regret (expected purchases lost)")
    fig.write_html(path, include_plotlyjs="cdn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def over_http(seconds: float, rate: float, seed: int) -> dict | None:
    """``journeymap serve`` on a fresh store, driven by ``journeymap simulate --live``'s loop."""
    exe = Path(sys.executable).with_name("journeymap")
    probe = subprocess.run([str(exe), "serve", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"\n(over HTTP: skipped, `journeymap serve` is not available: {probe.stderr.strip()[:200]})")
        return None
    work = OUT / "http"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "shop.duckdb"
    port = free_port()
    env = {**os.environ, "JOURNEYMAP_SECRET": SECRET, "JOURNEYMAP_API_KEYS": f"{API_KEY}:admin"}
    server = subprocess.Popen([str(exe), "serve", "--store", str(store), "--port", str(port), "--log-level", "warning"],
                              env=env, stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(120):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"journeymap serve exited: {(work / 'server.log').read_text()[-1000:]}")
            time.sleep(0.5)
        run = run_http(url, rate=rate, duration=seconds, seed=seed, api_key=API_KEY)
    finally:
        server.send_signal(signal.SIGINT)  # a clean stop: the decisions' shutdown checkpoints the bandit
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    log_path = store.with_suffix(".decisions.jsonl")
    out = {"run": run, "summary": run.summary(), "errors": run.errors[:5], "log": log_path}
    if log_path.exists() and len(run.decisions):
        out["log_decisions"] = len(read_log(log_path))
        checkpoint = store.with_suffix(".decisions.bandit.zip")
        if checkpoint.exists():
            out["personas"] = greedy_by_persona(ContextualBandit.load(checkpoint), run, log_path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="simulated sessions per policy, in process")
    parser.add_argument("--explorations", default="squarecb,epsilon", help="bandits to run, comma-separated")
    parser.add_argument("--fresh-sessions", type=int, default=20_000, help="fresh traffic per offline comparison")
    parser.add_argument("--http-seconds", type=float, default=60.0, help="0: skip the run over HTTP")
    parser.add_argument("--http-rate", type=float, default=50.0, help="sessions per second over HTTP")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(machine("vowpalwabbit", "fastapi", "numpy", load=True))
    print(f"\ntruth (best action per persona): {BEST_ACTION}")

    tables, runs, personas, policies, results = [], {}, {}, {}, {}
    for exploration in args.explorations.split(","):
        work = OUT / exploration
        shutil.rmtree(work, ignore_errors=True)
        config = PolicyConfig(exploration=exploration, seed=args.seed)
        policy = OnlinePolicy(work / "live.decisions.jsonl", secret=SECRET, config=config)
        started = time.perf_counter()
        run = run_live(InProcessTarget(policy), sessions=args.sessions, seed=args.seed)
        seconds = time.perf_counter() - started
        policy.checkpoint()
        label = f"{exploration} ({policy.bandit.arguments().replace(' --quiet', '')})"
        print(f"\n{label}: {run.sessions:,} sessions, {len(run.decisions):,} decisions in {seconds:.0f} s "
              f"({run.sessions / seconds:,.0f} sessions/s, each a decision request, its learning and ~6 events)")
        tables.append(regret_table(run, exploration))
        runs[exploration] = run
        personas[exploration] = greedy_by_persona(policy.bandit, run, policy.log_path)
        policies[exploration] = policy
        results[exploration] = {"seconds": seconds, "summary": run.summary()}

    table = pd.concat(tables, ignore_index=True)
    print("\n## Cumulative expected regret against the per-persona oracle, in process\n")
    print(markdown(table))
    for exploration, frame in personas.items():
        print(f"\n## Per persona, the final {exploration} bandit's greedy choice\n")
        print(markdown(frame))
    figure(OUT / "regret.html", runs)
    print(f"\nfigure: {OUT / 'regret.html'}")

    first = next(iter(policies))
    offline = offline_table(policies[first], args.fresh_sessions, args.seed + 100)
    print(f"\n## The final {first} policy and fixed ones, evaluated from its decision log ({len(runs[first].decisions):,} "
          f"decisions) and on {args.fresh_sessions:,} fresh sessions\n")
    shown = offline[["policy", "ips", "snips", "dr", "ess", "fresh realized", "fresh truth", "fresh decisions"]]
    print(markdown(shown, 4))
    for policy in policies.values():
        policy.close()

    http = None
    if args.http_seconds > 0:
        http = over_http(args.http_seconds, args.http_rate, args.seed)
        if http is not None:
            print(f"\n## Over HTTP: journeymap serve, {args.http_seconds:.0f} s at {args.http_rate:g} sessions/s\n")
            print(json.dumps({**http["summary"], "errors": http["errors"],
                              "decisions in the server's log": http.get("log_decisions")}, indent=1))
            if len(http["run"].decisions):
                print()
                print(markdown(regret_table(http["run"], "http")))
            if "personas" in http:
                print()
                print(markdown(http["personas"]))

    (OUT / "results.json").write_text(json.dumps({
        "machine": machine("vowpalwabbit", "fastapi", "numpy"), "args": vars(args),
        "regret": table.to_dict("records"), "personas": {k: v.to_dict("records") for k, v in personas.items()},
        "offline": offline.to_dict("records"), "runs": results,
        "http": None if http is None else {"summary": http["summary"], "errors": http["errors"]},
    }, indent=1, default=str))


if __name__ == "__main__":
    main()
