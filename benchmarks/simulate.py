"""Benchmark of the storefront simulator: events per second and peak memory.

Run `python benchmarks/simulate.py` for about 1M events, add `--large` for about 10M as well.
Prints the machine, then a markdown table. Output files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from journeymap.simulator import simulate, users_for_events


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux; it is the process peak so far, so sizes run smallest first.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", action="store_true", help="also run about 10M events")
    parser.add_argument("--format", default="rees46", choices=["rees46", "parquet"])
    args = parser.parse_args()

    sizes = [1_000_000] + ([10_000_000] if args.large else [])
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()} ({sys.platform})")
    print()
    print("| target events | users | days | format | events | sessions | seconds | events/s | peak RSS (MB) "
          "| file (MB) |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for target in sizes:
            users = users_for_events(target)
            out = Path(tmp) / f"shop_{target}.{'csv' if args.format == 'rees46' else 'parquet'}"
            t0 = time.perf_counter()
            result = simulate(users=users, days=30, seed=1, out=out, format=args.format)
            seconds = time.perf_counter() - t0
            print(
                f"| {target:,} | {users:,} | 30 | {args.format} | {result.events:,} | {result.sessions:,} "
                f"| {seconds:.1f} | {result.events / seconds:,.0f} | {peak_rss_mb():,.0f} "
                f"| {out.stat().st_size / 2**20:,.0f} |",
                flush=True,
            )
            out.unlink()


if __name__ == "__main__":
    main()
