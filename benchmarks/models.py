"""Next-item accuracy and speed of the models on the public samples, same split for all, full ranking.

    python benchmarks/models.py                              # every model on both samples
    python benchmarks/models.py --models pop sknn --datasets diginetica-sample

Datasets (from ../shared/data; see journeymap.evaluation._datasets for how each split is made):
  yoochoose-100k      session-rec's time split of the RecSys'15 "100k" sample, as shipped
  diginetica-sample   SR-GNN's preprocessing of its Diginetica sample (7 test days, items >= 5)
Each split is also written to benchmarks/out/models/<dataset>/TRAIN.txt and TEST.tsv (the SR-GNN
protocol's files), so tools outside this environment (RecBole, a reference GRU4Rec) can be run on
exactly the same cases and added to RUNNERS.

Every model ranks all items seen in training for every test case; P@20 is SR-GNN's (hit rate).
Train and evaluation seconds are wall time of ``fit`` and of scoring every case (best of --repeat).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from journeymap.evaluation import (
    SessionSplit,
    diginetica_srgnn,
    evaluate,
    session_rec,
    write_srgnn,
)
from journeymap.models import ItemKNN, Markov, Popularity, SequenceModel, SessionKNN

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "models"
METRICS = ("P@20", "MRR@20", "HR@10", "NDCG@10")


@dataclass
class Row:
    dataset: str
    model: str
    values: dict[str, float]  # percent
    ci: dict[str, tuple[float, float]]
    cases: int
    train_seconds: float
    eval_seconds: float


Runner = Callable[[SessionSplit, Path, int], Row]  # (split, its TRAIN/TEST folder, bootstrap resamples) -> row


def ours(factory: Callable[[], SequenceModel], repeat: int) -> Runner:
    """A journeymap model, evaluated in this process (best time of ``repeat`` runs)."""
    def run(split: SessionSplit, folder: Path, resamples: int) -> Row:
        results = [evaluate(factory(), split.train, split.test, metrics=METRICS, n_resamples=resamples)
                   for _ in range(repeat)]
        r = results[0]
        return Row(split.name, "", r.metrics.values, r.metrics.ci, r.test_cases,
                   min(x.train_seconds for x in results), min(x.eval_seconds for x in results))
    return run


def runners(repeat: int) -> dict[str, Runner]:
    """Every model in the table. Neural models and RecBole (run in its own environment on the
    TRAIN.txt / TEST.tsv written for each dataset) join here under their own names."""
    return {
        "pop": ours(Popularity, repeat),
        "markov": ours(Markov, repeat),
        "iknn": ours(ItemKNN, repeat),
        "sknn": ours(SessionKNN, repeat),
        "sknn (vec, div)": ours(lambda: SessionKNN(similarity="vec", score_decay="div"), repeat),
    }


DATASETS: dict[str, Callable[[], SessionSplit]] = {
    "yoochoose-100k": lambda: session_rec(
        DATA / "yoochoose-rsc15-sessionrec-sample" / "yoochoose-clicks-100k_train_full.txt",
        DATA / "yoochoose-rsc15-sessionrec-sample" / "yoochoose-clicks-100k_test.txt"),
    "diginetica-sample": lambda: diginetica_srgnn(
        DATA / "diginetica-srgnn-sample" / "sample_train-item-views.csv"),
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import scipy

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="Rows to run (default: all).")
    parser.add_argument("--datasets", nargs="*", choices=sorted(DATASETS), help="Datasets (default: both).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per model; the best time is reported.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the P@20 interval.")
    args = parser.parse_args()
    table = runners(args.repeat)
    chosen = args.models or list(table)
    unknown = [m for m in chosen if m not in table]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {', '.join(table)}")
    rows: list[Row] = []
    splits = []
    for name in args.datasets or list(DATASETS):
        if not DATA.exists():
            raise SystemExit(f"the public samples are not at {DATA} (see ../shared/data/README.md)")
        split = DATASETS[name]()
        split.name = name
        folder = OUT / name
        write_srgnn(folder, split.train, split.test)
        splits.append((split, folder))
        for model in chosen:
            row = table[model](split, folder, args.bootstrap)
            row.model = model
            rows.append(row)
            print(f"{name} {model}: P@20 {row.values['P@20']:.2f} MRR@20 {row.values['MRR@20']:.2f} "
                  f"train {row.train_seconds:.3f}s eval {row.eval_seconds:.3f}s", file=sys.stderr)

    print(f"Machine: {machine()} ({time.strftime('%Y-%m-%d')})")
    print()
    for split, folder in splits:
        s = split.stats()
        print(f"- {split.name}: {s['train_sessions']:,} training sessions ({s['train_clicks']:,} clicks, "
              f"{s['items']:,} items), {s['test_cases']:,} test cases from {s['test_sessions']:,} sessions; "
              f"files in {folder.relative_to(OUT.parents[1])}/")
    print()
    print("| dataset | model | P@20 (95% CI) | MRR@20 | HR@10 | NDCG@10 | train s | eval s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        low, high = r.ci["P@20"]
        print(f"| {r.dataset} | {r.model} | {r.values['P@20']:.2f} ({low:.1f}-{high:.1f}) | {r.values['MRR@20']:.2f} "
              f"| {r.values['HR@10']:.2f} | {r.values['NDCG@10']:.2f} | {r.train_seconds:.3f} | {r.eval_seconds:.3f} |")


if __name__ == "__main__":
    main()
