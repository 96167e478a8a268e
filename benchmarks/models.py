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

RecBole's SASRec and GRU4Rec (rows ``recbole-sasrec``, ``recbole-gru4rec``) run once each, in their own
environment (``bash benchmarks/recbole_setup.sh`` makes benchmarks/out/venv-recbole; without it those
rows are skipped with a message), through benchmarks/recbole_runner.py on the same TRAIN.txt/TEST.tsv.
The runner returns each test case's rank computed as journeymap's ``label_ranks`` does (candidates:
the training items; ties to the more popular one), and the metrics and intervals come from the same
``ranking_metrics`` as ours. Their train seconds are RecBole's whole ``fit`` (epochs, validation,
checkpoints); epochs and seconds per epoch are printed under the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from journeymap.evaluation import (
    SessionSplit,
    diginetica_srgnn,
    evaluate,
    ranking_metrics,
    session_rec,
    write_srgnn,
)
from journeymap.models import (
    GRU4Rec,
    ItemKNN,
    Markov,
    Popularity,
    SASRec,
    SequenceModel,
    SessionKNN,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "models"
METRICS = ("P@20", "MRR@20", "HR@10", "NDCG@10")
RECBOLE_VENV = Path(__file__).resolve().parent / "out" / "venv-recbole"
RECBOLE_RUNNER = Path(__file__).resolve().parent / "recbole_runner.py"
TORCH_THREADS = 1  # torch threads for RecBole: the default of our SASRec and GRU4Rec (threads=1)


@dataclass
class Row:
    dataset: str
    model: str
    values: dict[str, float]  # percent
    ci: dict[str, tuple[float, float]]
    cases: int
    train_seconds: float
    eval_seconds: float
    note: str = ""  # printed under the table (epochs, seconds per epoch, ...)
    details: dict = field(default_factory=dict)


Runner = Callable[[SessionSplit, Path, int], "Row | None"]  # (split, TRAIN/TEST folder, resamples) -> row; None: skipped


def ours(factory: Callable[[], SequenceModel], repeat: int) -> Runner:
    """A journeymap model, evaluated in this process (best time of ``repeat`` runs)."""
    def run(split: SessionSplit, folder: Path, resamples: int) -> Row:
        results = [evaluate(factory(), split.train, split.test, metrics=METRICS, n_resamples=resamples)
                   for _ in range(repeat)]
        r = results[0]
        return Row(split.name, "", r.metrics.values, r.metrics.ci, r.test_cases,
                   min(x.train_seconds for x in results), min(x.eval_seconds for x in results))
    return run


def recbole(model: str, threads: int = TORCH_THREADS, budget: float | None = None) -> Runner:
    """RecBole 1.2.1's ``model`` (SASRec, GRU4Rec) in benchmarks/out/venv-recbole, on the written files.

    The runner prints JSON whose ``ranks`` (null: label unknown to training) go through our
    ``ranking_metrics``; its log is kept next to the split as recbole-<model>.log. ``budget``: seconds
    of training after which no new epoch starts (the best checkpoint so far is tested).
    """
    def run(split: SessionSplit, folder: Path, resamples: int) -> Row | None:
        python = RECBOLE_VENV / "bin" / "python"
        if not python.exists():
            print(f"skipping RecBole {model} on {split.name}: no RecBole environment at {RECBOLE_VENV} "
                  f"(make it with: bash benchmarks/recbole_setup.sh)", file=sys.stderr)
            return None
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        out = folder / f"recbole-{model.lower()}.json"
        log = folder / f"recbole-{model.lower()}.log"
        out.unlink(missing_ok=True)
        command = [str(python), str(RECBOLE_RUNNER), "--model", model, "--folder", str(folder),
                   "--threads", str(threads), "--json-out", str(out)]
        if budget is not None:
            command += ["--time-budget", str(budget)]
        with log.open("w") as stderr:
            done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, check=False)
        if done.returncode != 0 or not out.exists():
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise SystemExit(f"RecBole {model} on {split.name} failed (exit {done.returncode}): "
                             f"{' '.join(command)}\n{tail}\nfull log: {log}")
        result = json.loads(out.read_text())
        ranks = np.array([np.inf if r is None else float(r) for r in result["ranks"]])
        if len(ranks) != len(split.test):
            raise SystemExit(f"RecBole {model} scored {len(ranks)} cases of {split.name}, not {len(split.test)}")
        metrics = ranking_metrics(ranks, METRICS, n_resamples=resamples)
        own = result["recbole"]
        cpu = result.get("cpu_seconds_per_epoch")
        note = (f"{result['epochs']} epochs (best {result['best_epoch']}; stop: {result['stopped']}; validation "
                f"{result['config']['valid_metric']}), {result['seconds_per_epoch']:.2f} s per epoch"
                f"{f' ({cpu:.2f} s CPU)' if cpu is not None else ''} (training only; validation "
                f"{result['valid_seconds']:.1f} s in all), {result['train_cases']:,} training and "
                f"{result['valid_cases']:,} validation prefixes, {threads} torch thread(s); RecBole's own evaluator: "
                f"P@20 {own['hit@20']:.2f}, MRR@20 {own['mrr@20']:.2f}, HR@10 {own['hit@10']:.2f}, "
                f"NDCG@10 {own['ndcg@10']:.2f}")
        return Row(split.name, "", metrics.values, metrics.ci, len(ranks), result["train_seconds"],
                   result["eval_seconds"], note, result)
    return run


def runners(repeat: int, recbole_budget: float | None = None) -> dict[str, Runner]:
    """Every model in the table. Neural models and RecBole (run in its own environment on the
    TRAIN.txt / TEST.tsv written for each dataset) join here under their own names."""
    return {
        "pop": ours(Popularity, repeat),
        "markov": ours(Markov, repeat),
        "iknn": ours(ItemKNN, repeat),
        "sknn": ours(SessionKNN, repeat),
        "sknn (vec, div)": ours(lambda: SessionKNN(similarity="vec", score_decay="div"), repeat),
        "gru4rec": ours(lambda: GRU4Rec(verbose=False), repeat),
        "gru4rec (repeat)": ours(lambda: GRU4Rec(repeat=True, verbose=False), repeat),
        "sasrec": ours(lambda: SASRec(verbose=False), repeat),
        "sasrec (repeat)": ours(lambda: SASRec(repeat=True, verbose=False), repeat),
        "recbole-sasrec": recbole("SASRec", budget=recbole_budget),
        "recbole-gru4rec": recbole("GRU4Rec", budget=recbole_budget),
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
    parser.add_argument("--recbole-budget", type=float, help="Seconds of training per RecBole row after which no new "
                        "epoch starts (default: none; up to 50 epochs with early stopping).")
    args = parser.parse_args()
    table = runners(args.repeat, args.recbole_budget)
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
            if row is None:
                continue
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
    notes = [r for r in rows if r.note]
    if notes:
        print()
        for r in notes:
            print(f"- {r.dataset} {r.model}: {r.note}")


if __name__ == "__main__":
    main()
