"""What the neural next-item models share: torch set-up, one training loop, weights as arrays.

Imported only when a neural model fits or scores, so ``import journeymap.models`` never loads
torch. The loop trains an epoch at a time, shows a progress bar with the loss, measures MRR@20 on
a held-out tail of the training sessions and stops when it has not improved for ``patience``
epochs, keeping the best epoch's weights; then, by default, a new network trains on every session
for that many epochs. Checkpoints hold the weights as one float32 array plus a JSON layout, so the
base class's ``.npz`` format carries them unchanged (no pickle).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from journeymap.exceptions import JourneymapError, MissingDependencyError
from journeymap.models._data import Encoded

try:
    import torch
except ImportError:  # pragma: no cover - the models extra is installed where tests run
    raise MissingDependencyError("The neural models (gru4rec, sasrec) need PyTorch: "
                                 "pip install 'journeymap[models]'") from None

MONITOR = "MRR@20"  # the early-stopping measure: a full-ranking accuracy, smoother than a hit rate


# -- set-up -----------------------------------------------------------------------------------------
def check_int(model: Any, attr: str, minimum: int = 1) -> None:
    value = getattr(model, attr)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise JourneymapError(f"{type(model).__name__}'s '{attr}' must be a whole number >= {minimum}. Got {value!r}.")


def check_number(model: Any, attr: str, zero: bool = True) -> None:
    value = getattr(model, attr)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not zero):
        raise JourneymapError(f"{type(model).__name__}'s '{attr}' must be a number "
                              f"{'>= 0' if zero else '> 0'}. Got {value!r}.")


def check_probability(model: Any, attr: str) -> None:
    value = getattr(model, attr)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise JourneymapError(f"{type(model).__name__}'s '{attr}' must be a probability in [0, 1). Got {value!r}.")


def check_training_params(model: Any) -> None:
    """Refuse training settings every neural model shares, saying which and why."""
    name = type(model).__name__
    for attr, minimum in (("epochs", 1), ("patience", 1), ("batch_size", 1), ("seed", 0)):
        check_int(model, attr, minimum)
    if isinstance(model.validation, bool) or not isinstance(model.validation, (int, float)) \
            or not 0 <= model.validation < 1:
        raise JourneymapError(f"{name}'s 'validation' is the share of training sessions (the most recent) held out "
                              f"for early stopping: a number in [0, 1), 0 for none. Got {model.validation!r}.")
    if not isinstance(model.refit, bool):
        raise JourneymapError(f"{name}'s 'refit' must be True or False. Got {model.refit!r}.")
    if model.threads is not None:
        check_int(model, "threads")
    device(model.device)


def device(name: str) -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU; or any torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except (RuntimeError, TypeError):
        raise JourneymapError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {name!r}.") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise JourneymapError(f"device {name!r} was asked for, but torch sees no GPU here; use device='auto' or 'cpu'.")
    return chosen


@contextlib.contextmanager
def session(threads: int | None, seed: int | None = None) -> Iterator[None]:
    """Run torch with ``threads`` CPU threads and, given a seed, a private seeded random state.

    One thread is the models' default: their matrices are small, and on a 2-core machine shared
    with other jobs an epoch took 5 to 15 times longer with torch's default of two threads, which
    wait on each other at every operation (with both cores free, two threads were at most 1.3
    times faster). Both settings are put back after, so fitting a model never changes the
    caller's torch.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if seed is None:
            yield
        else:
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                yield
    finally:
        torch.set_num_threads(before)


# -- data -------------------------------------------------------------------------------------------
def known_only(sequences: Encoded, max_len: int | None = None, pad: int = 0,
               side: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Each sequence's known items (unknown ones dropped), the last ``max_len`` of them, right-padded.

    Returns ``(items, lengths, side)``: (n, T) int64 padded with ``pad``, (n,), and each array of
    ``side`` (one value per element of ``sequences.items``, like event types) cut and padded (with 0)
    the same way.
    """
    known = sequences.items >= 0
    rows = sequences.rows()[known]
    lengths = np.bincount(rows, minlength=len(sequences)).astype(np.int64)
    position = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # 0-based among known items
    keep = np.ones(len(rows), dtype=bool)
    if max_len is not None:
        drop = np.repeat(np.maximum(lengths - max_len, 0), lengths)
        keep = position >= drop
        position = position - drop
        lengths = np.minimum(lengths, max_len)
    rows, position = rows[keep], position[keep]
    shape = (len(sequences), int(lengths.max(initial=1)))
    out = []
    for values, fill in ((sequences.items, pad), *((extra, 0) for extra in side)):
        padded = np.full(shape, fill, dtype=np.int64)
        padded[rows, position] = values[known][keep]
        out.append(padded)
    return out[0], lengths, out[1:]


def validation_split(sessions: Encoded, share: float) -> tuple[Encoded, Encoded | None]:
    """The most recent ``share`` of the sessions apart (at least one), or none when too few to spare."""
    n = len(sessions)
    held = int(np.ceil(n * share)) if share > 0 else 0
    if held == 0 or n - held < 1:
        return sessions, None
    return sessions[:n - held], sessions[n - held:]


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """What an empty prefix scores: the log share of training occurrences (n_items,)."""
    counts = counts.astype(np.float64)
    return np.log(counts / counts.sum())


def mrr_at(scores: torch.Tensor, labels: torch.Tensor, k: int = 20) -> tuple[float, int]:
    """Sum of reciprocal ranks within the top ``k`` (full ranking, ties counted against), and cases."""
    own = scores.gather(1, labels[:, None])  # (n, 1)
    rank = (scores > own).sum(dim=1) + 1  # (n,)
    reciprocal = torch.where(rank <= k, 1.0 / rank.double(), torch.zeros((), dtype=torch.float64))
    return float(reciprocal.sum()), len(labels)


# -- training ---------------------------------------------------------------------------------------
def train(net: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: Callable[[int], Iterable[torch.Tensor]],
          steps_per_epoch: int, validate: Callable[[], float] | None, *, epochs: int, patience: int,
          verbose: bool, label: str) -> dict[str, Any]:
    """Train ``net`` for up to ``epochs``, stopping early on the validation measure, best weights kept.

    ``steps(epoch)`` yields one loss per mini-batch (the model's own batching and state); this loop
    does the backward pass and the update. ``validate()`` returns MRR@20 in percent on the held-out
    sessions (higher is better); without it every epoch runs and the last weights are kept.
    Returns the history saved with the model: per epoch the mean loss, the validation measure, the
    training seconds and the validation seconds; the best epoch and whether it stopped early.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    history: dict[str, Any] = {"loss": [], "validation": [], "seconds": [], "validation_seconds": [],
                               "monitor": MONITOR, "best_epoch": None, "stopped_early": False}
    best, best_state, waited = -np.inf, None, 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not verbose) as bar:
        task = bar.add_task(label, total=steps_per_epoch, loss=float("nan"))
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            bar.reset(task, total=steps_per_epoch, description=f"{label} epoch {epoch}/{epochs}", loss=float("nan"))
            net.train()
            total, count = 0.0, 0
            for loss in steps(epoch):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                if not np.isfinite(value):
                    raise JourneymapError(f"{label} diverged in epoch {epoch} (the loss became {value}); "
                                          "lower the learning_rate.")
                total, count = total + value, count + 1
                bar.update(task, advance=1, loss=total / count)
            history["loss"].append(total / max(count, 1))
            trained = time.perf_counter()
            score = None
            if validate is not None:
                net.eval()
                with torch.no_grad():
                    score = float(validate())
            history["validation"].append(score)
            history["seconds"].append(trained - started)
            history["validation_seconds"].append(time.perf_counter() - trained)
            improved = score is not None and score > best
            if improved:
                best, waited = score, 0
                history["best_epoch"] = epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif score is not None:
                waited += 1
            if verbose:
                shown = "" if score is None else f", validation {MONITOR} {score:.2f}{' (best)' if improved else ''}"
                bar.console.print(f"{label} epoch {epoch}: loss {history['loss'][-1]:.4f}{shown} "
                                  f"({time.perf_counter() - started:.1f} s)", highlight=False)
            if score is not None and waited >= patience:
                history["stopped_early"] = epoch < epochs
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        history["best_epoch"] = len(history["loss"])
    history["epochs"] = len(history["loss"])
    return history


def search_then_refit(train_once: Callable[[Encoded, Encoded | None, int, str], tuple[torch.nn.Module, dict]],
                      sessions: Encoded, model: Any,
                      calibrate: Callable[[torch.nn.Module, Encoded], dict[str, torch.Tensor]] | None = None,
                      ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Find the best number of epochs on the held-out tail, then (``refit``) train anew on every session.

    The most recent sessions are the most like the ones to predict, so the final network should
    learn from them too; the validation run only decides how long to train. ``train_once(train,
    held, epochs, label)`` trains a new network from the model's seed.

    ``calibrate(net, held)``, given, fits corrections to some parameters of the validation run's
    network on the held-out sessions, which that network never trained on, and returns them by
    state_dict name; they are added to the final network's own. (The refit network has seen every
    session, so nothing unseen is left to fit them on.)
    """
    label = type(model).__name__
    train, held = validation_split(sessions, model.validation)
    net, history = train_once(train, held, model.epochs, label)
    fitted = calibrate(net, held) if calibrate is not None and held is not None else {}
    if held is not None and model.refit:
        net, final = train_once(sessions, None, history["best_epoch"], f"{label} (refit on all sessions)")
        history.update(refit_epochs=final["epochs"], refit_loss=final["loss"], refit_seconds=final["seconds"])
    if fitted:
        state = net.state_dict()
        history["calibrated"] = {}
        with torch.no_grad():
            for name, correction in fitted.items():
                trained = state[name].reshape(-1).tolist()
                state[name].add_(correction.to(state[name].device))
                history["calibrated"][name] = {"trained": trained, "fitted": state[name].reshape(-1).tolist()}
    return net, history


# -- checkpoints ------------------------------------------------------------------------------------
def to_arrays(net: torch.nn.Module) -> tuple[np.ndarray, list[list[Any]]]:
    """The state_dict as one float32 array and its layout ``[[name, shape], ...]`` (JSON-able)."""
    state = net.state_dict()
    layout = [[name, list(tensor.shape)] for name, tensor in state.items()]
    flat = [tensor.detach().to("cpu", torch.float32).reshape(-1).numpy() for tensor in state.values()]
    return (np.concatenate(flat) if flat else np.zeros(0, np.float32)), layout


def from_arrays(net: torch.nn.Module, weights: np.ndarray, layout: list[list[Any]]) -> torch.nn.Module:
    """Load ``to_arrays``' output back into a network of the same shape."""
    state, offset = {}, 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        state[name] = torch.from_numpy(np.ascontiguousarray(weights[offset:offset + size])).reshape(shape)
        offset += size
    net.load_state_dict(state)
    return net


# -- calibration of a copy bonus --------------------------------------------------------------------
def copy_bonus_shift(cases: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], bonus: torch.Tensor) -> float:
    """The one shift of a copy bonus by clicks ago (K,) that best predicts held-out next items.

    ``cases`` gives, a batch at a time, the network's scores of every item without the bonus
    (n, n_items), each case's last K clicks ``recent`` (n, K; column 0 the last, -1 none) and its
    next item (n,). An item's bonus is the sum of ``bonus[k] + shift`` over the columns where it
    appears. The softmax over all items changes only at those items, so the full-catalogue
    log-likelihood needs no more than (n, K) numbers per batch: the log-sum-exp of the scores and
    the scores of the recent items. It is concave in the shift, which is found by L-BFGS. No
    cases: 0.

    One number, not one per clicks-ago slot: on the inner splits of both samples (training
    sessions only) it did as well as or better than refitting all K, which followed noise in rarely
    reached slots (yoochoose-100k MRR@20 35.66 against 35.37; diginetica-sample 36.54 against 36.51).
    """
    parts, recents, labels = [], [], []
    with torch.no_grad():
        for scores, recent, label in cases:
            parts.append(torch.cat([torch.logsumexp(scores, dim=1, keepdim=True),
                                    scores.gather(1, recent.clamp(min=0))], dim=1).cpu())
            recents.append(recent.cpu())
            labels.append(label.cpu())
    if not labels:
        return 0.0
    base, recent, labels = torch.cat(parts), torch.cat(recents), torch.cat(labels)
    lse, at = base[:, 0].double(), base[:, 1:].double()
    valid = recent >= 0
    bonus = bonus.detach().cpu().double()
    fixed, count, first = [], [], []  # per (case, column): the item's bonus as trained, its clicks, first sight
    for lo in range(0, len(recent), 4096):  # the (n, K, K) comparison a slice at a time
        r, v = recent[lo:lo + 4096], valid[lo:lo + 4096]
        same = (r[:, :, None] == r[:, None, :]) & v[:, :, None] & v[:, None, :]
        fixed.append(same.double() @ bonus)
        count.append(same.sum(dim=2).double())
        first.append(v & ~torch.tril(same, diagonal=-1).any(dim=2))  # each distinct item counted once
    fixed, count = torch.cat(fixed), torch.cat(count)
    share = torch.where(torch.cat(first), torch.exp(at - lse[:, None]), torch.zeros((), dtype=torch.float64))
    hits = (recent == labels[:, None]) & valid  # (n, K): the label's clicks in the window
    gain, hit_count = (hits.double() * bonus).sum(), float(hits.sum())  # the label's bonus: gain + shift * count
    shift = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([shift], max_iter=100, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # to the log-sum-exp; the label's own score is a constant here
        added = torch.log1p((share * torch.expm1(fixed + shift * count)).sum(dim=1).clamp(min=-1 + 1e-12))
        loss = added.sum() - gain - shift[0] * hit_count
        loss.backward()
        return loss

    with torch.enable_grad():  # also when the caller runs without gradients
        optimizer.step(closure)
    return float(shift.detach())
