"""The event-token encoder and its self-supervised pre-training (next event: item, type, time gap).

A small causal transformer reads a user's whole event stream; each position sums the embeddings
of the event's item (plus, optionally, a projection of the item's text vector), type, time-gap
bucket, device, channel and position. Pre-training needs no labels: every position predicts the
next event's item (full cross-entropy over the catalogue, output tied to the item embeddings),
its type and its time-gap bucket (which carries "the session ends here" and "back within a
day"); after a user's last event the gap is censored by the store's end ("at least this long"),
so leaving for good is learned too. Imported only when the behaviour model fits or predicts: ``import journeymap.models`` never
loads torch. The network reads top to bottom, small modules first (nanoGPT's ``model.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from journeymap.exceptions import JourneymapError, MissingDependencyError
from journeymap.models._events import (
    FIRST_VALUE,
    MISSING,
    N_GAP_TOKENS,
    UNKNOWN,
    Tokens,
)
from journeymap.models._torch import device as pick_device  # noqa: F401 (used by _multitask)
from journeymap.models._torch import from_arrays, to_arrays  # noqa: F401 (used by _multitask)
from journeymap.models._torch import session as torch_session  # noqa: F401

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - the models extra is installed where tests run
    raise MissingDependencyError("The behaviour model needs PyTorch: pip install 'journeymap[models]'") from None

INPUTS = ("item", "kind", "gap", "device", "channel")
PRETEXT_TARGETS = ("next_item_any", "next_kind", "next_gap", "gap_at_least")


@dataclass
class EncoderConfig:
    """Sizes of the encoder; the defaults fit catalogues of 1k-50k items trained on a CPU."""

    n_items: int  # item tokens, special tokens included
    n_kinds: int  # event-type tokens, special tokens included
    n_devices: int
    n_channels: int
    n_gaps: int = N_GAP_TOKENS
    text_dim: int = 0  # width of the item text vectors; 0: no text input
    dim: int = 64  # wide enough for ~1k items and 5 tasks; a CPU epoch over 200k events takes seconds
    layers: int = 2  # two blocks: a next event depends mostly on the last few events
    heads: int = 2
    max_len: int = 64  # events per window; a user's longer history is read in windows
    dropout: float = 0.1
    id_dropout: float = 0.2  # with text vectors only: how often training hides an item's own embedding

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the network ---------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
        # Right padding: a real position never attends to a later one, so padding needs no mask.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.dim)
        self.attention = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, 4 * config.dim), nn.GELU(), nn.Linear(4 * config.dim, config.dim),
                                 nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class EventEncoder(nn.Module):
    """Event tokens (B, T) per field -> one state per position (B, T, C), each seeing only its past.

    ``item_row`` maps item tokens to rows of the item embedding: a rare item (fewer training
    events than ``min_count``) shares the unknown item's row, so it is told apart only by its text
    vector when there is one. ``item_table()`` is every item token's representation, the input
    embedding and the output of the item heads alike (tied). ``seen`` marks the item tokens that
    can be a training target: an item of the catalogue with no training event is left out of the
    training softmax (else it would only ever learn to score low) and ranked at prediction time.
    """

    def __init__(self, config: EncoderConfig, item_row: np.ndarray, seen: np.ndarray,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        C = config.dim
        self.register_buffer("item_row", torch.as_tensor(item_row, dtype=torch.long), persistent=False)
        self.register_buffer("seen", torch.as_tensor(seen, dtype=torch.bool), persistent=False)
        self.item = nn.Embedding(config.n_items, C)
        if config.text_dim:
            self.register_buffer("item_text", torch.as_tensor(item_text, dtype=torch.float32), persistent=False)
            self.text = nn.Linear(config.text_dim, C, bias=False)
        self.kind = nn.Embedding(config.n_kinds, C)
        self.gap = nn.Embedding(config.n_gaps, C)
        self.device = nn.Embedding(config.n_devices, C)
        self.channel = nn.Embedding(config.n_channels, C)
        self.position = nn.Embedding(config.max_len, C)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln = nn.LayerNorm(C)
        self.apply(_init)

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedding rows of item tokens; with text vectors, in training, an item's own row gives way to
        the unknown item's ``id_dropout`` of the time, so that its text has to carry it."""
        rows = self.item_row[tokens]
        if self.config.text_dim and self.training and self.config.id_dropout:
            drop = torch.rand(rows.shape, device=rows.device) < self.config.id_dropout
            rows = torch.where(drop & (tokens >= FIRST_VALUE), torch.full_like(rows, UNKNOWN), rows)
        return rows

    def item_vectors(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Representation of item tokens: (...,) -> (..., C)."""
        out = self.item(rows)
        if self.config.text_dim:
            out = out + self.text(self.item_text[tokens])
        return out

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item token's representation (n_items, C) and embedding row (n_items,)."""
        tokens = torch.arange(self.config.n_items, device=self.item_row.device)
        rows = self.rows(tokens)
        return self.item_vectors(tokens, rows), rows

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["item"]
        T = items.shape[1]
        x = (self.item_vectors(items, self.rows(items)) + self.kind(batch["kind"]) + self.gap(batch["gap"])
             + self.device(batch["device"]) + self.channel(batch["channel"])
             + self.position(torch.arange(T, device=items.device)))  # (B, T, C)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.ln(x)  # (B, T, C)


class ItemHead(nn.Module):
    """A state (N, C) -> a score for every item token (N, n_items), through the tied item table.

    The bias is per embedding row, so rare items share the unknown item's. Given ``seen``, items
    that cannot be a target score -inf (training losses).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.dim, config.dim)
        self.bias = nn.Parameter(torch.zeros(config.n_items))

    def forward(self, h: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor],
                seen: torch.Tensor | None = None) -> torch.Tensor:
        vectors, rows = table
        logits = self.proj(h) @ vectors.T + self.bias[rows]  # (N, n_items)
        return logits if seen is None else logits.masked_fill(~seen, float("-inf"))


class PretextHeads(nn.Module):
    """What pre-training predicts at each position: the next event's item, type and time-gap bucket."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.item = ItemHead(config)
        self.kind = nn.Linear(config.dim, config.n_kinds)
        self.gap = nn.Linear(config.dim, config.n_gaps)


class BehaviourNet(nn.Module):
    """The encoder, its pre-training heads and the task heads fine-tuned on top (``journeymap.models._multitask``)."""

    def __init__(self, config: EncoderConfig, item_row: np.ndarray, seen: np.ndarray,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__()
        self.encoder = EventEncoder(config, item_row, seen, item_text)
        self.pretext = PretextHeads(config)
        self.tasks = nn.ModuleDict()


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def item_rows(counts: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item token: its embedding row (its own, or the unknown item's for one seen under
    ``min_count`` times), and whether it can be a training target (the missing and unknown items,
    and every item with a training event)."""
    own = np.arange(FIRST_VALUE, FIRST_VALUE + len(counts))
    rows = np.r_[np.arange(FIRST_VALUE), np.where(counts >= min_count, own, UNKNOWN)].astype(np.int64)
    seen = np.r_[np.arange(FIRST_VALUE) >= MISSING, counts > 0]
    return rows, seen


# -- batches -------------------------------------------------------------------------------------
def windows(tokens: Tokens, max_len: int) -> np.ndarray:
    """Each stream cut into windows of at most ``max_len`` positions, from its start: (n_windows, 2) [start, stop)."""
    lengths = np.diff(tokens.indptr)
    pieces = np.maximum(1, -(-lengths // max_len))
    stream = np.repeat(np.arange(len(lengths)), pieces)
    offset = (np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * max_len
    start = tokens.indptr[:-1][stream] + offset
    stop = np.minimum(start + max_len, tokens.indptr[1:][stream])
    return np.column_stack([start, stop])


def last_windows(tokens: Tokens, max_len: int) -> np.ndarray:
    """Each stream's last ``max_len`` positions, for predicting after its last event: (n_streams, 2)."""
    stop = tokens.indptr[1:]
    return np.column_stack([np.maximum(tokens.indptr[:-1], stop - max_len), stop])


def batches(spans: np.ndarray, budget: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Windows grouped by length into batches of about ``budget`` padded positions; shuffled given ``rng``."""
    lengths = spans[:, 1] - spans[:, 0]
    order = np.argsort(lengths, kind="stable")
    if rng is not None:  # shuffle within equal lengths too, so batches differ between epochs
        order = np.lexsort((rng.random(len(order)), lengths))
    groups, current, widest = [], [], 0
    for i in order.tolist():
        widest_next = max(widest, int(lengths[i]))
        if current and widest_next * (len(current) + 1) > budget:
            groups.append(np.asarray(current))
            current, widest_next = [], int(lengths[i])
        current.append(i)
        widest = widest_next
    if current:
        groups.append(np.asarray(current))
    if rng is not None:
        rng.shuffle(groups)
    return groups


def collate(tokens: Tokens, spans: np.ndarray, fields: tuple[str, ...], device: torch.device) -> dict[str, torch.Tensor]:
    """The chosen windows as right-padded tensors (B, T): inputs padded with 0, targets with -1."""
    lengths = spans[:, 1] - spans[:, 0]
    T = int(lengths.max())
    rows = np.repeat(np.arange(len(spans)), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = np.repeat(spans[:, 0], lengths) + cols
    out = {}
    for name in fields:
        padded = np.full((len(spans), T), 0 if name in INPUTS else -1, dtype=np.int64)
        padded[rows, cols] = getattr(tokens, name)[flat]
        out[name] = torch.from_numpy(padded).to(device)
    out["length"] = torch.from_numpy(lengths).to(device)
    return out


# -- training ------------------------------------------------------------------------------------
def masked_cross_entropy(logits_of: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor,
                         target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the positions with a target (>= 0), scoring only those: (loss, cases)."""
    where = target >= 0
    cases = int(where.sum())
    if not cases:
        return h.new_zeros(()), 0
    return F.cross_entropy(logits_of(h[where]), target[where], reduction="sum"), cases


def censored_cross_entropy(logits_of: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor,
                           at_least: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed -log P(class >= at_least) over the positions with a bound (>= 0): a right-censored target."""
    where = at_least >= 0
    cases = int(where.sum())
    if not cases:
        return h.new_zeros(()), 0
    logits = logits_of(h[where])  # (N, classes)
    above = torch.arange(logits.shape[1], device=logits.device)[None, :] >= at_least[where][:, None]
    kept = logits.masked_fill(~above, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(kept, dim=1)).sum(), cases


def pretext_loss(net: BehaviourNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, tuple[float, int]]]:
    """Mean cross-entropy of the next event's item, type and gap; also each part's (sum, cases).

    The gap after a user's last event is censored by the store's end: it counts as "at least
    this long", so leaving for good is part of what pre-training learns.
    """
    h = net.encoder(batch)  # (B, T, C)
    table = net.encoder.item_table()  # (n_items, C)
    heads = net.pretext
    exact, exact_cases = masked_cross_entropy(heads.gap, h, batch["next_gap"])
    censored, censored_cases = censored_cross_entropy(heads.gap, h, batch["gap_at_least"])
    parts = {
        "item": masked_cross_entropy(lambda x: heads.item(x, table, net.encoder.seen), h, batch["next_item_any"]),
        "kind": masked_cross_entropy(heads.kind, h, batch["next_kind"]),
        "gap": (exact + censored, exact_cases + censored_cases),
    }
    loss = sum(total / max(cases, 1) for total, cases in parts.values())
    return loss, {k: (float(total.detach()), cases) for k, (total, cases) in parts.items()}


def train_loop(net: nn.Module, groups: list[dict[str, Any]], epoch_batches: Callable[[int], list[dict[str, torch.Tensor]]],
               loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
               validate: Callable[[], float] | None, *, epochs: int, patience: int, verbose: bool,
               label: str) -> dict[str, Any]:
    """AdamW over ``groups`` for up to ``epochs``, keeping the weights of the best validation loss.

    ``epoch_batches(epoch)`` gives the epoch's batches; ``validate()`` the validation loss (lower is
    better). Training stops when it has not improved for ``patience`` epochs; without validation
    every epoch runs and the last weights are kept. The bar on stderr shows the running loss.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    history: dict[str, Any] = {"loss": [], "validation": [], "seconds": [], "best_epoch": None, "stopped_early": False}
    best, best_state, waited = math.inf, None, 0
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not verbose or not console.is_terminal) as bar:
        task = bar.add_task(label, total=1, loss=float("nan"))
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            net.train()
            plan = epoch_batches(epoch)
            bar.reset(task, total=len(plan), description=f"{label} epoch {epoch}/{epochs}", loss=float("nan"))
            total, count = 0.0, 0
            for batch in plan:
                loss = loss_of(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
                value = float(loss.detach())
                if not np.isfinite(value):
                    raise JourneymapError(f"{label} diverged in epoch {epoch} (the loss became {value}); "
                                          "lower the learning_rate.")
                total, count = total + value, count + 1
                bar.update(task, advance=1, loss=total / count)
            history["loss"].append(total / max(count, 1))
            score = None
            if validate is not None:
                net.eval()
                with torch.no_grad():
                    score = float(validate())
            history["validation"].append(score)
            history["seconds"].append(time.perf_counter() - started)
            improved = score is not None and score < best
            if improved:
                best, waited, history["best_epoch"] = score, 0, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif score is not None:
                waited += 1
            if verbose and console.is_terminal:
                shown = "" if score is None else f", validation loss {score:.4f}{' (best)' if improved else ''}"
                bar.console.print(f"{label} epoch {epoch}: loss {history['loss'][-1]:.4f}{shown} "
                                  f"({history['seconds'][-1]:.1f} s)", highlight=False)
            if score is not None and waited >= patience:
                history["stopped_early"] = epoch < epochs
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        history["best_epoch"] = len(history["loss"])
    history["epochs"] = len(history["loss"])
    return history


def pretrain(net: BehaviourNet, tokens: Tokens, validation: Tokens | None, *, epochs: int, patience: int,
             learning_rate: float, batch_tokens: int, seed: int, device: torch.device, verbose: bool) -> dict[str, Any]:
    """Self-supervised pre-training of ``net``'s encoder and pretext heads on every stream of ``tokens``."""
    max_len = net.encoder.config.max_len
    fields = INPUTS + PRETEXT_TARGETS
    spans = windows(tokens, max_len)
    rng = np.random.default_rng(seed)

    def epoch_batches(epoch: int) -> list[dict[str, torch.Tensor]]:
        return [collate(tokens, spans[b], fields, device) for b in batches(spans, batch_tokens, rng)]

    validate = None
    if validation is not None and len(validation):
        held = windows(validation, max_len)
        held_batches = [collate(validation, held[b], fields, device) for b in batches(held, batch_tokens)]

        def validate() -> float:
            sums: dict[str, list[float]] = {}
            for batch in held_batches:
                for k, (total, cases) in pretext_loss(net, batch)[1].items():
                    acc = sums.setdefault(k, [0.0, 0])
                    acc[0] += total
                    acc[1] += cases
            return sum(total / max(cases, 1) for total, cases in sums.values())

    groups = [{"params": [p for p in net.parameters() if p.requires_grad], "lr": learning_rate}]
    return train_loop(net, groups, epoch_batches, lambda batch: pretext_loss(net, batch)[0], validate, epochs=epochs,
                      patience=patience, verbose=verbose, label="pre-training")


# -- checkpoints ---------------------------------------------------------------------------------
# to_arrays / from_arrays: shared with GRU4Rec and SASRec (journeymap.models._torch).
