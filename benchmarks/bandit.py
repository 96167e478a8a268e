"""Closed loop: the contextual bandit learning from simulated live traffic, in process and over HTTP.

    .venv/bin/python benchmarks/bandit.py                                  # 100,000 sessions per policy, then 60 s over HTTP
    .venv/bin/python benchmarks/bandit.py --sessions 20000 --http-seconds 0  # quicker, no service
    .venv/bin/python benchmarks/bandit.py --explorations squarecb --repeat-seeds 2,3 --http-seconds 0

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
* the same over the run, from snapshots of the bandit (in process after 2,500, 5,000, 10,000, ...
  decisions; over HTTP the server's checkpoint, copied about once a minute), each judged on the
  persona's last 1,000 contexts up to then: whether the greedy choice settles or keeps swinging;
* offline: the final greedy policy (and fixed ones) evaluated from the decision log by IPS, SNIPS
  and DR (normal 95% intervals) against what it really earns on fresh simulated traffic;
* what the context allows: per persona, how far its best action leads the next (and the decisions
  per action a test needs to tell them apart), and the share of its decisions where a model fitted
  to the true expected rewards, without noise, picks the best action: the most any policy on the
  bandit's context can reach, since some shoppers of different personas look alike;
* ``--repeat-seeds``: the first exploration again on other traffic, since one run's final greedy
  choices vary from seed to seed.

The bandit only sees what a shop would know: the session (device, channel, landing page, search,
the category and price level of the product on screen, visit number) and the stored profile of
what the user did in earlier sessions (counts, session depth, bounce rate, recency, tenure, funnel
stage, top category, preferred device and channel); never the persona. Over HTTP, ``journeymap serve`` runs on a fresh store with its
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
import threading
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


def snapshot_marks(sessions: int) -> list[int]:
    """Decision counts at which to keep the in-process bandit: 2,500 doubling, within the run
    (about 0.79 decisions per session)."""
    marks, m = [], 2500
    while m < 0.75 * sessions:
        marks.append(m)
        m *= 2
    return marks


def with_end(table: pd.DataFrame, run: LiveRun, final: pd.DataFrame) -> pd.DataFrame:
    """A convergence table with the final bandit's row (at the run's last decision) added."""
    end = {"decisions": len(run.decisions), **dict(zip(final["persona"], final["greedy = best"]))}
    return pd.concat([table, pd.DataFrame([end])], ignore_index=True)


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


def logged_contexts(log_path: Path, lines: int | None = None) -> dict[str, tuple[dict, list]]:
    """decision id -> (context, actions) from the decision log, or from its first ``lines`` lines
    (what a checkpoint of the server's bandit had learned)."""
    contexts = {}
    with open(log_path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if lines is not None and i >= lines:
                break
            rec = json.loads(line)
            contexts[rec["decision_id"]] = (rec["context"], rec["actions"])
    return contexts


def greedy_by_persona(bandit: ContextualBandit, run: LiveRun, contexts: dict[str, tuple[dict, list]],
                      last: int = 1000, upto: int | None = None) -> pd.DataFrame:
    """Per persona, on its last ``last`` logged contexts where the choice matters (among the run's
    first ``upto`` decisions): how often the bandit's greedy choice is the persona's best action."""
    decisions = run.decisions if upto is None else run.decisions[:upto]
    rows = []
    for q in PERSONAS:
        mine = [d for d in decisions if d["persona"] == q.name and d["decision_id"] in contexts and matters(d)]
        recent = mine[-last:]
        picks = pd.Series([bandit.greedy(*contexts[d["decision_id"]]) for d in recent], dtype=object)
        taken = pd.Series([d["action"] for d in recent], dtype=object)
        best = BEST_ACTION[q.name]
        rows.append({"persona": q.name, "best action": best, "decisions": len(mine),
                     "greedy = best": float((picks == best).mean()) if len(picks) else None,
                     "greedy mode": picks.mode().iloc[0] if len(picks) else None,
                     "taken = best (recent)": float((taken == best).mean()) if len(taken) else None})
    return pd.DataFrame(rows)


class SnapshotTarget(InProcessTarget):
    """The policy in process, its bandit saved after each of ``marks`` decisions, to see later how
    its greedy choices moved over the run."""

    def __init__(self, policy: OnlinePolicy, marks: list[int], folder: Path) -> None:
        super().__init__(policy)
        self.marks, self.folder, self.snapshots = set(marks), folder, []

    def decide(self, request: dict) -> dict:
        reply = super().decide(request)
        if self.requests in self.marks:
            path = self.policy.bandit.save(self.folder / f"snapshot-{self.requests}.zip")
            self.snapshots.append({"decisions": self.requests, "path": path})
        return reply


def convergence(run: LiveRun, log_path: Path, snapshots: list[dict]) -> pd.DataFrame:
    """Per snapshot of the bandit (``path``: its checkpoint): per persona, how often its greedy
    choice is the persona's best action on the persona's last 1,000 contexts up to then. In process
    a snapshot also says after how many of the run's ``decisions`` it was taken; over HTTP, up to
    then is what the checkpoint had learned (its ``log_lines``, the first lines of the log)."""
    rows = []
    full = None
    for snap in snapshots:
        bandit = ContextualBandit.load(snap["path"])
        if "decisions" in snap:
            full = full if full is not None else logged_contexts(log_path)
            contexts, upto = full, snap["decisions"]
        else:
            contexts = logged_contexts(log_path, int(bandit.metadata_["log_lines"]))
            upto = max((i + 1 for i, d in enumerate(run.decisions) if d["decision_id"] in contexts), default=0)
        frame = greedy_by_persona(bandit, run, contexts, upto=upto)
        rows.append({"decisions": upto, **dict(zip(frame["persona"], frame["greedy = best"]))})
        bandit.close()
    return pd.DataFrame(rows)


def context_ceiling(sessions: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(gaps, ceiling): per persona, each action's true expected reward where the actions differ,
    how far the best leads the second and the decisions per action a two-sided 5% test with 80%
    power needs to tell them apart; and the share of the persona's decisions where models fitted
    to the true expected rewards (on half of fresh uniform traffic, judged on the other half) pick
    its best action. trees: any function of the context; pairs: linear in the context features
    and their pairs, per action (what the default interactions represent); linear: linear per
    action (``-q CA -q NA`` alone)."""
    import scipy.sparse as sp
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures

    rows: list[dict] = []
    rng = random.Random(seed)

    def choose(features, actions):
        rows.append(features)
        return rng.choice(actions)["id"]

    run = run_live(FixedTarget(choose), sessions=sessions, seed=seed)
    persona = np.array([d["persona"] for d in run.decisions])
    truth = np.array([[d["expected"][a] for a in ACTIONS] for d in run.decisions])
    keep = truth.max(axis=1) - truth.min(axis=1) > 1e-12
    gaps = []
    for q in PERSONAS:
        mean = truth[keep & (persona == q.name)].mean(axis=0)
        first, second = np.argsort(mean)[::-1][:2]
        gap, pbar = mean[first] - mean[second], (mean[first] + mean[second]) / 2
        gaps.append({"persona": q.name, **{a: float(v) for a, v in zip(ACTIONS, mean)},
                     "best - second": float(gap), "second": ACTIONS[second],
                     "decisions per action to tell": int(np.ceil(2 * (1.96 + 0.84) ** 2 * pbar * (1 - pbar) / gap**2))})

    frame = pd.DataFrame(rows)
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool]
    text = frame.drop(columns=numeric).astype(str)  # absent: 'nan', a level of its own
    onehot = OneHotEncoder(handle_unknown="ignore", min_frequency=5).fit_transform(text).tocsr()
    numbers = sp.csr_matrix(frame[numeric].fillna(0.0).to_numpy(float))
    linear = sp.hstack([onehot, numbers]).tocsr()
    pairs = sp.hstack([PolynomialFeatures(2, interaction_only=True, include_bias=False).fit_transform(onehot),
                       numbers]).tocsr()
    trees = frame.copy()
    for c in trees.columns:
        if c not in numeric:
            trees[c] = trees[c].astype(str).astype("category").cat.codes  # codes: trees split them all the same
    half = len(frame) // 2
    test = np.arange(half, len(frame))
    best = np.array([ACTIONS.index(BEST_ACTION[p]) for p in persona])
    picks = {}
    for name, X, model in (("trees", trees.to_numpy(float), lambda: HistGradientBoostingRegressor(max_iter=200)),
                           ("pairs", pairs, lambda: Ridge(alpha=1.0)), ("linear", linear, lambda: Ridge(alpha=1.0))):
        scores = np.column_stack([model().fit(X[:half], truth[:half, k]).predict(X[half:]) for k in range(len(ACTIONS))])
        picks[name] = scores.argmax(axis=1)
    ceiling = []
    for q in PERSONAS:
        mine = keep[half:] & (persona[half:] == q.name)
        ceiling.append({"persona": q.name, "decisions": int(mine.sum()),
                        **{f"{name}: picks best": float((pick[mine] == best[test][mine]).mean())
                           for name, pick in picks.items()}})
    return pd.DataFrame(gaps), pd.DataFrame(ceiling)


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


class Snapshots:
    """Copies of the server's bandit checkpoint (written every 1,000 learned rewards, with how many
    log lines it has learned), at most one per ``every`` seconds."""

    def __init__(self, checkpoint: Path, folder: Path, every: float = 60.0) -> None:
        self.checkpoint, self.folder, self.every = checkpoint, folder, every
        self.taken: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        seen = None
        while not self._stop.wait(self.every):
            try:
                stamp = self.checkpoint.stat().st_mtime_ns
                if stamp == seen:
                    continue
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / f"bandit-{len(self.taken) + 1}.zip"
                shutil.copyfile(self.checkpoint, path)  # the server replaces it whole, never rewrites it
            except FileNotFoundError:
                continue
            seen = stamp
            self.taken.append({"path": path})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def over_http(seconds: float, rate: float, seed: int, profile_refresh: str = "30s") -> dict | None:
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
    server = subprocess.Popen([str(exe), "serve", "--store", str(store), "--port", str(port), "--log-level", "warning",
                               "--profile-refresh", profile_refresh],
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
        snapper = Snapshots(store.with_suffix(".decisions.bandit.zip"), work / "snapshots")
        try:
            run = run_http(url, rate=rate, duration=seconds, seed=seed, api_key=API_KEY)
        finally:
            snapper.stop()
    finally:
        server.send_signal(signal.SIGINT)  # a clean stop: the decisions' shutdown checkpoints the bandit
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    log_path = store.with_suffix(".decisions.jsonl")
    # The simulator's side of each decision (persona, every action's true expected reward), to join
    # with the server's log by decision id, e.g. to replay the logged contexts with another learner.
    run.write(work / "run.jsonl")
    out = {"run": run, "summary": run.summary(), "errors": run.errors[:5], "log": log_path}
    if log_path.exists() and len(run.decisions):
        out["log_decisions"] = len(read_log(log_path))
        out["profile_lag"] = profile_lag(log_path)
        checkpoint = store.with_suffix(".decisions.bandit.zip")
        if checkpoint.exists():
            out["personas"] = greedy_by_persona(ContextualBandit.load(checkpoint), run, logged_contexts(log_path))
            if snapper.taken:
                out["convergence"] = with_end(convergence(run, log_path, snapper.taken), run, out["personas"])
    return out


def profile_lag(log_path: Path) -> dict:
    """How up to date the stored profile in each logged decision's context was, for returning
    shoppers (``visit`` > 1): none yet, or missing some of their earlier sessions. The simulated
    clock runs hundreds of times faster than the wall clock, so a profile refreshed every 30 s
    misses far more of a shopper's recent sessions than it would in a shop."""
    returning = missing = behind = 0
    for line in log_path.read_text().splitlines():
        context = json.loads(line)["context"]
        if context.get("visit", 1) > 1:
            returning += 1
            if "sessions" not in context:
                missing += 1
            elif context["sessions"] < context["visit"] - 1:
                behind += 1
    return {"returning decisions": returning, "no profile yet": missing / max(returning, 1),
            "profile misses an earlier session": behind / max(returning, 1)}


def http_report(args: argparse.Namespace) -> dict | None:
    """The run over HTTP, printed: its summary, regret table and per-persona greedy choices."""
    http = over_http(args.http_seconds, args.http_rate, args.seed, args.http_profile_refresh)
    if http is None:
        return None
    print(f"\n## Over HTTP: journeymap serve, {args.http_seconds:.0f} s at {args.http_rate:g} sessions/s\n")
    print(json.dumps({**http["summary"], "errors": http["errors"],
                      "decisions in the server's log": http.get("log_decisions"),
                      "stored profiles in returning shoppers' decisions": http.get("profile_lag")}, indent=1))
    if len(http["run"].decisions):
        print()
        print(markdown(regret_table(http["run"], "http")))
    if "personas" in http:
        print()
        print(markdown(http["personas"]))
    if "convergence" in http:
        print("\nThe server's bandit over the run, as checkpointed about once a minute: per persona, greedy = best on "
              "its last 1,000 logged contexts up to then:\n")
        print(markdown(http["convergence"], 2))
    if len(http["run"].decisions):
        figure(OUT / "regret-http.html", {"http": http["run"]})
        print(f"\nfigure: {OUT / 'regret-http.html'}")
    return http


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="simulated sessions per policy, in process")
    parser.add_argument("--explorations", default="squarecb,epsilon", help="bandits to run, comma-separated")
    parser.add_argument("--fresh-sessions", type=int, default=20_000, help="fresh traffic per offline comparison")
    parser.add_argument("--http-seconds", type=float, default=60.0, help="0: skip the run over HTTP")
    parser.add_argument("--http-rate", type=float, default=50.0, help="sessions per second over HTTP")
    parser.add_argument("--http-only", action="store_true", help="only the run over HTTP")
    parser.add_argument("--http-profile-refresh", default="30s", help="the server's --profile-refresh over HTTP")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the runs' logs, figures and results.json")
    parser.add_argument("--repeat-seeds", default="", help="more seeds for the first exploration, comma-separated")
    parser.add_argument("--ceiling-sessions", type=int, default=60_000, help="uniform traffic for what the "
                        "context allows; 0: skip")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a policy setting for the in-process bandits, e.g. gamma_scale=10 or learning_rate=0.03 "
                             "(PolicyConfig's numeric keys; repeatable)")
    args = parser.parse_args()
    OUT = args.out
    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in {"epsilon", "softmax_lambda", "gamma_scale", "bag", "learning_rate", "power_t", "clip_p"} \
                or not value:
            raise SystemExit(f"--set takes KEY=VALUE with KEY one of epsilon, softmax_lambda, gamma_scale, bag, "
                             f"learning_rate, power_t, clip_p; got {item!r}")
        settings[key] = int(value) if key == "bag" else float(value)
    OUT.mkdir(parents=True, exist_ok=True)
    print(machine("vowpalwabbit", "fastapi", "numpy", load=True))
    print(f"\ntruth (best action per persona): {BEST_ACTION}")

    if args.http_only:
        http_report(args)
        return
    tables, runs, personas, policies, results, converged = [], {}, {}, {}, {}, {}
    for exploration in args.explorations.split(","):
        work = OUT / exploration
        shutil.rmtree(work, ignore_errors=True)
        config = PolicyConfig(exploration=exploration, seed=args.seed, **settings)
        policy = OnlinePolicy(work / "live.decisions.jsonl", secret=SECRET, config=config)
        target = SnapshotTarget(policy, snapshot_marks(args.sessions), work)
        started = time.perf_counter()
        run = run_live(target, sessions=args.sessions, seed=args.seed)
        seconds = time.perf_counter() - started
        policy.checkpoint()
        label = f"{exploration} ({policy.bandit.arguments().replace(' --quiet', '')})"
        print(f"\n{label}: {run.sessions:,} sessions, {len(run.decisions):,} decisions in {seconds:.0f} s "
              f"({run.sessions / seconds:,.0f} sessions/s, each a decision request, its learning and ~6 events)")
        tables.append(regret_table(run, exploration))
        runs[exploration] = run
        personas[exploration] = greedy_by_persona(policy.bandit, run, logged_contexts(policy.log_path))
        converged[exploration] = with_end(convergence(run, policy.log_path, target.snapshots), run,
                                          personas[exploration])
        policies[exploration] = policy
        results[exploration] = {"seconds": seconds, "summary": run.summary()}

    table = pd.concat(tables, ignore_index=True)
    print("\n## Cumulative expected regret against the per-persona oracle, in process\n")
    print(markdown(table))
    for exploration, frame in personas.items():
        print(f"\n## Per persona, the final {exploration} bandit's greedy choice\n")
        print(markdown(frame))
        print(f"\nThe {exploration} bandit's greedy choice = best over the run (per persona, on its last 1,000 "
              "contexts up to then):\n")
        print(markdown(converged[exploration], 2))
    figure(OUT / "regret.html", runs)
    print(f"\nfigure: {OUT / 'regret.html'}")

    first = next(iter(policies))
    extra: dict = {}
    repeats = [args.seed, *(int(s) for s in args.repeat_seeds.split(",") if s.strip())]
    if len(repeats) > 1:
        rows, curves = [], []
        for seed in repeats:
            if seed == args.seed:
                run, frame, curve = runs[first], personas[first], converged[first]
            else:
                work = OUT / f"{first}-seed{seed}"
                shutil.rmtree(work, ignore_errors=True)
                with OnlinePolicy(work / "live.decisions.jsonl", secret=SECRET,
                                  config=PolicyConfig(exploration=first, seed=seed, **settings)) as policy:
                    target = SnapshotTarget(policy, snapshot_marks(args.sessions), work)
                    run = run_live(target, sessions=args.sessions, seed=seed)
                    policy.checkpoint()
                    frame = greedy_by_persona(policy.bandit, run, logged_contexts(policy.log_path))
                    curve = with_end(convergence(run, policy.log_path, target.snapshots), run, frame)
            curves.append(curve.assign(seed=seed))
            end = run.regret([len(run.decisions)]).iloc[-1]
            rows.append({"seed": seed, "decisions": len(run.decisions), "regret_policy": end["regret_policy"],
                         "regret_uniform": end["regret_uniform"],
                         **dict(zip(frame["persona"], frame["greedy = best"]))})
        repeated = pd.DataFrame(rows)
        repeated = pd.concat([repeated.astype({"seed": str}),
                              pd.DataFrame([{"seed": "mean", **repeated.drop(columns="seed").mean().to_dict()}])],
                             ignore_index=True).astype({"decisions": int})
        print(f"\n## The {first} bandit on {len(repeats)} seeds: cumulative regret and, per persona, its final greedy "
              "choice = best\n")
        print(markdown(repeated))
        extra["repeats"] = repeated.to_dict("records")
        # the seeds' runs differ in length only in the last row (the end of each run)
        curves = pd.concat(curves, ignore_index=True)
        curves["mark"] = curves.groupby("seed").cumcount()
        names = [q.name for q in PERSONAS]
        spread = curves.groupby("mark").agg({"decisions": "min", **{n: ["mean", "min"] for n in names}})
        over_seeds = pd.DataFrame({"decisions": spread[("decisions", "min")].astype(int)})
        for n in names:
            over_seeds[n] = [f"{m:.2f} (min {lo:.2f})" for m, lo in zip(spread[(n, "mean")], spread[(n, "min")])]
        print(f"\nOver the run, per persona, greedy = best: mean over the {len(repeats)} seeds (and the lowest seed); "
              "the last row is each run's end:\n")
        print(markdown(over_seeds))
        extra["convergence_by_seed"] = curves.to_dict("records")

    if args.ceiling_sessions > 0:
        gaps, ceiling = context_ceiling(args.ceiling_sessions, args.seed + 200)
        print(f"\n## What the context allows, on {args.ceiling_sessions:,} sessions of uniform traffic\n")
        print("Per persona, each action's true expected reward (where the actions differ) and how far the best "
              "leads:\n")
        print(markdown(gaps, 4))
        print("\nShare of the persona's decisions where a model fitted to the true expected rewards picks its best "
              "action (held-out half):\n")
        print(markdown(ceiling))
        extra["gaps"], extra["ceiling"] = gaps.to_dict("records"), ceiling.to_dict("records")

    offline = offline_table(policies[first], args.fresh_sessions, args.seed + 100)
    print(f"\n## The final {first} policy and fixed ones, evaluated from its decision log ({len(runs[first].decisions):,} "
          f"decisions) and on {args.fresh_sessions:,} fresh sessions\n")
    shown = offline[["policy", "ips", "snips", "dr", "ess", "fresh realized", "fresh truth", "fresh decisions"]]
    print(markdown(shown, 4))
    for policy in policies.values():
        policy.close()

    http = http_report(args) if args.http_seconds > 0 else None

    (OUT / "results.json").write_text(json.dumps({
        "machine": machine("vowpalwabbit", "fastapi", "numpy"), "args": vars(args),
        "regret": table.to_dict("records"), "personas": {k: v.to_dict("records") for k, v in personas.items()},
        "convergence": {k: v.to_dict("records") for k, v in converged.items()},
        "offline": offline.to_dict("records"), "runs": results, **extra,
        "http": None if http is None else {"summary": http["summary"], "errors": http["errors"]},
    }, indent=1, default=str))


if __name__ == "__main__":
    main()
