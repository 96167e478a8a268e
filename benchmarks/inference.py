"""Latency of one prediction for one user, from the saved model: float32, int8 and bf16, with accuracy.

    .venv/bin/python benchmarks/inference.py             # trains once (cached in benchmarks/out/inference/)
    .venv/bin/python benchmarks/inference.py --quick     # 3-epoch models, 500 cases: a few minutes
    .venv/bin/python benchmarks/inference.py --retrain   # train again even if a saved model is there

YooChoose 100k, benchmarks/models.py's split (its ``DATASETS``): sasrec and gru4rec (their defaults)
and sknn are trained on the training sessions, saved to benchmarks/out/inference/ and loaded back;
every figure is of the loaded model. Each of ``--cases`` test cases (a seeded sample of the split's
10,152) is one call of ``predict_next([prefix], k=20)``: batch size 1, the top 20 over the whole
catalogue, item ids in and out, timed with ``perf_counter`` after ``--warmup`` untimed calls. The
variants take turns case by case (the order rotating), so other work on a shared machine falls on
all of them alike. The same calls give P@20 and MRR@20 (the label's place in that top 20), so a
faster variant shows what it costs, and "same top-20" is the share of the float32 model's top 20
the variant returns too.

Variants: float32 as loaded; int8: ``journeymap.models.quantize`` (Linear layers and GRU cells,
dynamic quantization); bf16: the float model under ``torch.autocast("cpu", dtype=torch.bfloat16)``,
run only where torch reports native bf16 on this CPU. sknn has no network: float only. Load: the
median of 5 ``SequenceModel.load`` of the file; first call: the first prediction after loading
(the neural models rebuild their network from the stored weights then).

Behaviour model: ``predict_user(one user's events, k=20)`` for test users of a simulated shop
(benchmarks/pretraining.py's cached store; 20% of the users held out), each variant, with the
next-item P@20 and purchase AUC over every labelled position of the test users (``score_log``).
torch runs on one thread, the models' default.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path
from models import DATA, DATASETS  # benchmarks/models.py: the same YooChoose split

from journeymap.evaluation import TestCases, ranking_metrics
from journeymap.exceptions import JourneymapError
from journeymap.models import GRU4Rec, SASRec, SequenceModel, SessionKNN, quantize

OUT = Path(__file__).resolve().parent / "out" / "inference"
K = 20
METRICS = ("P@20", "MRR@20")
Context = Callable[[], contextlib.AbstractContextManager]


@dataclass
class Row:
    model: str
    variant: str
    ms: np.ndarray  # one prediction's wall time, per case
    metrics: dict[str, float]  # percent
    same_top: float  # mean share of the float32 top 20 this variant returns too (1.0 for float32)


def bf16_supported() -> bool:
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def variants(model: SequenceModel, bf16: bool) -> list[tuple[str, SequenceModel, Context, float | None]]:
    """(name, model, context of each call, seconds to make it) of every variant this model has."""
    import torch

    out: list[tuple[str, SequenceModel, Context, float | None]] = [("float32", model, contextlib.nullcontext, None)]
    try:
        started = time.perf_counter()
        quantized = quantize(model)
        out.append(("int8 dynamic", quantized, contextlib.nullcontext, time.perf_counter() - started))
    except JourneymapError:  # no network (sknn)
        return out
    if bf16:
        out.append(("bf16 autocast", model, lambda: torch.autocast("cpu", dtype=torch.bfloat16), None))
    return out


def percentile(ms: np.ndarray, q: float) -> float:
    return float(np.percentile(ms, q))


# -- YooChoose: predict_next for one prefix -------------------------------------------------------
def trained(name: str, factory: Callable[[], SequenceModel], train: list, path: Path, retrain: bool) -> Path:
    if retrain or not path.exists():
        started = time.perf_counter()
        factory().fit(train).save(path)
        print(f"{name}: trained in {time.perf_counter() - started:.1f} s, saved to {path}", file=sys.stderr)
    return path


def load(path: Path, repeat: int = 5) -> tuple[SequenceModel, float]:
    """The model in the file and the median seconds of loading it."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        model = SequenceModel.load(path)
        times.append(time.perf_counter() - started)
    return model, float(np.median(times))


def interleaved(variants: list, inputs: list, call: Callable, warmup: int) -> tuple[np.ndarray, list[list]]:
    """Every input through every variant in turn, the order rotating, so that other work on the
    machine falls on all variants alike: milliseconds (n_variants, n_inputs) and the results."""
    for _, scorer, context, _ in variants:
        for x in inputs[:warmup]:
            with context():
                call(scorer, x)
    ms = np.empty((len(variants), len(inputs)))
    results: list[list] = [[None] * len(inputs) for _ in variants]
    for i, x in enumerate(inputs):
        for j in ((i + shift) % len(variants) for shift in range(len(variants))):
            _, scorer, context, _ = variants[j]
            started = time.perf_counter()
            with context():
                results[j][i] = call(scorer, x)
            ms[j, i] = (time.perf_counter() - started) * 1000
    return ms, results


def top_items(model: SequenceModel, prefix: list) -> list:
    """One prediction for one shopper: the top 20 next items after ``prefix`` (batch size 1)."""
    return model.predict_next([prefix], K)[0][0].tolist()


def top_ranks(tops: list, labels: list) -> np.ndarray:
    """The label's 1-based place in each top-20 list, inf where it is not in it (P@20, MRR@20 need no more)."""
    return np.array([top.index(label) + 1 if label in top else np.inf for top, label in zip(tops, labels)])


def same_top(tops: list, reference: list) -> float:
    return float(np.mean([len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(tops, reference)]))


def yoochoose(args: argparse.Namespace, bf16: bool) -> None:
    split = DATASETS["yoochoose-100k"]()
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(split.test), size=min(args.cases, len(split.test)), replace=False))
    cases = TestCases([split.test.prefixes[i] for i in pick], [split.test.labels[i] for i in pick])
    short = {"epochs": 3, "validation": 0.0} if args.quick else {}
    factories = {"sasrec": lambda: SASRec(verbose=False, **short), "gru4rec": lambda: GRU4Rec(verbose=False, **short),
                 "sknn": SessionKNN}
    s = split.stats()
    print(f"- yoochoose-100k: {s['train_sessions']:,} training sessions, {s['items']:,} items; {len(cases):,} of its "
          f"{len(split.test):,} test cases (seed 0), {args.warmup} warm-up calls per variant; models "
          f"{'trained 3 epochs (--quick)' if args.quick else 'at their defaults'}")
    rows, notes = [], {}
    for name, factory in factories.items():
        path = trained(name, factory, split.train, OUT / f"yoochoose-100k-{name}{'-quick' if args.quick else ''}.npz",
                       args.retrain)
        model, load_s = load(path)
        started = time.perf_counter()
        model.predict_next([cases.prefixes[0]], K)
        first_ms = (time.perf_counter() - started) * 1000
        file_mb = path.stat().st_size / 2**20
        notes[name] = [f"{file_mb:.1f} MB file", f"load {load_s * 1000:.0f} ms (median of 5)",
                       f"first prediction after load {first_ms:.0f} ms"]
        chosen = variants(model, bf16)
        ms, tops = interleaved(chosen, cases.prefixes, top_items, args.warmup)
        for j, (variant, _, _, made) in enumerate(chosen):
            values = ranking_metrics(top_ranks(tops[j], cases.labels), METRICS, n_resamples=0).values
            rows.append(Row(name, variant, ms[j], values, same_top(tops[j], tops[0])))
            if made is not None:
                notes[name].append(f"quantize() {made * 1000:.0f} ms")
            print(f"{name} {variant}: p50 {percentile(ms[j], 50):.2f} ms p99 {percentile(ms[j], 99):.2f} ms "
                  f"P@20 {values['P@20']:.2f}", file=sys.stderr)
    print()
    print("| model | variant | p50 ms | p99 ms | mean ms | P@20 | MRR@20 | same top-20 as float32 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.model} | {r.variant} | {percentile(r.ms, 50):.2f} | {percentile(r.ms, 99):.2f} | {r.ms.mean():.2f} "
              f"| {r.metrics['P@20']:.2f} | {r.metrics['MRR@20']:.2f} | {r.same_top * 100:.1f}% |")
    print()
    for name, parts in notes.items():
        print(f"- {name}: {'; '.join(parts)}")


# -- the behaviour model: predict_user for one user --------------------------------------------------
def behaviour(args: argparse.Namespace, bf16: bool) -> None:
    from pretraining import SECRET, simulated_store

    from journeymap.config import Settings
    from journeymap.models import BehaviourModel, read_event_log
    from journeymap.models._events import split_users

    store = simulated_store(args.behaviour_users, args.behaviour_days, 7)
    log = read_event_log(store, settings=Settings(secret=SECRET))
    test, pool = split_users(len(log), [0.2], 0)
    test_log = log.take(test)
    params = {"epochs": 3, "finetune_epochs": 3} if args.quick else {}
    path = OUT / f"behaviour-{args.behaviour_users}u-{args.behaviour_days}d{'-quick' if args.quick else ''}.npz"
    if args.retrain or not path.exists():
        started = time.perf_counter()
        BehaviourModel(verbose=False, **params).fit_log(log.take(pool)).save(path)
        print(f"behaviour: trained in {time.perf_counter() - started:.1f} s, saved to {path}", file=sys.stderr)
    model, load_s = load(path)
    users = [test_log.take([i]) for i in range(min(args.behaviour_cases, len(test)))]
    print()
    print(f"- behaviour: simulated shop of {args.behaviour_users:,} users over {args.behaviour_days} days (seed 7, "
          f"{log.events:,} events, {len(model.vocab_):,} items); trained on {len(pool):,} users "
          f"{'(3 + 3 epochs, --quick)' if args.quick else '(defaults)'}; predict_user for {len(users):,} of the "
          f"{len(test):,} test users (their whole streams, k=20), {args.warmup} warm-up calls per variant; "
          f"{path.stat().st_size / 2**20:.1f} MB file, load {load_s * 1000:.0f} ms (median of 5)")
    print()
    print("| model | variant | p50 ms | p99 ms | mean ms | next-item P@20 | purchase AUC | same top-20 as float32 "
          "| largest purchase propensity change |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    chosen = variants(model, bf16)
    ms, answers = interleaved(chosen, users, lambda scorer, user: scorer.predict_user(user, k=K), args.warmup)
    tops = [[[x["item"] for x in a["next_items"]] for a in answers[j]] for j in range(len(chosen))]
    propensity = np.array([[a["purchase_propensity"] for a in answers[j]] for j in range(len(chosen))])
    for j, (variant, scorer, context, _) in enumerate(chosen):
        with context():
            m = scorer.score_log(test_log).metrics()
        change = float(np.abs(propensity[j] - propensity[0]).max())
        print(f"| behaviour | {variant} | {percentile(ms[j], 50):.2f} | {percentile(ms[j], 99):.2f} | {ms[j].mean():.2f} "
              f"| {m['next_item']['P@20']:.2f} | {m['purchase']['auc']:.3f} | {same_top(tops[j], tops[0]) * 100:.1f}% "
              f"| {change:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3-epoch models and 500 cases (a few minutes)")
    parser.add_argument("--cases", type=int, help="YooChoose test cases to time (default 2000; 500 with --quick)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before each variant's timed ones")
    parser.add_argument("--retrain", action="store_true", help="train again even if a saved model is there")
    parser.add_argument("--behaviour-users", type=int, default=3000, help="users of the simulated shop")
    parser.add_argument("--behaviour-days", type=int, default=14)
    parser.add_argument("--behaviour-cases", type=int, help="test users to time (default 500; 200 with --quick)")
    parser.add_argument("--skip-behaviour", action="store_true")
    args = parser.parse_args()
    args.cases = args.cases or (500 if args.quick else 2000)
    args.behaviour_cases = args.behaviour_cases or (200 if args.quick else 500)

    import torch

    torch.set_num_threads(1)
    bf16 = bf16_supported()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine('numpy', 'torch', load=True)}; torch on 1 thread, native bf16 "
          f"{'yes' if bf16 else 'no (bf16 rows skipped)'} ({time.strftime('%Y-%m-%d')})")
    print()
    if DATA.exists():
        yoochoose(args, bf16)
    else:
        print(f"skipping YooChoose: the public samples are not at {DATA} (see ../shared/data/README.md)")
    if not args.skip_behaviour:
        behaviour(args, bf16)
    print()
    print(f"Load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
