"""``journeymap evaluate``: a next-item model's accuracy, full ranking, with confidence intervals.

    journeymap evaluate --protocol srgnn --train TRAIN.txt --test TEST.tsv --model sknn --json
    journeymap evaluate --store shop.duckdb --model markov --split temporal --test-days 7
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from journeymap.commands._options import ConfigOpt, GapOpt, JsonOpt, out, print_json
from journeymap.exceptions import JourneymapError

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name: pop, markov, sknn, iknn, gru4rec, sasrec or behaviour.")]
ParamOpt = Annotated[Optional[list[str]], typer.Option(
    "--param", "-p", help="Model hyperparameter KEY=VALUE, repeatable (e.g. --param neighbors=50).")]
EventsOpt = Annotated[Optional[str], typer.Option(
    "--events", help="Only these event types in the sequences, comma-separated (default: every event with an item).")]


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``["neighbors=50", "similarity=vec"]`` -> ``{"neighbors": 50, "similarity": "vec"}`` (numbers parsed)."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise JourneymapError(f"--param takes KEY=VALUE, like neighbors=50. Got '{pair}'.")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value.strip()
    return params


def build_model(name: str, pairs: list[str] | None):
    from journeymap.models import make_model

    return make_model(name, **parse_params(pairs))


def event_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def evaluate(
    model: ModelOpt,
    protocol: Annotated[Optional[str], typer.Option(
        "--protocol", help="srgnn (--train and --test files) or store (--store with --split). "
                           "Default: srgnn when --train is given, else store.")] = None,
    train: Annotated[Optional[Path], typer.Option("--train", help="SR-GNN TRAIN.txt: one session per line, item ids separated by spaces.")] = None,
    test: Annotated[Optional[Path], typer.Option("--test", help="SR-GNN TEST.tsv: header prefix<TAB>label, one test case per line.")] = None,
    store: Annotated[Optional[Path], typer.Option("--store", "-s", help="The DuckDB store file.")] = None,
    split: Annotated[str, typer.Option("--split", help="With --store: temporal (last days' sessions are test) or leave-last (each user's last item).")] = "temporal",
    test_days: Annotated[float, typer.Option("--test-days", help="With --split temporal: sessions starting in the last N days are test.")] = 7.0,
    params: ParamOpt = None,
    events: EventsOpt = None,
    metrics: Annotated[str, typer.Option("--metrics", help="Ranking metrics, comma-separated: P@K, HR@K, MRR@K, NDCG@K.")] = "P@20,MRR@20,HR@10,NDCG@10",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples of the test cases for the intervals (0: none).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    gap: GapOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a model and rank every test case's next item over all items: P@20, MRR@20, HR@10, NDCG@10 in percent."""
    from journeymap.evaluation import (
        evaluate_leave_last,
        evaluate_srgnn,
        evaluate_temporal,
    )

    protocol = protocol or ("srgnn" if train is not None or test is not None else "store")
    if protocol not in ("srgnn", "store"):
        raise JourneymapError(f"--protocol takes srgnn or store. Got '{protocol}'.")
    options = {"metrics": [m.strip() for m in metrics.split(",") if m.strip()], "n_resamples": bootstrap, "seed": seed}
    chosen = build_model(model, params)
    if protocol == "srgnn":
        if train is None or test is None:
            raise JourneymapError("--protocol srgnn needs both --train TRAIN.txt and --test TEST.tsv.")
        if store is not None or events or gap:
            raise JourneymapError("--protocol srgnn reads --train and --test only; --store, --events and --gap "
                                  "belong to --protocol store.")
        result = evaluate_srgnn(train, test, chosen, **options)
    else:
        if store is None:
            raise JourneymapError("Give --store STORE (with --split temporal or leave-last), or --train TRAIN.txt "
                                  "and --test TEST.tsv for the SR-GNN protocol.")
        if train is not None or test is not None:
            raise JourneymapError("--train and --test are the SR-GNN protocol's files; with --store leave them out.")
        from journeymap.config import Settings

        settings = Settings.load(config)
        if split == "temporal":
            result = evaluate_temporal(store, chosen, test_days=test_days, gap=gap, event_types=event_list(events),
                                       settings=settings, **options)
        elif split == "leave-last":
            result = evaluate_leave_last(store, chosen, gap=gap, event_types=event_list(events), settings=settings,
                                         **options)
        else:
            raise JourneymapError(f"--split takes temporal or leave-last. Got '{split}'.")
    if as_json:
        print_json(result.to_dict())
        return
    level = f"{result.metrics.confidence:.0%} CI" if bootstrap else "CI"
    table = Table(title=f"{result.model} under the {result.protocol} protocol: {result.test_cases:,} test cases, "
                        f"{result.items:,} items ranked", title_justify="left")
    for column in ("metric", "%", level):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in result.metrics.values.items():
        low, high = result.metrics.ci[name]
        table.add_row(name, f"{value:.2f}", "-" if low != low else f"{low:.2f} - {high:.2f}")
    out.print(table)
    out.print(f"{result.unknown_labels:,} test labels never seen in training count as misses; "
              f"trained on {result.train_sessions:,} sessions in {result.train_seconds:.2f} s, "
              f"evaluated in {result.eval_seconds:.2f} s.", highlight=False)
    if result.protocol == "temporal":
        d = result.details
        out.print(f"cutoff {d['cutoff']}: {d['test_sessions']:,} test sessions; {d['spanning_sessions']:,} sessions "
                  "spanning the cutoff left out.", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
