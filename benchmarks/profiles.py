"""User profiles at scale: a full build, incremental updates, segments and one-profile lookups.

    python benchmarks/profiles.py                 # ~1M events, ~100k users (30 simulated days)
    python benchmarks/profiles.py --events 2e5    # smaller, for a quick look

The simulator's 1M-event log (REES46 CSV layout, seed 1, cached in benchmarks/out/ and shared with
the journeys benchmark) is ingested once into benchmarks/out/profiles/. Then, on a copy:

* build: ``build_profiles`` from scratch (every user's statistics, CLV fit, summaries, write);
* update, nothing new: ``update_profiles`` right after (only the derived columns are redone);
* update, new day: a further simulated day of 1% of the users (returning shoppers: the simulator
  numbers users from the same first id) is ingested, then ``update_profiles``;
* segments: ``segments(content=False)``, k by silhouette over 3..8;
* profile: 200 ``profile(store, user)`` lookups, mean time per lookup.

Each operation runs in a child process of its own, so its peak RSS (the child's VmHWM, Python and
imports included) is that operation's alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
WORK = OUT / "profiles"
SECRET = "benchmark-secret-0123456789"

CHILD = textwrap.dedent("""
    import json, sys, time
    OP, STORE = sys.argv[1], sys.argv[2]
    from journeymap.config import Settings
    from journeymap.profiles import build_profiles, update_profiles, segments, profile
    settings = Settings(secret=%r)
    def peak_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    t = time.perf_counter()
    if OP == "build":
        r = build_profiles(STORE, settings=settings)
        out = {"users": r.user_count, "recomputed": r.recomputed, "mode": r.mode}
    elif OP == "update":
        r = update_profiles(STORE, settings=settings)
        out = {"users": r.user_count, "recomputed": r.recomputed, "mode": r.mode}
    elif OP == "segments":
        r = segments(STORE, content=False)
        out = {"users": len(r.assignments), "k": r.k}
    else:
        import duckdb
        with duckdb.connect(STORE, read_only=True) as con:
            users = [u for (u,) in con.execute("SELECT user_id FROM profiles USING SAMPLE 200 ROWS (reservoir, 1)").fetchall()]
            if OP == "live":  # one user's profile from their events, as the service computes it between updates
                from journeymap.profiles._live import live_profile_row
                con.execute("SET TimeZone = 'UTC'")
                live_profile_row(con, users[0])
                t = time.perf_counter()
                for u in users:
                    live_profile_row(con, u)
                out = {"users": len(users), "per_lookup_ms": (time.perf_counter() - t) / len(users) * 1000}
                # The service's memory: a user's first live read holds their events; later reads
                # (after more events, which the writer hands over) read no events from the store.
                from journeymap.profiles._build import profiles_meta
                from journeymap.serve._live import LiveProfiles
                memory, meta = LiveProfiles(lambda: 0), profiles_meta(con)
                for u in users:
                    memory.row(con, u, meta, 0)
                t = time.perf_counter()
                for u in users:
                    memory.row(con, u, meta, 0)
                out["memory_ms"] = (time.perf_counter() - t) / len(users) * 1000
        if OP == "profile":
            t = time.perf_counter()
            for u in users:
                profile(STORE, u)
            out = {"users": len(users), "per_lookup_ms": (time.perf_counter() - t) / len(users) * 1000}
    out["seconds"] = time.perf_counter() - t
    out["peak_mib"] = peak_mib()
    print(json.dumps(out))
""") % SECRET


def child(op: str, store: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, op, str(store)], check=False, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise SystemExit(f"{op} failed: {errors[-1] if errors else proc.returncode}")
    return json.loads(lines[-1])


def prepare(events: int) -> Path:
    """The ingested store of a simulated log of about ``events`` events (cached)."""
    from journeymap.config import Settings
    from journeymap.events import ingest
    from journeymap.simulator import simulate, users_for_events

    WORK.mkdir(parents=True, exist_ok=True)
    csv = OUT / f"rees46-{events}.csv"
    if not csv.exists():
        t = time.perf_counter()
        r = simulate(users=users_for_events(events, days=30), days=30, seed=1, out=csv)
        print(f"simulated {r.events:,} events in {time.perf_counter() - t:.1f} s -> {csv}", file=sys.stderr)
    store = WORK / f"store-{events}.duckdb"
    if not store.exists():
        t = time.perf_counter()
        partial = store.with_name(store.name + ".partial")
        partial.unlink(missing_ok=True)
        ingest(csv, partial, settings=Settings(secret=SECRET))
        partial.replace(store)
        print(f"ingested in {time.perf_counter() - t:.1f} s -> {store}", file=sys.stderr)
    return store


def new_day(users: int) -> Path:
    """One more simulated day after the 30, of the first ``users`` users (returning shoppers)."""
    from journeymap.simulator import simulate

    path = WORK / f"day31-{users}.csv"
    if not path.exists():
        simulate(users=users, days=1, seed=2, out=path, start="2024-01-31")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=float, default=1e6)
    args = parser.parse_args()
    from journeymap.config import Settings
    from journeymap.events import ingest

    base = prepare(int(args.events))
    import duckdb

    with duckdb.connect(str(base), read_only=True) as con:
        n_events, n_users = con.execute("SELECT count(*), count(DISTINCT user_id) FROM events").fetchall()[0]
    run = WORK / "run.duckdb"
    shutil.copy(base, run)
    rows = []

    def record(label: str, op: str, events: int) -> dict:
        result = child(op, run)
        rows.append((label, events, result))
        print(f"{label}: {result}", file=sys.stderr)
        return result

    record("build (full)", "build", n_events)
    record("update, nothing new", "update", n_events)
    extra = new_day(max(1, n_users // 100))
    added = ingest(extra, run, settings=Settings(secret=SECRET)).stored
    record(f"update after {added:,} new events", "update", n_events + added)
    record("segments (no content vectors)", "segments", n_events + added)
    record("profile lookup", "profile", n_events + added)
    live = record("live profile of one user (from their events)", "live", n_events + added)
    rows.append(("live profile, events held in memory (the service's later reads)", n_events + added,
                 {**live, "per_lookup_ms": live["memory_ms"]}))

    print(f"Machine: {machine('duckdb')}")
    print()
    print("| operation | events | users | users recomputed | seconds | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, events, r in rows:
        seconds = f"{r['per_lookup_ms']:.1f} ms each" if "per_lookup_ms" in r else f"{r['seconds']:.2f}"
        recomputed = f"{r['recomputed']:,}" if "recomputed" in r else "-"
        users = f"{r['users']:,}" + (f" (k={r['k']})" if "k" in r else "")
        print(f"| {label} | {events:,} | {users} | {recomputed} | {seconds} | {r['peak_mib']:,.0f} |")


if __name__ == "__main__":
    main()
