"""``journeymap ope``: off-policy evaluation of a candidate policy from a decision log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from journeymap.commands._options import JsonOpt, out, print_json
from journeymap.exceptions import JourneymapError


def ope(
    log: Annotated[Path, typer.Option("--log", help="Decision log: .jsonl/.parquet (journeymap) or an Open Bandit CSV.")],
    policy: Annotated[str, typer.Option("--policy", help="Candidate policy: uniform, logged, action:ID, file:PATH "
                                                         "(decision_id/position, action, probability), "
                                                         "empirical:LOG or thompson:PRIORS.json.")],
    estimators: Annotated[str, typer.Option("--estimators", help="Comma-separated: ips, snips, dr, dm.")] = "ips,snips,dr",
    format: Annotated[Optional[str], typer.Option("--format", help="journeymap or obp (default: from the file name).")] = None,
    ci: Annotated[str, typer.Option("--ci", help="Interval method: bootstrap (percentile) or normal.")] = "bootstrap",
    confidence: Annotated[float, typer.Option("--confidence", help="Interval coverage.")] = 0.95,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")] = 1000,
    folds: Annotated[int, typer.Option("--folds", help="Cross-fitting folds of DR's reward model.")] = 3,
    by: Annotated[Optional[str], typer.Option("--by", help="Also estimate per 'position' (slot).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resamples and the cross-fitting folds.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Estimate a candidate policy's mean reward from a decision log (IPS, SNIPS, doubly robust), with intervals."""
    from journeymap.policy import evaluate_policy

    if format is not None and format not in ("journeymap", "obp"):
        raise JourneymapError(f"--format takes journeymap or obp. Got '{format}'.")
    names = [e.strip() for e in estimators.split(",") if e.strip()]
    result = evaluate_policy(log, policy, estimators=names, ci=ci, confidence=confidence, n_resamples=resamples,
                             seed=seed, folds=folds, by=by, format=format)
    if as_json:
        print_json(result.to_dict())
        return
    info = result.log
    out.print(f"[bold]{result.policy}[/] on {info['source']}: {info['rewarded']:,} decisions with a reward"
              + (f" ({info['pending']:,} pending, left out)" if info["pending"] else ""), highlight=False)
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, show_edge=False)
    columns = ["estimator", *(["slot"] if result.groups else []), "estimate", "CI low", "CI high", "lift", "n",
               "eff. n", "max w"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("estimator", "slot") else "right")
    for e in result.estimates + [e for es in result.groups.values() for e in es]:
        slot = [e.group.partition("=")[2] or "all"] if result.groups else []
        table.add_row(e.estimator.upper(), *slot, f"{e.value:.3g}", f"{e.ci[0]:.3g}", f"{e.ci[1]:.3g}",
                      f"{e.lift:+.1%}", f"{e.n:,}", f"{e.effective_sample_size:,.0f}", f"{e.max_weight:.3g}")
    out.print(table)
    out.print(f"{confidence:.0%} intervals by {'the bootstrap' if ci == 'bootstrap' else 'normal approximation'}; "
              "lift: over the logging policy; eff. n: effective sample size of the weights", highlight=False)
    out.print(f"logging policy's mean reward on the same decisions: {info['logged_value']:.5g}", highlight=False)
    if result.reward_model:
        m = result.reward_model
        out.print(f"reward model: {m['kind']} regression (C={m['C']}), {m['features']} features, "
                  f"{m['folds']}-fold cross-fitting", highlight=False)
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("ope")(ope)
