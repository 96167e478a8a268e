"""``journeymap train`` and ``journeymap predict``: fit a next-item model, save it, ask it for a user.

    journeymap train --store shop.duckdb --model sknn --out sknn.npz
    journeymap train --train TRAIN.txt --model markov --out markov.npz
    journeymap predict --model sknn.npz --store shop.duckdb --user RAW_ID --json
    journeymap train --store shop.duckdb --model behaviour --out behaviour.npz   # then predict as above:
                                    # next items, next-action probabilities, purchase and churn propensity
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from journeymap.commands._options import ConfigOpt, GapOpt, JsonOpt, out, print_json
from journeymap.commands.evaluate import (
    EventsOpt,
    ModelOpt,
    ParamOpt,
    build_model,
    event_list,
)
from journeymap.exceptions import ConfigError, JourneymapError


def train(
    model: ModelOpt,
    model_out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the trained model (.npz).")],
    store: Annotated[Optional[Path], typer.Option("--store", "-s", help="Train on every session of this store.")] = None,
    train_file: Annotated[Optional[Path], typer.Option("--train", help="Or train on an SR-GNN TRAIN.txt file.")] = None,
    params: ParamOpt = None,
    events: EventsOpt = None,
    gap: GapOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit a next-item model on a store's sessions (or a TRAIN.txt) and save it to one file."""
    if (store is None) == (train_file is None):
        raise JourneymapError("Give what to train on: --store STORE or --train TRAIN.txt (one of them).")
    chosen = build_model(model, params)
    if store is not None and hasattr(chosen, "fit_store"):  # the behaviour model reads every event, with times
        if events:
            raise JourneymapError(f"--events does not apply to --model {model}: it reads every event of the store "
                                  "(item or not) and learns from their types.")
        from journeymap.config import Settings

        started = time.perf_counter()
        chosen.fit_store(store, gap, Settings.load(config))
        seconds = time.perf_counter() - started
        path = chosen.save(model_out)
        data = {"model": chosen.name, "params": chosen.get_params(), "items": len(chosen.vocab_),
                "heads": chosen.heads_, "validation": chosen.report_, "train_seconds": seconds, "out": str(path)}
        if as_json:
            print_json(data)
            return
        out.print(f"trained {chosen.name} on {store} ({len(chosen.vocab_):,} items; heads {', '.join(chosen.heads_)}) "
                  f"in {seconds:.2f} s -> {path}", highlight=False)
        return
    if store is not None:
        from journeymap.config import Settings
        from journeymap.models import read_sessions

        sessions = read_sessions(store, gap, event_list(events), Settings.load(config))
        sequences, types = [s.items for s in sessions], [s.event_types for s in sessions]
    else:
        from journeymap.evaluation import read_train_sessions

        sequences, types = read_train_sessions(train_file), None
    started = time.perf_counter()
    chosen.fit(sequences, types)
    seconds = time.perf_counter() - started
    path = chosen.save(model_out)
    data = {"model": chosen.name, "params": chosen.get_params(), "sessions": len(sequences),
            "items": len(chosen.vocab_), "train_seconds": seconds, "out": str(path)}
    if as_json:
        print_json(data)
        return
    out.print(f"trained {chosen!r} on {len(sequences):,} sessions ({len(chosen.vocab_):,} items) in "
              f"{seconds:.2f} s -> {path}", highlight=False)


def predict(
    model_path: Annotated[Path, typer.Option("--model", "-m", help="A model file written by `journeymap train`.")],
    store: Annotated[Path, typer.Option("--store", "-s", help="The DuckDB store holding the user's history.")],
    user: Annotated[str, typer.Option("--user", "-u", help="The user's id as in your source data (pseudonymized with the configured secret).")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many next items.")] = 20,
    events: EventsOpt = None,
    gap: GapOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The next items for one user, from their history in the store, with the model's scores."""
    from journeymap.config import Settings
    from journeymap.models import SequenceModel, read_sessions
    from journeymap.privacy import Pseudonymizer
    from journeymap.store import Store

    settings = Settings.load(config)
    pseudonymizer = Pseudonymizer(settings.require_secret())
    with Store(store, read_only=True) as st:
        known = st.meta("secret_fingerprint")
    if known is not None and known != pseudonymizer.fingerprint():
        raise ConfigError(f"The configured secret is not the one {store} was written with, so raw ids cannot be "
                          "matched to its users. Set JOURNEYMAP_SECRET (or `secret` in journeymap.toml) to the store's secret.")
    model = SequenceModel.load(model_path)
    if hasattr(model, "predict_user"):
        _predict_behaviour(model, store, user, pseudonymizer(str(user)), k, gap, settings, as_json)
        return
    sessions = read_sessions(store, gap, event_list(events), settings, user_id=pseudonymizer(str(user)))
    history = [item for s in sessions for item in s.items]
    kinds = [t for s in sessions for t in s.event_types]
    if model.vocab_.items.dtype.kind in "iu":  # a model trained on integer ids (TRAIN.txt is text)
        history = [int(i) if str(i).lstrip("-").isdigit() else i for i in history]
    items, scores = model.recommend(history, k, event_types=kinds)
    data = {"user": user, "model": model.name, "history_items": len(history),
            "last_items": [str(i) for i in history[-5:]],
            "next_items": [{"item": str(i), "score": float(s)} for i, s in zip(items.tolist(), scores.tolist())]}
    if as_json:
        print_json(data)
        return
    if not history:
        out.print(f"user {user} has no item events in {store}: these are the model's picks for a new session.",
                  highlight=False)
    table = Table(title=f"Next items for {user} ({len(history):,} items of history, {model.name})", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for rank, entry in enumerate(data["next_items"], start=1):
        table.add_row(str(rank), entry["item"], f"{entry['score']:.4g}")
    out.print(table)


def _predict_behaviour(model, store: Path, user: str, pseudonym: str, k: int, gap: str | None, settings,
                       as_json: bool) -> None:
    """The behaviour model's answer for one user: next items, next action, purchase and churn propensity."""
    from journeymap.models import read_event_log

    log = read_event_log(store, gap, settings, user_id=pseudonym)
    result = model.predict_user(log, k)
    history = [i for i in log.items.tolist() if i is not None]
    data = {"user": user, "model": model.name, "history_events": log.events, "history_items": len(history),
            "last_items": [str(i) for i in history[-5:]], **result}
    if as_json:
        print_json(data)
        return
    if not log.events:
        out.print(f"user {user} has no events in {store}: these are the model's picks for a new user.", highlight=False)
    table = Table(title=f"Next items for {user} ({log.events:,} events of history, {model.name})", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("probability", justify="right")
    for rank, entry in enumerate(data["next_items"], start=1):
        table.add_row(str(rank), entry["item"], f"{entry['score']:.4f}")
    out.print(table)
    if data["next_action"]:
        top = sorted(data["next_action"].items(), key=lambda kv: -kv[1])[:5]
        out.print("next action: " + ", ".join(f"{a} {p:.1%}" for a, p in top), highlight=False)
    for name, key in (("purchase in this session", "purchase_propensity"),
                      (f"churn (no return within {data['churn_days']:g} days)", "churn_propensity")):
        value = data[key]
        out.print(f"{name}: {'not trained (no labels)' if value is None else f'{value:.1%}'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("predict")(predict)
