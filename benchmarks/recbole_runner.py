"""RecBole 1.2.1's SASRec or GRU4Rec on one SR-GNN-protocol split (TRAIN.txt / TEST.tsv), full ranking.

Runs inside the benchmark-only environment made by ``benchmarks/recbole_setup.sh`` (never imports
journeymap); ``benchmarks/models.py`` calls it as a subprocess and reads the JSON it prints last.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 benchmarks/out/venv-recbole/bin/python benchmarks/recbole_runner.py \\
        --model SASRec --folder benchmarks/out/models/diginetica-sample --json-out /tmp/sasrec.json

What it does, so that RecBole trains and tests on exactly the cases our models see:

* Training examples: every prefix of every TRAIN.txt session (SR-GNN's augmentation), written as
  RecBole's pre-split benchmark files (``benchmark_filename: [train, valid, test]``, columns
  ``session_id:token``, ``item_id_list:token_seq``, ``item_id:token``; ``alias_of_item_id:
  [item_id_list]`` puts both in one id space). Prefixes keep their last MAX_ITEM_LIST_LENGTH (50)
  items, as RecBole's own augmentation does.
* Validation (early stopping only): every prefix of the newest ``--valid-fraction`` of the TRAIN.txt
  sessions (the file lists them oldest first); those sessions are then not trained on. Never test.
* Test: every TEST.tsv line, in file order, none dropped.
* Scores: after training, the best checkpoint's ``full_sort_predict`` scores every item for every
  test case. The ranks returned (``ranks``) are computed the way journeymap's ``label_ranks`` does:
  among the items of TRAIN.txt only, ties to the item more frequent in TRAIN.txt, a label absent
  from TRAIN.txt a miss (rank null). ``recbole`` holds RecBole's own evaluator's numbers for the
  same model and cases (its candidates: every item in any of the three files; ties as torch.topk
  leaves them), so the two can be compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's checkpoints are full pickles

MAX_LEN = 50
HEADER = "session_id:token\titem_id_list:token_seq\titem_id:token\n"


def read_train(path: Path) -> list[list[str]]:
    sessions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        items = line.split()
        if not items or "\t" in line:
            raise SystemExit(f"{path} line {number}: expected item ids separated by spaces")
        sessions.append(items)
    return sessions


def read_test(path: Path) -> list[tuple[list[str], str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "prefix\tlabel":
        raise SystemExit(f"{path} line 1: expected the header 'prefix<TAB>label'")
    cases = []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].split() or not parts[1].strip():
            raise SystemExit(f"{path} line {number}: expected 'prefix<TAB>label'")
        cases.append((parts[0].split(), parts[1].strip()))
    return cases


def prefixes(sessions: list[list[str]]) -> list[tuple[list[str], str]]:
    """Every prefix of every session with its next item (SR-GNN's augmentation)."""
    return [(s[:i], s[i]) for s in sessions for i in range(1, len(s))]


def write_inter(path: Path, cases: list[tuple[list[str], str]], tag: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(HEADER)
        for n, (prefix, label) in enumerate(cases):
            f.write(f"{tag}{n}\t{' '.join(prefix[-MAX_LEN:])}\t{label}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=["SASRec", "GRU4Rec"])
    parser.add_argument("--folder", required=True, type=Path, help="Folder with TRAIN.txt and TEST.tsv.")
    parser.add_argument("--work", type=Path, help="Scratch folder (default: <folder>/recbole-<model>); emptied first.")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--stopping-step", type=int, default=10, help="Epochs without a better validation score "
                        "tolerated (RecBole stops after stopping_step + 1 of them).")
    parser.add_argument("--valid-metric", default="MRR@20")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (intra-op) and interop threads.")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--json-out", type=Path, help="Also write the result here.")
    parser.add_argument("--time-budget", type=float, help="Seconds of training after which no new epoch starts "
                        "(the best checkpoint so far is then tested); default: none.")
    parser.add_argument("--checkpoint", type=Path, help="Train nothing: test this RecBole checkpoint (saved/*.pth of "
                        "an earlier run on the same folder and settings, e.g. one stopped by hand).")
    parser.add_argument("--log", type=Path, help="With --checkpoint: that run's RecBole log, read for its epochs, "
                        "epoch times and validation scores.")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    folder = args.folder.resolve()
    json_out = args.json_out.resolve() if args.json_out else None  # before RecBole's chdir below
    train_sessions = read_train(folder / "TRAIN.txt")
    test_cases = read_test(folder / "TEST.tsv")
    n_valid = max(1, round(len(train_sessions) * args.valid_fraction))
    fit_sessions, valid_sessions = train_sessions[:-n_valid], train_sessions[-n_valid:]
    fit_cases, valid_cases = prefixes(fit_sessions), prefixes(valid_sessions)
    if not fit_cases or not valid_cases:
        raise SystemExit("too few training sessions for a training and a validation part")

    name = "split"
    checkpoint = args.checkpoint.resolve() if args.checkpoint else None
    run_log = args.log.resolve() if args.log else None
    work = (args.work or folder / f"recbole-{args.model.lower()}{'-eval' if checkpoint else ''}").resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / name).mkdir(parents=True)
    write_inter(work / name / f"{name}.train.inter", fit_cases, "f")
    write_inter(work / name / f"{name}.valid.inter", valid_cases, "v")
    write_inter(work / name / f"{name}.test.inter", test_cases, "t")
    os.chdir(work)  # RecBole writes log/, log_tensorboard/ and saved/ under the working directory

    k_metrics = ["Hit", "MRR", "NDCG"]
    config_dict = {
        "data_path": str(work),
        "checkpoint_dir": str(work / "saved"),
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "session_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": None,
        "load_col": {"inter": ["session_id", "item_id_list", "item_id"]},
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
        "use_gpu": False,
        "device": "cpu",
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "state": "INFO",
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "eval_step": 1,
        "train_batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "eval_args": {"split": None, "group_by": "none", "order": "TO", "mode": "full"},
        "metrics": k_metrics,
        "topk": [10, 20],
        "valid_metric": args.valid_metric,
        "valid_metric_bigger": True,
    }
    config = Config(model=args.model, dataset=name, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert len(test_data._dataset) == len(test_cases), "RecBole dropped test cases"
    assert len(train_data._dataset) == len(fit_cases), "RecBole dropped training cases"

    epoch_seconds: list[float] = []
    epoch_cpu_seconds: list[float] = []  # process CPU time: what the epoch cost, whatever else the machine runs
    valid_seconds: list[float] = []
    valid_scores: list[float] = []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train(*a, **kw):
        start, cpu = time.perf_counter(), time.process_time()
        out = train_epoch(*a, **kw)
        epoch_seconds.append(time.perf_counter() - start)
        epoch_cpu_seconds.append(time.process_time() - cpu)
        return out

    def timed_valid(*a, **kw):
        start = time.perf_counter()
        score, result = valid_epoch(*a, **kw)
        valid_seconds.append(time.perf_counter() - start)
        valid_scores.append(float(score))
        return score, result

    class OutOfTime(Exception):
        pass

    def budgeted_train(*a, **kw):
        if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
            raise OutOfTime  # between epochs: the last epoch's checkpoint is already saved
        return timed_train(*a, **kw)

    stopped = "early stopping"
    best_epoch = None
    if checkpoint is None:
        trainer._train_epoch, trainer._valid_epoch = budgeted_train, timed_valid
        start, cpu = time.perf_counter(), time.process_time()
        try:
            trainer.fit(train_data, valid_data, saved=True, show_progress=False)
            if len(epoch_seconds) == args.epochs and trainer.cur_step <= args.stopping_step:
                stopped = f"epoch limit ({args.epochs})"
        except OutOfTime:
            stopped = f"time budget ({args.time_budget:.0f} s)"
        fit_seconds, fit_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        model_file = None
    else:  # an earlier run's best checkpoint; its times and scores come from its log
        stopped = "by hand; best checkpoint so far tested"
        model_file = str(checkpoint)
        best_epoch = int(torch.load(model_file, map_location="cpu", weights_only=False)["epoch"]) + 1
        fit_seconds = fit_cpu_seconds = float("nan")
        if run_log is not None:
            import re

            text = run_log.read_text(errors="replace")
            epoch_seconds = [float(x) for x in re.findall(r"epoch \d+ training \[time: ([0-9.]+)s", text)]
            found = re.findall(r"epoch \d+ evaluating \[time: ([0-9.]+)s, valid_score: ([0-9.]+)\]", text)
            valid_seconds = [float(t) for t, _ in found]
            valid_scores = [float(v) for _, v in found]
            fit_seconds = sum(epoch_seconds) + sum(valid_seconds)

    start = time.perf_counter()
    recbole_result = trainer.evaluate(test_data, load_best_model=True, model_file=model_file, show_progress=False)
    recbole_eval_seconds = time.perf_counter() - start

    # Our ranks from the best checkpoint (loaded by evaluate above): candidates = TRAIN.txt items.
    model = trainer.model
    model.eval()
    token_id = dataset.field2token_id["item_id"]
    counts = Counter(i for s in train_sessions for i in s)
    first_seen: dict[str, int] = {}
    for s in train_sessions:
        for i in s:
            first_seen.setdefault(i, len(first_seen))
    vocab = sorted(counts, key=lambda i: (-counts[i], first_seen[i]))  # journeymap's Vocabulary order
    cand_ids = torch.tensor([token_id[i] for i in vocab], dtype=torch.long)  # RecBole id of each candidate
    order_of = {token_id[i]: n for n, i in enumerate(vocab)}  # RecBole id -> popularity position
    inter = test_data._dataset.inter_feat
    labels = inter["item_id"]
    ranks: list[float | None] = []
    ties = 0
    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(inter), args.eval_batch_size):
            batch = inter[lo:lo + args.eval_batch_size]
            scores = model.full_sort_predict(batch)[:, cand_ids]  # (b, candidates), popularity order
            for row, label in zip(scores, batch["item_id"].tolist()):
                pos = order_of.get(label)
                if pos is None:
                    ranks.append(None)
                    continue
                own = row[pos]
                equal = int((row == own).sum()) - 1
                ties += equal > 0
                ranks.append(float(1 + int((row > own).sum()) + int((row[:pos] == own).sum())))
    rescore_seconds = time.perf_counter() - start
    assert len(ranks) == len(test_cases) and len(labels) == len(test_cases)

    def metric(name: str, k: int) -> float:
        values = []
        for r in ranks:
            hit = r is not None and r <= k
            values.append(0.0 if not hit else 1.0 if name == "HR" else 1.0 / r if name == "MRR"
                          else 1.0 / math.log2(r + 1.0))
        return 100.0 * sum(values) / len(values)

    if best_epoch is None and valid_scores:  # RecBole keeps the last of equal best scores (>=)
        best_epoch = max(range(len(valid_scores)), key=lambda e: (valid_scores[e], e)) + 1
    result = {
        "model": f"RecBole {args.model}",
        "P@20": metric("HR", 20), "MRR@20": metric("MRR", 20), "HR@10": metric("HR", 10),
        "NDCG@10": metric("NDCG", 10),
        "ranks": ranks,
        "recbole": {k: 100.0 * float(v) for k, v in recbole_result.items()},
        "cases": len(test_cases), "unknown_labels": sum(r is None for r in ranks), "label_ties": ties,
        "candidates": len(vocab), "recbole_items": int(dataset.item_num) - 1,
        "train_sessions": len(fit_sessions), "train_cases": len(fit_cases),
        "valid_sessions": len(valid_sessions), "valid_cases": len(valid_cases),
        "epochs": len(epoch_seconds), "best_epoch": best_epoch, "stopped": stopped,
        "valid_scores": valid_scores,
        "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "epoch_seconds": epoch_seconds,
        "cpu_seconds_per_epoch": sum(epoch_cpu_seconds) / len(epoch_cpu_seconds) if epoch_cpu_seconds else None,
        "epoch_cpu_seconds": epoch_cpu_seconds,
        "train_cpu_seconds": fit_cpu_seconds,
        "valid_seconds": sum(valid_seconds),
        "train_seconds": fit_seconds,
        "eval_seconds": rescore_seconds, "recbole_eval_seconds": recbole_eval_seconds,
        "config": {"batch_size": args.batch_size, "epochs": args.epochs, "stopping_step": args.stopping_step,
                   "valid_metric": args.valid_metric, "valid_fraction": args.valid_fraction,
                   "threads": args.threads, "seed": args.seed, "max_item_list_length": MAX_LEN,
                   "model_params": {k: config[k] for k in (
                       "hidden_size", "n_layers", "n_heads", "inner_size", "hidden_dropout_prob",
                       "attn_dropout_prob", "embedding_size", "num_layers", "dropout_prob", "loss_type",
                       "learning_rate") if k in config.final_config_dict}},
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "threads": torch.get_num_threads()},
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    text = json.dumps(result)
    if json_out:
        json_out.write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
