"""When pre-training helps: task heads fine-tuned on 1-100% of the labelled users, with and without
the pre-trained encoder, on a simulated shop whose planted effects are known.

    .venv/bin/python benchmarks/pretraining.py                 # 20k users, 28 days, text ablation too
    .venv/bin/python benchmarks/pretraining.py --users 5000 --fractions 0.05 1 --sections fractions

Users are split once: 20% are test users, never seen in pre-training or fine-tuning. The encoder
is pre-trained (self-supervised, no labels) on every event of the other 80%; then, for each
fraction, that share of them is "labelled" and the heads are fine-tuned on it (10% of it held out
for early stopping and calibration), starting from the pre-trained encoder or from random
weights ("scratch", same vocabulary, same budget: up to 100 epochs, stopping 4 epochs after the
best validation loss). Small fractions are repeated with other labelled users and seeds
(mean +- sd). Every figure is measured on the test users:

* purchase AUC: at every cut earlier than a session's first purchase, does the session buy?
* churn AUC: at each session end at least 7 days before the store's end, no return within 7 days?
* next action accuracy: the next event's type, or leave (the session ends);
* next item P@20: the next item anywhere later in the stream, ranked over all items (SR-GNN's P@20).

Then a from-scratch model with the next-item head alone (what next item reaches when only its own
validation loss stops training), the calibration of the 100% pre-trained model (log-loss and ECE
before and after, on the test users), the planted effects as the model sees them, and the item text
vectors ablation: 10% of the items are removed from all training events ("new" items), and the
model is trained with and without text vectors; P@20 is reported by how often the true next item
occurred in training.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path

OUT = Path(__file__).resolve().parent / "out" / "pretraining"
SECRET = "benchmark-secret-0123456789abcdef"
SECTIONS = ("fractions", "single-task", "calibration", "effects", "text")


def simulated_store(users: int, days: int, seed: int) -> Path:
    from journeymap.config import Settings
    from journeymap.events import ingest
    from journeymap.simulator import simulate

    folder = OUT / f"shop-{users}u-{days}d-s{seed}"
    store = folder / "shop.duckdb"
    if not store.exists():
        result = simulate(users=users, days=days, seed=seed, out=folder / "shop.csv")
        ingest(result.path, store, settings=Settings(secret=SECRET))
    return store


def metrics(model, log) -> dict[str, float]:
    m = model.score_log(log).metrics()
    return {"purchase_auc": m["purchase"]["auc"], "churn_auc": m.get("churn", {}).get("auc", float("nan")),
            "action_acc": m["next_action"]["accuracy"] * 100, "p20": m["next_item"]["P@20"]}


def fmt(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=7, help="the simulation's seed")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.25, 1.0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each fraction under 25%% (other users, seeds)")
    parser.add_argument("--epochs", type=int, default=30, help="pre-training epochs (early stopping on held-out users)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
                        help="what to run (default: all); calibration and effects use the 100%% pre-trained model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from journeymap.config import Settings
    from journeymap.models import BehaviourModel, read_event_log
    from journeymap.models._events import split_users

    torch.set_num_threads(args.threads)
    params = {"epochs": args.epochs, "finetune_epochs": 100, "patience": 4, "threads": args.threads, "verbose": False}
    store = simulated_store(args.users, args.days, args.seed)
    log = read_event_log(store, settings=Settings(secret=SECRET))
    test, pool = split_users(len(log), [0.2], 0)
    pool_log, test_log = log.take(pool), log.take(test)
    print(f"Machine: {machine('numpy', 'torch', load=True)}, torch on {torch.get_num_threads()} thread(s) "
          f"({time.strftime('%Y-%m-%d')})")
    print(f"Store: {args.users:,} simulated users over {args.days} days (seed {args.seed}): {log.events:,} events, "
          f"{len(np.unique(log.sessions)):,} sessions; {len(test):,} test users, {len(pool):,} users for training.")

    if "single-task" in args.sections:
        single_task(pool_log, test_log, params)
    if not {"fractions", "calibration", "effects"} & set(args.sections):
        if "text" in args.sections:
            text_ablation(store, pool_log, test_log, params)
        return
    started = time.perf_counter()
    base = BehaviourModel(**params).pretrain(pool_log)
    history = base.history_["pretrain"]
    print(f"Pre-training on all {len(pool):,} training users' {pool_log.events:,} events: {history['epochs']} epochs "
          f"(best {history['best_epoch']}), {time.perf_counter() - started:.0f} s, "
          f"validation loss {min(v for v in history['validation'] if v is not None):.3f}.")
    print()

    rows = []
    full = {}
    fractions = args.fractions if "fractions" in args.sections else [1.0]
    for fraction in fractions:
        repeats = args.repeats if fraction < 0.25 else 1
        for variant in ("pre-trained", "scratch") if "fractions" in args.sections else ("pre-trained",):
            runs, seconds = [], []
            for r in range(repeats):
                order = np.random.default_rng(100 + r).permutation(len(pool))
                labelled = np.sort(order[:max(2, int(round(fraction * len(pool))))])
                started = time.perf_counter()
                if variant == "pre-trained":
                    model = base.copy().set_params(seed=r).finetune(pool_log, labelled)
                else:
                    model = BehaviourModel(**params, seed=r).finetune(pool_log, labelled)
                seconds.append(time.perf_counter() - started)
                runs.append(metrics(model, test_log))
                if fraction == 1.0 and r == 0:
                    full[variant] = model
            rows.append((fraction, len(labelled), variant, runs, seconds, repeats))
            print(f"  {fraction:.0%} {variant}: " + ", ".join(f"{k} {np.mean([x[k] for x in runs]):.3f}" for k in runs[0]),
                  flush=True)
    if "fractions" in args.sections:
        fractions_table(rows)
    model = full.get("pre-trained")
    if model is not None and "calibration" in args.sections:
        calibration_table(model, test_log)
    if model is not None and "effects" in args.sections:
        planted_effects(model, test_log)
    if "text" in args.sections:
        text_ablation(store, pool_log, test_log, params)


def fractions_table(rows) -> None:
    print()
    print("| labelled users | encoder | runs | purchase AUC | churn AUC | next action acc % | next item P@20 % | fine-tune s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for fraction, n, variant, runs, seconds, repeats in rows:
        print(f"| {fraction:.0%} ({n:,}) | {variant} | {repeats} | {fmt([x['purchase_auc'] for x in runs], 3)} | "
              f"{fmt([x['churn_auc'] for x in runs], 3)} | {fmt([x['action_acc'] for x in runs], 1)} | "
              f"{fmt([x['p20'] for x in runs], 1)} | {np.mean(seconds):.0f} |")


def single_task(pool_log, test_log, params) -> None:
    """From scratch with the next-item head alone: how far next item gets when no other head's
    validation loss stops the training (the four-head run stops when their sum stops improving)."""
    from journeymap.models import BehaviourModel

    started = time.perf_counter()
    model = BehaviourModel(**{**params, "epochs": 0}, tasks="next_item").finetune(pool_log)
    history = model.history_["finetune"]
    p20 = model.score_log(test_log).metrics()["next_item"]["P@20"]
    print(f"From scratch, 100% labelled, next-item head alone: P@20 {p20:.1f}% after {history['epochs']} epochs "
          f"(best {history['best_epoch']}), {time.perf_counter() - started:.0f} s.")


def calibration_table(model, test_log) -> None:
    from journeymap.evaluation import calibration, log_loss

    raw, calibrated = model.score_log(test_log, calibrated=False), model.score_log(test_log)
    print()
    print("Calibration of the 100% pre-trained model on the test users (fitted on the validation users):")
    print()
    print("| head | method | cases | base rate | log-loss raw | log-loss calibrated | ECE raw | ECE calibrated |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for task in ("purchase", "churn"):
        y = getattr(raw, f"{task}_label")
        p0, p1 = getattr(raw, task), getattr(calibrated, task)
        method = model.calibration_.get(task, {}).get("method", "none")
        print(f"| {task} | {method} | {len(y):,} | {y.mean():.3f} | {log_loss(y, p0):.4f} | {log_loss(y, p1):.4f} | "
              f"{calibration(y, p0).ece:.4f} | {calibration(y, p1).ece:.4f} |")
    y = raw.next_action_label
    pick = np.arange(len(y))
    losses = [float(-np.log(np.clip(s.next_action[pick, y], 1e-15, None)).mean()) for s in (raw, calibrated)]
    t = 1.0 / model.calibration_.get("next_action", {}).get("a", 1.0)
    print(f"| next action | temperature {t:.2f} | {len(y):,} | - | {losses[0]:.4f} | {losses[1]:.4f} | - | - |")


def planted_effects(model, test_log) -> None:
    scored = model.score_log(test_log)
    rows = scored.purchase_rows
    kinds, devices, channels = test_log.event_types[rows], test_log.devices[rows], test_log.channels[rows]
    print()
    print("Planted effects as the model sees them (test users; predicted = mean purchase propensity, observed = "
          "share of those cuts whose session buys):")
    print()
    print("| cut | group | cuts | predicted | observed | simulator's truth |")
    print("|---|---|---:|---:|---:|---|")
    truth = {"desktop": "P(complete) 0.70", "mobile": "P(complete) 0.35", "tablet": "P(complete) 0.70"}
    for device in ("desktop", "mobile", "tablet"):
        where = (kinds == "begin_checkout") & (devices == device)
        print(f"| at begin_checkout | {device} | {where.sum():,} | {scored.purchase[where].mean():.3f} | "
              f"{scored.purchase_label[where].mean():.3f} | {truth[device]} |")
    _, new_session = test_log.boundaries()
    opening = new_session[rows]
    for channel in ("direct", "organic_search", "paid_search", "social", "email"):
        where = opening & (channels == channel)
        note = "x2.5 cart and checkout propensity" if channel == "email" else ""
        print(f"| first event of a session | {channel} | {where.sum():,} | {scored.purchase[where].mean():.4f} | "
              f"{scored.purchase_label[where].mean():.4f} | {note} |")


def text_ablation(store, pool_log, test_log, params) -> None:
    from journeymap.items import load_item_vectors
    from journeymap.models import BehaviourModel

    vectors = load_item_vectors(store)
    items = np.array(sorted({i for i in pool_log.items.tolist() if i is not None}), dtype=object)
    new = set(np.random.default_rng(0).choice(items, size=len(items) // 10, replace=False).tolist())
    train_log = pool_log.keep(np.array([i not in new for i in pool_log.items.tolist()], dtype=bool))
    counts: dict = {}
    for i in train_log.items.tolist():
        if i is not None:
            counts[i] = counts.get(i, 0) + 1
    buckets = (("new (0 events)", 0, 0), ("rare (1-19)", 1, 19), ("20-99", 20, 99), ("100+", 100, 10**12))
    print()
    print(f"Item text vectors ({vectors.encoder}, {vectors.matrix.shape[1]}-d, projected): {len(new)} of {len(items)} "
          f"items removed from every training event (new items); pre-trained and fine-tuned on 100% of the "
          f"training users, evaluated on the test users (who still see the new items).")
    print()
    print("| next item's training events | cases | P@20 without text | P@20 with text | MRR@20 without | MRR@20 with |")
    print("|---|---:|---:|---:|---:|---:|")
    results = {}
    for text in (False, True):
        started = time.perf_counter()
        model = BehaviourModel(**params, text_vectors=text).fit_log(train_log, vectors if text else None)
        scored = model.score_log(test_log)
        results[text] = (scored, model.score_log(test_log).metrics(), time.perf_counter() - started)
    ids = results[False][0].next_item_ids
    seen = np.array([counts.get(i, 0) for i in ids.tolist()])
    from journeymap.evaluation import per_case

    for name, low, high in (*buckets, ("all", 0, 10**12)):
        where = (seen >= low) & (seen <= high)
        cells = []
        for metric in ("P@20", "MRR@20"):
            for text in (False, True):
                cells.append(f"{per_case(results[text][0].next_item_ranks[where], metric).mean() * 100:.1f}")
        print(f"| {name} | {where.sum():,} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    for text in (False, True):
        m = results[text][1]
        print(f"- {'with' if text else 'without'} text: purchase AUC {m['purchase']['auc']:.3f}, churn AUC "
              f"{m['churn']['auc']:.3f}, next action accuracy {m['next_action']['accuracy'] * 100:.1f}%, "
              f"trained in {results[text][2]:.0f} s")


if __name__ == "__main__":
    main()
