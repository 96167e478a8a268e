"""Journey analyses against the floor (hand-written DuckDB SQL) and against retentioneering and PM4Py.

    python benchmarks/journeys.py               # 1M events, ~100k users, best of 2
    python benchmarks/journeys.py --repeat 3

One log, simulated by journeymap (REES46 CSV layout, cached in benchmarks/out/), ingested into a
store under benchmarks/out/journeys/ and exported to Parquet there: the store is the input of
journeymap and of the floor, the Parquet export the input of the other tools. Three operations:

* sessions: materialise the sessionized events (journeymap: a table from ``journey_events``;
  floor: lag() + running sum over the 30-minute gap, the source session id taking precedence as
  in journeymap; retentioneering: ``split_sessions(timeout=...)``, gap only);
* graph: the transition graph by event type with counts, probabilities, median and p95 seconds
  (journeymap: ``transition_graph``; floor: the same sessionization, then lead() + group by;
  retentioneering: ``transition_graph_data`` for count, proba_out, time_median and time_q95 with
  path = session key; PM4Py: ``discover_dfg`` + ``discover_performance_dfg``, case id = session key);
* funnel: product_view > add_to_cart > begin_checkout > purchase, ordered, within 1 hour of entry,
  per user (journeymap: ``funnel``; floor: one join per step; retentioneering:
  ``get_conversion_rate(product_view, [patterns], within=...)``, which gives counts but no times).

Each (operation, tool) runs in a child process of its own (so peak RSS, the child's VmHWM, is
that operation's, loading included); the child loads its input, then times the operation ``--repeat``
times and reports the best. retentioneering and PM4Py run from benchmark-only virtual environments
(benchmarks/out/venv-retentioneering, benchmarks/out/venv-pm4py); PM4Py is AGPL and is never
imported by journeymap. A tool whose environment is missing is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
WORK = OUT / "journeys"
SECRET = "benchmark-secret-0123456789"
STEPS = ["product_view", "add_to_cart", "begin_checkout", "purchase"]
GAP = 30 * 60  # seconds; journeymap's default session gap
WINDOW = 3600  # the funnel's window, seconds
VENVS = {"retentioneering": OUT / "venv-retentioneering", "pm4py": OUT / "venv-pm4py"}

# Every child: argv = op, input path, repeat. It prints one JSON line: {"seconds": best, "check": {...}}.
COMMON = textwrap.dedent("""
    import json, sys, time
    OP, SRC, REPEAT = sys.argv[1], sys.argv[2], int(sys.argv[3])
    STEPS = %r
    GAP, WINDOW = %d, %d
    def timed(fn):
        best, out = None, None
        for _ in range(REPEAT):
            t = time.perf_counter()
            out = fn()
            s = time.perf_counter() - t
            best = s if best is None else min(best, s)
        return best, out
    def peak_mib():
        # VmHWM: this process's own high-water mark (ru_maxrss would carry the parent's over the fork)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
""") % (STEPS, GAP, WINDOW)

JOURNEYMAP = COMMON + textwrap.dedent("""
    from journeymap.config import Settings
    from journeymap.journeys import Journeys, transition_graph, funnel
    j = Journeys.open(SRC, settings=Settings(secret="%s"))
    j.con.execute("SELECT count(*) FROM events").fetchall()  # open and warm the file like the floor does
    def sessions():
        j.con.execute("DROP TABLE IF EXISTS sess")
        j.con.execute(f"CREATE TEMP TABLE sess AS WITH journey_events AS {j.events_sql()} SELECT * FROM journey_events")
        return j.con.execute("SELECT count(DISTINCT session_key), count(*) FROM sess").fetchall()[0]
    def graph():
        return transition_graph(j, by="event_type")
    def fun():
        return funnel(j, STEPS, window="1h", order="ordered", per="user")
    if OP == "sessions":
        s, (n, rows) = timed(sessions)
        check = {"sessions": n, "events": rows}
    elif OP == "graph":
        s, g = timed(graph)
        e = g.edge("product_view", "add_to_cart")
        check = {"sessions": g.sessions, "edges": len(g.edges), "transitions": sum(x.count for x in g.edges),
                 "pv_atc": e.count, "pv_atc_p": round(e.probability, 6), "pv_atc_median_s": e.median_seconds,
                 "pv_atc_p95_s": e.p95_seconds}
    else:
        s, f = timed(fun)
        check = {"counts": [st.count for st in f.steps],
                 "median_s": [st.median_seconds_from_previous for st in f.steps[1:]]}
    print(json.dumps({"seconds": s, "peak_mib": peak_mib(), "check": check}))
""") % SECRET

# The floor: what a user would write by hand in DuckDB for the same figures, on the same store.
FLOOR_SESSIONS = f"""
    WITH g AS (
        SELECT *, CASE WHEN epoch(ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id)) <= {GAP}
                       THEN 0 ELSE 1 END AS new_session
        FROM events
    )
    SELECT * EXCLUDE (new_session),
           CASE WHEN session_id IS NOT NULL THEN user_id || ':' || session_id
                ELSE user_id || '#' || sum(new_session) OVER (PARTITION BY user_id ORDER BY ts, event_id
                                                              ROWS UNBOUNDED PRECEDING) END AS session_key
    FROM g"""
FLOOR_GRAPH = f"""
    WITH s AS ({FLOOR_SESSIONS}),
    m AS (
        SELECT event_type AS source,
               coalesce(lead(event_type) OVER w, 'session_end') AS target,
               epoch(lead(ts) OVER w - ts) AS seconds,
               row_number() OVER w AS pos
        FROM s WINDOW w AS (PARTITION BY session_key ORDER BY ts, event_id)
    ), t AS (
        SELECT source, target, seconds FROM m
        UNION ALL SELECT 'session_start', source, NULL FROM m WHERE pos = 1
    )
    SELECT source, target, count(*) AS n, count(*) / sum(count(*)) OVER (PARTITION BY source) AS p,
           quantile_cont(seconds, 0.5) AS median_s, quantile_cont(seconds, 0.95) AS p95_s
    FROM t GROUP BY source, target"""
_joins = []
for _k in range(1, len(STEPS)):
    _joins.append(f"""m{_k} AS (
        SELECT m.user_id, m.t0, min(e.ts) AS t{_k}
        FROM m{_k - 1} m JOIN ev e ON e.user_id = m.user_id AND e.event_type = '{STEPS[_k]}'
             AND e.ts >= m.t{_k - 1} AND e.ts <= m.t0 + INTERVAL {WINDOW} SECOND
        GROUP BY m.user_id, m.t0)""")
# Ordered funnel with a window from entry: the first step-k event at or after step k-1, within the window.
# (A later step's event at the same instant as the previous step counts, as journeymap orders ties by step.)
FLOOR_FUNNEL = f"""
    WITH ev AS (SELECT user_id, ts, event_type FROM events WHERE event_type IN ({', '.join(repr(s) for s in STEPS)})),
    m0 AS (SELECT user_id, min(ts) AS t0 FROM ev WHERE event_type = '{STEPS[0]}' GROUP BY user_id),
    {', '.join(_joins)}
    SELECT (SELECT count(*) FROM m0), """ + ", ".join(
    f"(SELECT count(*) FROM m{k}), (SELECT median(epoch(t{k} - t{k - 1})) FROM m{k} JOIN m{k - 1} USING (user_id))"
    if k > 1 else f"(SELECT count(*) FROM m{k}), (SELECT median(epoch(t{k} - t0)) FROM m{k})"
    for k in range(1, len(STEPS)))

FLOOR = COMMON + textwrap.dedent("""
    import duckdb
    con = duckdb.connect(SRC, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SELECT count(*) FROM events").fetchall()
    SESSIONS, GRAPH, FUNNEL = %r, %r, %r
    def sessions():
        con.execute("DROP TABLE IF EXISTS sess")
        con.execute("CREATE TEMP TABLE sess AS " + SESSIONS)
        return con.execute("SELECT count(DISTINCT session_key), count(*) FROM sess").fetchall()[0]
    if OP == "sessions":
        s, (n, rows) = timed(sessions)
        gap_only = con.execute(
            "SELECT count(*) FROM (SELECT epoch(ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id)) AS d "
            f"FROM events) WHERE d IS NULL OR d > {GAP}").fetchall()[0][0]
        check = {"sessions": n, "events": rows, "gap_only_sessions": gap_only}
    elif OP == "graph":
        s, rows = timed(lambda: con.execute(GRAPH).fetchall())
        e = next(r for r in rows if r[0] == "product_view" and r[1] == "add_to_cart")
        inner = [r for r in rows if r[0] != "session_start" and r[1] != "session_end"]
        check = {"sessions": sum(r[2] for r in rows if r[0] == "session_start"), "edges": len(rows),
                 "transitions": sum(r[2] for r in rows), "inner_transitions": sum(r[2] for r in inner),
                 "pv_atc": e[2], "pv_atc_p": round(e[3], 6), "pv_atc_median_s": e[4], "pv_atc_p95_s": e[5]}
    else:
        s, r = timed(lambda: con.execute(FUNNEL).fetchall()[0])
        check = {"counts": [r[0]] + [r[i] for i in range(1, len(r), 2)], "median_s": [r[i] for i in range(2, len(r), 2)]}
    print(json.dumps({"seconds": s, "peak_mib": peak_mib(), "check": check}))
""") % (FLOOR_SESSIONS, FLOOR_GRAPH, FLOOR_FUNNEL)

PM4PY = COMMON + textwrap.dedent("""
    import pandas as pd, pm4py
    df = pd.read_parquet(SRC, columns=["user_id", "session_id", "ts", "event_type", "event_id"])
    df["case"] = df["user_id"] + ":" + df["session_id"]
    df = df.sort_values(["case", "ts", "event_id"], kind="stable").reset_index(drop=True)
    keys = dict(case_id_key="case", activity_key="event_type", timestamp_key="ts")
    def graph():
        dfg, start, end = pm4py.discover_dfg(df, **keys)
        perf, _, _ = pm4py.discover_performance_dfg(df, **keys)
        return dfg, start, end, perf
    if OP != "graph":
        raise SystemExit("PM4Py has no " + OP)
    s, (dfg, start, end, perf) = timed(graph)
    med = perf[("product_view", "add_to_cart")]
    check = {"sessions": sum(start.values()), "edges": len(dfg) + len(start) + len(end),
             "inner_transitions": sum(dfg.values()), "pv_atc": dfg[("product_view", "add_to_cart")],
             "pv_atc_median_s": med.get("median") if isinstance(med, dict) else med,
             "pm4py": pm4py.__version__}
    print(json.dumps({"seconds": s, "peak_mib": peak_mib(), "check": check}))
""")

RETENTIONEERING_SCRIPT = COMMON + textwrap.dedent("""
    import os
    os.environ["RETENTIONEERING_NO_TRACK"] = "1"  # no analytics calls home from a benchmark
    import pandas as pd, retentioneering
    from retentioneering import Eventstream
    df = pd.read_parquet(SRC, columns=["user_id", "session_id", "ts", "event_type"])
    df["case"] = df["user_id"] + ":" + df["session_id"]
    df = df.rename(columns={"event_type": "event", "ts": "timestamp"})[["user_id", "case", "event", "timestamp"]]
    # Building the eventstream (validation, sorting, indexing) counts as loading, like journeymap's ingest.
    stream = Eventstream(df, {"path_cols": ["user_id", "case"], "event_col": "event", "timestamp_col": "timestamp"})
    def graph():
        return {w: stream.transition_graph_data(edge_weight=w, path_col="case")
                for w in ("count", "proba_out", "time_median", "time_q95")}
    ends = ["->.*->".join(STEPS[1:k + 1]) for k in range(1, len(STEPS))]
    if OP == "sessions":
        s, out = timed(lambda: stream.split_sessions(timeout=f"{GAP}s", session_col="gap_session", path_col="user_id"))
        check = {"sessions": int(out.df["gap_session"].nunique()), "events": len(out.df)}
    elif OP == "graph":
        s, m = timed(graph)
        c = m["count"]
        med = m["time_median"].loc["product_view", "add_to_cart"]
        check = {"sessions": int(c.loc["path_start"].sum()), "edges": int((c.values > 0).sum()),
                 "transitions": int(c.values.sum()), "pv_atc": int(c.loc["product_view", "add_to_cart"]),
                 "pv_atc_p": round(float(m["proba_out"].loc["product_view", "add_to_cart"]), 6),
                 "pv_atc_median_s": pd.Timedelta(med).total_seconds() if not isinstance(med, (int, float)) else float(med)}
    else:
        s, r = timed(lambda: stream.get_conversion_rate(STEPS[0], ends, within=f"{WINDOW}s", path_col="user_id"))
        check = {"counts": [int(r["paths_with_start"].iloc[0])] + [int(x) for x in r["converted"]]}
    check["version"] = retentioneering.__version__
    print(json.dumps({"seconds": s, "peak_mib": peak_mib(), "check": check}))
""")


def run_child(python: str, script: str, *args: str) -> dict | str:
    """The JSON line a child prints, or its last error line. (Peak memory is measured inside the
    child as VmHWM: ru_maxrss from os.wait4 would carry this parent's high-water mark over the fork.)"""
    proc = subprocess.run([python, "-c", script, *args], check=False, capture_output=True, text=True)
    text = proc.stdout.strip()
    if proc.returncode != 0 or not text:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit {proc.returncode}"
    # DuckDB may draw a progress bar on long queries; the result is the last JSON line.
    return json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])


def prepare(events: int) -> tuple[Path, Path]:
    """The store and its Parquet export for a simulated log of about ``events`` events (cached)."""
    from journeymap.config import Settings
    from journeymap.events import ingest
    from journeymap.simulator import simulate, users_for_events
    from journeymap.store import Store

    WORK.mkdir(parents=True, exist_ok=True)
    csv = OUT / f"rees46-{events}.csv"
    if not csv.exists():
        t = time.perf_counter()
        r = simulate(users=users_for_events(events, days=30), days=30, seed=1, out=csv)
        print(f"simulated {r.events:,} events in {time.perf_counter() - t:.1f} s -> {csv}", file=sys.stderr)
    store, parquet = WORK / f"store-{events}.duckdb", WORK / f"events-{events}.parquet"
    if not store.exists():
        t = time.perf_counter()
        partial = store.with_name(store.name + ".partial")
        partial.unlink(missing_ok=True)
        ingest(csv, partial, settings=Settings(secret=SECRET))
        partial.replace(store)
        print(f"ingested in {time.perf_counter() - t:.1f} s -> {store}", file=sys.stderr)
    if not parquet.exists():
        with Store(store) as st:
            st.export(parquet)
    return store, parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=float, default=1e6)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per operation; the best is kept")
    parser.add_argument("--tools", nargs="+", default=["floor", "journeymap", "retentioneering", "pm4py"])
    args = parser.parse_args()
    started = time.perf_counter()
    store, parquet = prepare(int(args.events))
    import duckdb

    with duckdb.connect(str(store), read_only=True) as con:
        n_events, n_users = con.execute("SELECT count(*), count(DISTINCT user_id) FROM events").fetchall()[0]
    tools = {
        "floor": ("duckdb SQL (floor)", sys.executable, FLOOR, store, ("sessions", "graph", "funnel")),
        "journeymap": ("journeymap", sys.executable, JOURNEYMAP, store, ("sessions", "graph", "funnel")),
        "retentioneering": ("retentioneering", str(VENVS["retentioneering"] / "bin" / "python"), RETENTIONEERING_SCRIPT,
                            parquet, ("sessions", "graph", "funnel")),
        "pm4py": ("PM4Py", str(VENVS["pm4py"] / "bin" / "python"), PM4PY, parquet, ("graph",)),
    }
    loads, results, problems = [], {}, []
    for op in ("sessions", "graph", "funnel"):
        for key in args.tools:
            name, python, script, src, ops = tools[key]
            if op not in ops:
                continue
            if not Path(python).exists():
                problems.append(f"{name}: no environment at {Path(python).parent.parent}")
                continue
            got = run_child(python, script, op, str(src), str(args.repeat))
            loads.append(os.getloadavg()[0])
            if isinstance(got, str):
                problems.append(f"{name} {op}: {got}")
                continue
            rss = got["peak_mib"]
            results[(op, key)] = (got["seconds"], rss, got["check"])
            print(f"  {op:8} {name:20} {got['seconds']:7.2f} s {rss:7,.0f} MiB  {json.dumps(got['check'])}",
                  file=sys.stderr)
    print(f"machine: {machine('duckdb')}")
    print(f"log: {n_events:,} events, {n_users:,} users; load average during the run: "
          f"max {max(loads, default=0):.2f}, mean {sum(loads) / max(len(loads), 1):.2f} (1-minute)")
    if max(loads, default=0) > 1.5:
        print("note: the load average was above 1.5: the other cores were busy during the run")
    print()
    print("| operation | tool | seconds | peak RSS MiB | time vs floor |")
    print("|---|---|---:|---:|---:|")
    for (op, key), (seconds, rss, _) in results.items():
        floor = results.get((op, "floor"))
        ratio = f"{seconds / floor[0]:.2f}x" if floor else "n/a"
        print(f"| {op} | {tools[key][0]} | {seconds:.2f} | {rss:,.0f} | {ratio} |")
    print()
    print("agreement checks:")
    for line in checks(results):
        print("  " + line)
    for p in problems:
        print("problem: " + p)
    print(f"\nwall time of the run: {time.perf_counter() - started:.0f} s")


def checks(results: dict) -> list[str]:
    lines = []
    def get(op, key):
        r = results.get((op, key))
        return r[2] if r else None
    fs, js, rs = get("sessions", "floor"), get("sessions", "journeymap"), get("sessions", "retentioneering")
    if fs and js:
        ok = fs["sessions"] == js["sessions"] and fs["events"] == js["events"]
        lines.append(f"[{'ok' if ok else 'DIFF'}] sessions: journeymap {js['sessions']:,} vs floor {fs['sessions']:,} "
                     f"(events {js['events']:,} vs {fs['events']:,})")
    if fs and rs:
        ok = rs["sessions"] == fs["gap_only_sessions"]
        lines.append(f"[{'ok' if ok else 'DIFF'}] 30-minute-gap sessions: retentioneering {rs['sessions']:,} vs floor "
                     f"{fs['gap_only_sessions']:,} (journeymap keeps the source session ids: {fs['sessions']:,})")
    fg, jg, pg, rg = (get("graph", k) for k in ("floor", "journeymap", "pm4py", "retentioneering"))
    if fg:
        for name, g in (("journeymap", jg), ("PM4Py", pg), ("retentioneering", rg)):
            if not g:
                continue
            ok = g["pv_atc"] == fg["pv_atc"]
            extra = ""
            if g.get("pv_atc_median_s") is not None:
                ok = ok and abs(g["pv_atc_median_s"] - fg["pv_atc_median_s"]) < 1e-6
                extra = f", median {g['pv_atc_median_s']} s vs {fg['pv_atc_median_s']} s"
            if "transitions" in g:
                ok = ok and g["transitions"] == fg["transitions"] and g["sessions"] == fg["sessions"]
                extra += f", all transitions {g['transitions']:,} vs {fg['transitions']:,}"
            elif "inner_transitions" in g:
                ok = ok and g["inner_transitions"] == fg["inner_transitions"] and g["sessions"] == fg["sessions"]
                extra += f", transitions within sessions {g['inner_transitions']:,} vs {fg['inner_transitions']:,}"
            if "pv_atc_p" in g:
                ok = ok and abs(g["pv_atc_p"] - fg["pv_atc_p"]) < 1e-6
            lines.append(f"[{'ok' if ok else 'DIFF'}] graph product_view -> add_to_cart: {name} {g['pv_atc']:,} "
                         f"vs floor {fg['pv_atc']:,}{extra}; sessions {g['sessions']:,} vs {fg['sessions']:,}")
    ff = get("funnel", "floor")
    for name, key in (("journeymap", "journeymap"), ("retentioneering", "retentioneering")):
        f = get("funnel", key)
        if ff and f:
            ok = f["counts"] == ff["counts"]
            if f.get("median_s"):
                ok = ok and all(a is not None and abs(a - b) < 1e-6 for a, b in zip(f["median_s"], ff["median_s"]))
            lines.append(f"[{'ok' if ok else 'DIFF'}] funnel counts: {name} {f['counts']} vs floor {ff['counts']}"
                         + (f"; median s {f['median_s']} vs {ff['median_s']}" if f.get("median_s") else ""))
    return lines


if __name__ == "__main__":
    main()
