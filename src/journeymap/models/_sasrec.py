"""SASRec (Kang & McAuley 2018): a causal transformer over the session, trained with full cross-entropy.

The network is the paper's: item embeddings (scaled by sqrt(hidden)) plus learned position
embeddings, dropout, ``blocks`` pre-norm transformer blocks with causal self-attention, a final
layer norm, and scores as the dot product with the (shared) item embeddings. Training follows
the later finding that SASRec is strongest with a softmax over the whole catalogue at every
position instead of one sampled negative with binary cross-entropy (Klenitskiy & Vasilev 2023;
Petrov & Macdonald 2023): every click of a session predicts the next one against all items.

Sessions longer than ``max_len + 1`` are cut into consecutive windows (every click is a target
once); a prefix is scored from its last ``max_len`` known items. Mini-batches group windows of
similar length (little padding), in a seeded shuffled order; Adam; early stopping on MRR@20 of
the most recent ``validation`` share of the sessions, then (``refit``) training anew on all of them.

Optional inputs, added to the item embedding: the event type of each click (used when ``fit``
gets ``event_types``) and the time since the previous click in log2 buckets (``time_gaps=True``,
with ``times``). Score prefixes with the same inputs the model was fitted with.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from journeymap.exceptions import JourneymapError
from journeymap.models._base import SequenceModel, top_k
from journeymap.models._data import Encoded, Vocabulary, check_sequences

GAP_BUCKETS = 23  # 0 unknown, 1 first click of the session, 2 + floor(log2(1 + seconds)) up to about 12 days


class SASRec(SequenceModel):
    """Self-attentive next-item model over sessions, trained with a softmax over every item.

    ``hidden``: embedding and model width; ``blocks`` transformer blocks of ``heads`` attention
    heads; ``max_len``: the most recent clicks it reads. ``dropout`` on embeddings, attention and
    feed-forward layers. ``epochs`` at most, stopping after ``patience`` epochs without a better
    MRR@20 on the most recent ``validation`` share of the sessions (0: no hold-out); with ``refit``
    a new network then trains on every session for the best number of epochs.
    ``time_gaps``: add the time since the previous click (``fit(..., times=...)``).
    ``repeat``: add to an item's score a learned bonus for each time it is already in the prefix,
    by how many clicks ago (a copy mechanism; in session logs many next clicks return to an item).
    With a validation share, the trained bonus is then shifted by the one amount that best predicts
    the held-out sessions, the validation run's network fixed, as ``GRU4Rec(repeat=True)`` does
    (``history_["calibrated"]`` keeps it as trained and as fitted).
    ``threads``: torch CPU threads while fitting and scoring (None: torch's default).
    """

    name = "sasrec"
    _state = ("weights_", "layout_", "event_types_", "history_")

    def __init__(self, hidden: int = 64, blocks: int = 2, heads: int = 1, max_len: int = 50, dropout: float = 0.2,
                 learning_rate: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 128, epochs: int = 50,
                 patience: int = 3, validation: float = 0.1, refit: bool = True, time_gaps: bool = False,
                 repeat: bool = False, seed: int = 0, device: str = "auto", threads: int | None = 1,
                 verbose: bool = True) -> None:
        self.hidden = hidden
        self.blocks = blocks
        self.heads = heads
        self.max_len = max_len
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.validation = validation
        self.refit = refit
        self.time_gaps = time_gaps
        self.repeat = repeat
        self.seed = seed
        self.device = device
        self.threads = threads
        self.verbose = verbose

    def _check_params(self) -> None:
        from journeymap.models import _torch as T

        T.check_training_params(self)
        for attr in ("hidden", "blocks", "heads", "max_len"):
            T.check_int(self, attr)
        if self.hidden % self.heads:
            raise JourneymapError(f"SASRec's 'hidden' ({self.hidden}) must be a multiple of 'heads' ({self.heads}): "
                                  "each head attends over hidden / heads dimensions.")
        T.check_probability(self, "dropout")
        T.check_number(self, "weight_decay")
        T.check_number(self, "learning_rate", zero=False)
        for attr in ("time_gaps", "repeat"):
            if not isinstance(getattr(self, attr), bool):
                raise JourneymapError(f"SASRec's '{attr}' must be True or False. Got {getattr(self, attr)!r}.")

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, sequences: Sequence[Sequence[Any]], event_types: Sequence[Sequence[str]] | None = None,
            times: Sequence[Sequence[Any]] | None = None) -> SASRec:
        """Learn from training sessions, oldest first (the most recent ones validate).

        ``event_types`` (one per click) are embedded when given; ``times`` (seconds or datetimes,
        one per click) are needed with ``time_gaps=True``.
        """
        sequences = check_sequences(sequences, event_types, "training sequences")
        self._check_params()
        if self.time_gaps and times is None:
            raise JourneymapError("SASRec(time_gaps=True) reads the time between clicks: give fit(sequences, "
                                  "times=...) with one time per click, or set time_gaps=False.")
        self.vocab_ = Vocabulary.build(sequences)
        self.event_types_ = sorted({str(t) for seq in event_types for t in seq}) if event_types is not None else []
        encoded = self.vocab_.encode(sequences)
        self._train(encoded, self._side(sequences, event_types, times))
        return self

    def _train(self, sessions: Encoded, side: tuple[np.ndarray, ...]) -> None:
        from journeymap.models import _torch as T

        def train_once(train: Encoded, held: Encoded | None, epochs: int, label: str) -> tuple[Any, dict]:
            cut = train.indptr[-1]  # the held-out tail's clicks follow the training ones
            return self._train_once(train, tuple(a[:cut] for a in side), held, tuple(a[cut:] for a in side),
                                    epochs, label)

        def calibrate(net: Any, held: Encoded) -> dict[str, Any]:
            tail = len(held.items)  # the held-out sessions are the last ones: so are their clicks' side inputs
            held_side = tuple(a[len(a) - tail:] for a in side)
            return {"repeat_bias.weight": _calibrate(net, held, held_side, self.max_len, len(self.vocab_))}

        net, self.history_ = T.search_then_refit(train_once, sessions, self, calibrate if self.repeat else None)
        self.weights_, self.layout_ = T.to_arrays(net)
        self._net = net.eval()

    def _train_once(self, train: Encoded, train_side: tuple[np.ndarray, ...], held: Encoded | None,
                    held_side: tuple[np.ndarray, ...], epochs: int, label: str) -> tuple[Any, dict[str, Any]]:
        """A new network trained on ``train`` for up to ``epochs``, stopping early on ``held`` if given."""
        import torch
        import torch.nn.functional as F

        from journeymap.models import _torch as T

        n_items, device = len(self.vocab_), T.device(self.device)
        windows = _windows(train, self.max_len)
        if not len(windows[0]):
            raise JourneymapError("SASRec needs at least one training session with two or more items"
                                  f"{' outside the validation share' if held is not None else ''}.")
        rng = np.random.default_rng(self.seed)
        with T.session(self.threads, self.seed):
            net = self._build().to(device)
            optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)

            # Batches group windows of one length, so a mean per batch would weigh a click of a short
            # session far above one of a long session; every click weighs the same instead.
            per_batch = self.batch_size * float((windows[1] - 1).mean())  # targets in an average batch

            def epoch_steps(epoch: int) -> Iterator[torch.Tensor]:
                for batch in _batches(windows, self.batch_size, rng):
                    inputs, targets, extra = _gather(train, train_side, windows, batch, n_items, device)
                    hidden = _encode(net, inputs, *extra)  # (B, T, C)
                    valid = targets >= 0
                    logits = _logits(net, hidden[valid], inputs, *valid.nonzero(as_tuple=True), n_items)
                    yield F.cross_entropy(logits, targets[valid], reduction="sum") / per_batch

            validate = None
            if held is not None:
                validate = lambda: _validate(net, held, held_side, self.max_len, n_items, device)  # noqa: E731
            history = T.train(net, optimizer, epoch_steps, math.ceil(len(windows[0]) / self.batch_size), validate,
                              epochs=epochs, patience=self.patience, verbose=self.verbose, label=label)
        return net, history

    def _build(self) -> Any:
        return _network(len(self.vocab_), self.hidden, self.blocks, self.heads, self.max_len, self.dropout,
                        len(self.event_types_), self.time_gaps, getattr(self, "repeat", False))

    # -- scoring with the optional inputs -------------------------------------------------------------
    def score_items(self, prefixes: Sequence[Sequence[Any]], event_types: Sequence[Sequence[str]] | None = None,
                    times: Sequence[Sequence[Any]] | None = None) -> np.ndarray:
        """A score for every known item after each prefix: (n_prefixes, n_items) (see ``SequenceModel``)."""
        self._check_fitted()
        prefixes = check_sequences(prefixes, event_types, "prefixes")
        return self._score(self.vocab_.encode(prefixes), self._side(prefixes, event_types, times))

    def predict_next(self, prefixes: Sequence[Sequence[Any]], k: int = 20,
                     event_types: Sequence[Sequence[str]] | None = None,
                     times: Sequence[Sequence[Any]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` next items after each prefix (see ``SequenceModel.predict_next``)."""
        self._check_fitted()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise JourneymapError(f"k must be a positive number of items to return. Got {k!r}.")
        prefixes = check_sequences(prefixes, event_types, "prefixes")
        encoded = self.vocab_.encode(prefixes)
        side = self._side(prefixes, event_types, times)
        k = min(int(k), len(self.vocab_))
        order = np.zeros((len(encoded), k), dtype=np.int64)
        scores = np.zeros((len(encoded), k))
        step = self.batch_rows()
        for start in range(0, len(encoded), step):
            lo, hi = encoded.indptr[start], encoded.indptr[min(start + step, len(encoded))]
            chunk = self._score(encoded[start:start + step], tuple(a[lo:hi] for a in side))
            top = top_k(chunk, k)
            order[start:start + len(top)] = top
            scores[start:start + len(top)] = np.take_along_axis(chunk, top, axis=1)
        return self.vocab_.items[order], scores

    def _score(self, prefixes: Encoded, side: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        import torch

        from journeymap.models import _torch as T

        net = self._network()
        n_items = len(self.vocab_)
        device = next(net.parameters()).device
        if side is None:
            side = self._side_unknown(len(prefixes.items))
        items, lengths, extra = T.known_only(prefixes, self.max_len, pad=n_items, side=side)
        with T.session(self.threads), torch.no_grad():
            hidden = _encode(net, *(torch.from_numpy(a).to(device) for a in (items, *extra)))  # (n, T, C)
            last = torch.from_numpy(np.maximum(lengths - 1, 0)).to(device)
            rows = torch.arange(len(items), device=device)
            items_t = torch.from_numpy(items).to(device)
            scores = _logits(net, hidden[rows, last], items_t, rows, last, n_items).double().cpu().numpy()  # (n, n_items)
        scores[lengths == 0] = T.log_popularity(self.vocab_.counts)
        return scores

    def _network(self) -> Any:
        """The trained network, rebuilt from the checkpoint's arrays on first use after ``load``."""
        if getattr(self, "_net", None) is None:
            from journeymap.models import _torch as T

            self._net = T.from_arrays(self._build(), self.weights_, self.layout_).to(T.device(self.device)).eval()
        return self._net

    def _side(self, sequences: list, event_types: Sequence[Sequence[str]] | None,
              times: Sequence[Sequence[Any]] | None) -> tuple[np.ndarray, ...]:
        """The optional inputs the model uses, one int64 per click: (type codes,) and/or (gap buckets,)."""
        total = sum(len(s) for s in sequences)
        side = []
        if self.event_types_:
            codes = {t: i + 1 for i, t in enumerate(self.event_types_)}  # 0: unknown or not given
            side.append(np.zeros(total, dtype=np.int64) if event_types is None else
                        np.fromiter((codes.get(str(t), 0) for seq in event_types for t in seq), np.int64, total))
        if self.time_gaps:
            side.append(np.zeros(total, dtype=np.int64) if times is None else _gap_buckets(sequences, times))
        return tuple(side)

    def _side_unknown(self, total: int) -> tuple[np.ndarray, ...]:
        return tuple(np.zeros(total, dtype=np.int64) for _ in range(bool(self.event_types_) + bool(self.time_gaps)))


def _gap_buckets(sequences: list, times: Sequence[Sequence[Any]]) -> np.ndarray:
    """Time since the previous click of the session, in log2 buckets (see ``GAP_BUCKETS``): (total,)."""
    if len(times) != len(sequences) or any(len(t) != len(s) for t, s in zip(times, sequences)):
        raise JourneymapError("times must give one time per item of the sequences (the same shape as the item lists).")
    out = []
    for seq in times:
        seconds = np.asarray([t.timestamp() if isinstance(t, datetime) else float(t) for t in seq], dtype=np.float64)
        if len(seconds) == 0:
            continue
        gaps = np.maximum(np.diff(seconds), 0.0)
        out.append(np.r_[1, 2 + np.minimum(np.floor(np.log2(1.0 + gaps)), GAP_BUCKETS - 3)].astype(np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# -- the network (torch is imported here, not at module import) ------------------------------------
def _network(n_items: int, hidden: int, blocks: int, heads: int, max_len: int, dropout: float,
             n_types: int, time_gaps: bool, repeat: bool = False) -> Any:
    """Embeddings, causal pre-norm transformer blocks, final norm; initialized N(0, 0.02), zero biases."""
    import torch
    from torch import nn

    layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=4 * hidden, dropout=dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    modules = {
        "item_embedding": nn.Embedding(n_items + 1, hidden, padding_idx=n_items),  # the last row pads
        "position_embedding": nn.Embedding(max_len, hidden),
        "dropout": nn.Dropout(dropout),
        "blocks": nn.TransformerEncoder(layer, blocks, norm=nn.LayerNorm(hidden), enable_nested_tensor=False),
    }
    if n_types:
        modules["type_embedding"] = nn.Embedding(n_types + 1, hidden)  # 0: unknown type
    if time_gaps:
        modules["gap_embedding"] = nn.Embedding(GAP_BUCKETS, hidden)
    if repeat:
        modules["repeat_bias"] = nn.Embedding(max_len, 1)  # by clicks ago: 0 is the last click
    net = nn.ModuleDict(modules)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if parameter.dim() > 1:
                nn.init.normal_(parameter, std=0.02)
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(parameter)
            else:
                nn.init.zeros_(parameter)
        net["item_embedding"].weight[n_items].zero_()
        if repeat:
            net["repeat_bias"].weight.zero_()  # starts as plain SASRec
    return net


def _logits(net: Any, states: Any, items: Any, rows: Any, steps: Any, n_items: int) -> Any:
    """Scores over every item (P, n_items) for the states (P, C) at positions (rows, steps) of the
    (B, T) inputs ``items``; with ``repeat_bias``, plus its bonus for each earlier click of an item."""
    import torch

    logits = states @ net["item_embedding"].weight[:n_items].T
    if "repeat_bias" not in net:
        return logits
    seen = items[rows]  # (P, T): each position's whole window; only clicks up to the position count
    ago = steps[:, None] - torch.arange(items.shape[1], device=items.device)[None, :]
    counted = (ago >= 0) & (seen < n_items)
    bonus = net["repeat_bias"].weight[ago.clamp(min=0), 0] * counted
    return logits.scatter_add(1, torch.where(counted, seen, 0), bonus)


def _encode(net: Any, items: Any, *extra: Any) -> Any:
    """Right-padded item indices (B, T) and optional (types, gaps) (B, T) -> one state per position (B, T, C)."""
    import torch

    length = items.shape[1]
    hidden = net["item_embedding"].weight.shape[1]
    x = net["item_embedding"](items) * math.sqrt(hidden) + net["position_embedding"].weight[:length]  # (B, T, C)
    names = [n for n in ("type_embedding", "gap_embedding") if n in net]
    for name, values in zip(names, extra):
        x = x + net[name](values)
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=items.device), diagonal=1)  # (T, T)
    # Padding sits after every real click, so the causal mask alone keeps it out of real positions.
    return net["blocks"](net["dropout"](x), mask=causal, is_causal=True)


# -- training windows and batches ------------------------------------------------------------------
def _windows(sessions: Encoded, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every session with two or more clicks cut into windows of at most ``max_len + 1`` clicks.

    Returns ``(start, length)`` of each window in ``sessions.items``; consecutive windows share one
    click, so every click after a session's first is a target exactly once.
    """
    lengths = sessions.lengths
    usable = np.flatnonzero(lengths >= 2)
    pieces = np.maximum(1, np.ceil((lengths[usable] - 1) / max_len)).astype(np.int64)
    owner = np.repeat(usable, pieces)
    piece = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    start = sessions.indptr[owner] + piece * max_len
    length = np.minimum(max_len + 1, sessions.indptr[owner + 1] - start)
    return start, length


def _batches(windows: tuple[np.ndarray, np.ndarray], batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Window numbers in mini-batches of similar length, shuffled within lengths and in batch order."""
    order = rng.permutation(len(windows[0]))
    order = order[np.argsort(windows[1][order], kind="stable")]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for b in rng.permutation(len(batches)):
        yield batches[b]


def _gather(sessions: Encoded, side: tuple[np.ndarray, ...], windows: tuple[np.ndarray, np.ndarray],
            batch: np.ndarray, n_items: int, device: Any) -> tuple[Any, Any, list[Any]]:
    """Inputs (B, T) padded with ``n_items``, targets (B, T) with -1 where there is none, side inputs (B, T)."""
    import torch

    start, length = windows[0][batch], windows[1][batch]
    steps = int(length.max()) - 1
    index = start[:, None] + np.arange(steps + 1)[None, :]  # (B, T + 1)
    inside = np.arange(steps + 1)[None, :] < length[:, None]
    index = np.where(inside, index, 0)
    clicks = np.where(inside, sessions.items[index], -1)
    inputs = np.where(inside[:, :-1], clicks[:, :-1], n_items)
    extra = [torch.from_numpy(np.where(inside[:, :-1], a[index[:, :-1]], 0)).to(device) for a in side]
    return torch.from_numpy(inputs).to(device), torch.from_numpy(clicks[:, 1:]).to(device), extra


def _held_out(net: Any, held: Encoded, side: tuple[np.ndarray, ...], max_len: int, n_items: int,
              device: Any) -> Iterator[tuple[Any, Any, Any, Any, Any]]:
    """Every next click of the held-out sessions, 256 windows at a time: the states before it
    (cases, C), the padded inputs (B, T), each case's row and position in them, and its label (cases,)."""
    windows = _windows(held, max_len)
    for lo in range(0, len(windows[0]), 256):
        batch = np.arange(lo, min(lo + 256, len(windows[0])))
        inputs, targets, extra = _gather(held, side, windows, batch, n_items, device)
        hidden = _encode(net, inputs, *extra)
        valid = targets >= 0
        yield hidden[valid], inputs, *valid.nonzero(as_tuple=True), targets[valid]


def _validate(net: Any, held: Encoded, side: tuple[np.ndarray, ...], max_len: int, n_items: int, device: Any) -> float:
    """MRR@20 (percent) over every next click of the held-out sessions, ranked over all items."""
    from journeymap.models import _torch as T

    total, cases = 0.0, 0
    for states, inputs, rows, steps, labels in _held_out(net, held, side, max_len, n_items, device):
        s, n = T.mrr_at(_logits(net, states, inputs, rows, steps, n_items), labels)
        total, cases = total + s, cases + n
    return 100.0 * total / max(cases, 1)


def _calibrate(net: Any, held: Encoded, side: tuple[np.ndarray, ...], max_len: int, n_items: int) -> Any:
    """The shift of the repeat bonus that best fits every next click of the held-out sessions, the
    network fixed (as ``GRU4Rec``'s; see ``_torch.copy_bonus_shift``): a scalar tensor."""
    import torch

    from journeymap.models import _torch as T

    weight = net["repeat_bias"].weight  # (max_len, 1)
    device = weight.device

    def cases() -> Iterator[tuple[Any, Any, Any]]:
        for states, inputs, rows, steps, labels in _held_out(net, held, side, max_len, n_items, device):
            scores = states @ net["item_embedding"].weight[:n_items].T  # (cases, n_items), no bonus
            back = steps[:, None] - torch.arange(max_len, device=device)[None, :]  # (cases, max_len): clicks ago
            seen = inputs[rows[:, None], back.clamp(min=0)]
            yield scores, torch.where((back >= 0) & (seen < n_items), seen, -1), labels  # padding is n_items

    return torch.tensor(T.copy_bonus_shift(cases(), weight[:, 0]))  # the cases are read without gradients
