"""Ingest speed and peak memory against the floor: a plain DuckDB ``read_csv`` insert of the same file.

    python benchmarks/ingest.py                 # 1M events
    python benchmarks/ingest.py --events 1e6 1e7

For each size it simulates a shop log in REES46 CSV layout (cached in benchmarks/out/), then in
separate processes (so peak RSS is each one's own) runs the floor and `journeymap ingest` into
fresh store files, and prints a markdown table with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path

OUT = Path(__file__).resolve().parent / "out"

FLOOR = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[2])
    con.execute("CREATE TABLE events AS SELECT * FROM read_csv(?)", [sys.argv[1]])
    print(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
""")

JOURNEYMAP = textwrap.dedent("""
    import sys
    from journeymap.config import Settings
    from journeymap.events import ingest
    r = ingest(sys.argv[1], sys.argv[2], settings=Settings(secret="benchmark-secret-0123456789"))
    assert r.read == r.stored + r.quarantined + r.duplicates
    print(r.stored)
""")


def run(script: str, *args: str) -> tuple[float, float, str]:
    """Seconds, peak RSS in MiB and stdout of a child process."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    output = proc.stdout.read().strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {script[:60]}...")
    return seconds, usage.ru_maxrss / 1024, output


def log_for(events: int) -> Path:
    from journeymap.simulator import simulate, users_for_events

    path = OUT / f"rees46-{events}.csv"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = simulate(users=users_for_events(events, days=30), days=30, seed=1, out=path)
        print(f"simulated {result.events:,} events in {time.perf_counter() - started:.1f} s -> {path}",
              file=sys.stderr)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", nargs="+", type=float, default=[1e6])
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; the best is kept")
    args = parser.parse_args()
    rows = []
    for target in args.events:
        path = log_for(int(target))
        size = path.stat().st_size / 2**20
        results = {}
        for name, script in (("duckdb read_csv insert (floor)", FLOOR), ("journeymap ingest", JOURNEYMAP)):
            best = None
            for _ in range(args.repeat):
                store = OUT / "bench.duckdb"
                for p in (store, store.with_name(store.name + ".wal")):
                    p.unlink(missing_ok=True)
                seconds, rss, output = run(script, str(path), str(store))
                if best is None or seconds < best[0]:
                    best = (seconds, rss, int(output.splitlines()[-1]))
            results[name] = best
        floor = results["duckdb read_csv insert (floor)"][0]
        for name, (seconds, rss, stored) in results.items():
            rows.append((f"{stored:,}", f"{size:,.0f}", name, f"{seconds:.2f}", f"{stored / seconds:,.0f}",
                         f"{rss:,.0f}", f"{seconds / floor:.2f}x"))
    print(f"machine: {machine('duckdb', 'pyarrow')}\n")
    print("| events stored | CSV MiB | tool | seconds | rows/s | peak RSS MiB | time vs floor |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
