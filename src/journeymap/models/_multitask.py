"""The behaviour model: pre-train on all behaviour, then fine-tune task heads and calibrate them.

``BehaviourModel`` keeps the next-item contract (``fit`` / ``predict_next`` / ``recommend`` /
``save`` / ``load``) and adds ``fit_store`` and ``predict_user``: next items, next-action
probabilities (every event type and ``leave``), and the propensities to buy in this session and
to churn (no return within ``churn_days``); ``user_outputs`` gives every user's embedding and
propensities at once (the profiles' model fields). Four heads sit on the pre-trained encoder:

* next item: full softmax over the catalogue, tied to the item embeddings;
* next action: softmax over event types and ``leave``, temperature-scaled;
* purchase and churn: logistic, then calibrated (Platt by default) on the validation users.

Fine-tuning weighs each task's loss by the loss of predicting its base rates, so the tasks count
alike whatever their scale, and early stopping watches the same sum on the validation users.
Torch is imported only when a model fits or predicts, so this module loads without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from journeymap.events.vocabulary import EVENT_TYPES
from journeymap.exceptions import JourneymapError
from journeymap.models._base import SequenceModel
from journeymap.models._data import Encoded, Vocabulary, check_sequences
from journeymap.models._events import (
    FIRST_VALUE,
    LEAVE,
    PURCHASE,
    EventLog,
    Field,
    Tokens,
    labelled,
    log_from_events,
    log_from_sequences,
    read_event_log,
    split_users,
    tokenize,
)

TASKS = ("next_item", "next_action", "purchase", "churn")
BINARY = ("purchase", "churn")
CALIBRATIONS = ("platt", "temperature", "isotonic", "none")
MIN_CALIBRATION_CASES = 10  # of each class: fewer leaves a propensity uncalibrated (said so in the report)


# -- calibration -----------------------------------------------------------------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Calibrator:
    """Logits -> calibrated probabilities, fitted on held-out cases.

    ``platt``: sigmoid(a z + b); ``temperature``: sigmoid(z / T), or softmax(z / T) for several
    classes; ``isotonic``: a monotone step function of sigmoid(z); ``none``: sigmoid / softmax as is.
    """

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()  # isotonic thresholds (of the raw probability) and their values
    y: tuple[float, ...] = ()
    note: str = ""

    @classmethod
    def fit(cls, logits: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
        from scipy.optimize import minimize, minimize_scalar

        logits = np.asarray(logits, dtype=np.float64)
        y = np.asarray(y)
        if method == "none":
            return cls()
        if logits.ndim == 2:  # several classes: one temperature whatever the method
            def nll(log_t: float) -> float:
                p = _softmax(logits / np.exp(log_t))
                return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-15, None)).mean())

            if len(y) < MIN_CALIBRATION_CASES:
                return cls(note=f"{len(y)} validation cases: too few to calibrate, kept raw")
            t = float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))
            return cls("temperature", a=1.0 / t)
        positives, negatives = int(y.sum()), int(len(y) - y.sum())
        if min(positives, negatives) < MIN_CALIBRATION_CASES:
            return cls(note=f"{positives} positive and {negatives} negative validation cases: too few to calibrate "
                            f"(at least {MIN_CALIBRATION_CASES} of each), kept raw")
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip").fit(_sigmoid(logits), y)
            return cls("isotonic", x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_)))

        def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
            a, b = params if method == "platt" else (params[0], 0.0)
            p = _sigmoid(a * logits + b)
            value = -np.mean(y * np.log(np.clip(p, 1e-15, None)) + (1 - y) * np.log(np.clip(1 - p, 1e-15, None)))
            grad_a, grad_b = np.mean((p - y) * logits), np.mean(p - y)
            return float(value), np.array([grad_a, grad_b] if method == "platt" else [grad_a])

        start = np.array([1.0, 0.0] if method == "platt" else [1.0])
        found = minimize(loss, start, jac=True, method="L-BFGS-B").x
        return cls(method, a=float(found[0]), b=float(found[1]) if method == "platt" else 0.0)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim == 2:
            return _softmax(logits * self.a)
        if self.method == "isotonic":
            return np.interp(_sigmoid(logits), self.x, self.y)
        return _sigmoid(self.a * logits + self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x), "y": list(self.y), "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(data["method"], data["a"], data["b"], tuple(data["x"]), tuple(data["y"]), data.get("note", ""))


# -- what the model says about a log ---------------------------------------------------------------
@dataclass
class Scored:
    """Predictions at every labelled position of a log, beside the labels (see ``BehaviourModel.score_log``)."""

    next_item_ranks: np.ndarray  # (n,) 1-based rank of the true next item among all items, inf if unknown
    next_item_ids: np.ndarray  # (n,) object: the true next item
    next_action: np.ndarray  # (m, n_actions) probabilities
    next_action_label: np.ndarray  # (m,) class index
    purchase: np.ndarray  # (p,) probability
    purchase_label: np.ndarray  # (p,) 0/1
    purchase_rows: np.ndarray  # (p,) row in the log of the event the cut follows
    churn: np.ndarray
    churn_label: np.ndarray
    churn_rows: np.ndarray
    actions: list[str]

    def metrics(self, k: int = 20, n_resamples: int = 0, seed: int = 0) -> dict[str, Any]:
        """P@k and MRR@k of the next item, accuracy and log-loss of the next action, and AUC, log-loss
        and calibration (ECE) of each propensity, with the cases and positives behind every figure."""
        from journeymap.evaluation import per_case, propensity_metrics

        out: dict[str, Any] = {"next_item": {"cases": len(self.next_item_ranks)}}
        if len(self.next_item_ranks):
            out["next_item"].update({f"P@{k}": float(per_case(self.next_item_ranks, f"P@{k}").mean() * 100),
                                     f"MRR@{k}": float(per_case(self.next_item_ranks, f"MRR@{k}").mean() * 100)})
        if len(self.next_action_label):
            p = self.next_action[np.arange(len(self.next_action_label)), self.next_action_label]
            out["next_action"] = {"cases": len(p), "accuracy": float((self.next_action.argmax(1) == self.next_action_label).mean()),
                                  "log_loss": float(-np.log(np.clip(p, 1e-15, None)).mean())}
        for task in BINARY:
            y = getattr(self, f"{task}_label")
            if len(y):
                out[task] = propensity_metrics(y, getattr(self, task), n_resamples=n_resamples, seed=seed).to_dict()
        return out


# -- the model -------------------------------------------------------------------------------------
class BehaviourModel(SequenceModel):
    """Pre-trained behaviour model with multi-task heads and calibrated propensities.

    ``fit_store(store)`` pre-trains the encoder on every user's event stream, fine-tunes the four
    heads on the same streams and calibrates the propensities on held-out users; ``pretrain`` and
    ``finetune`` do the two steps apart (fine-tuning on a few labelled users after pre-training on
    all). ``fit(sequences)`` is the next-item contract: each session its own stream, no times, so
    no churn head. ``tasks`` chooses the heads to fine-tune; a head whose labels the data lacks
    (churn without times) is left out, and ``heads_`` says which were trained.
    """

    name = "behaviour"
    _state = ("event_types_", "devices_", "channels_", "config_", "weights_", "layout_", "item_text_", "heads_",
              "calibration_", "pretrained_", "history_", "report_", "baselines_")

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 2, max_len: int = 64, dropout: float = 0.1,
                 min_count: int = 1, text_vectors: bool | str = False, context: bool = True, epochs: int = 20,
                 finetune_epochs: int = 20, patience: int = 2, learning_rate: float = 3e-3,
                 encoder_lr_scale: float = 0.3, batch_tokens: int = 4096, validation: float = 0.1,
                 calibration: str = "platt", churn_days: float = 7.0, tasks: str = ",".join(TASKS), seed: int = 0,
                 threads: int | None = 1, device: str = "auto", verbose: bool = True) -> None:
        self.dim = dim
        self.layers = layers
        self.heads = heads
        self.max_len = max_len
        self.dropout = dropout
        self.min_count = min_count
        self.text_vectors = text_vectors
        self.context = context
        self.epochs = epochs
        self.finetune_epochs = finetune_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.encoder_lr_scale = encoder_lr_scale
        self.batch_tokens = batch_tokens
        self.validation = validation
        self.calibration = calibration
        self.churn_days = churn_days
        self.tasks = tasks
        self.seed = seed
        self.threads = threads
        self.device = device
        self.verbose = verbose

    # -- parameters ------------------------------------------------------------------------------
    def _check_params(self) -> None:
        name = type(self).__name__
        for attr, least in (("dim", 1), ("layers", 1), ("heads", 1), ("max_len", 2), ("min_count", 1),
                            ("epochs", 0), ("finetune_epochs", 1), ("patience", 1), ("batch_tokens", 1), ("seed", 0)):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise JourneymapError(f"{name}'s '{attr}' must be a whole number >= {least}. Got {value!r}.")
        if self.dim % self.heads:
            raise JourneymapError(f"{name}'s 'dim' ({self.dim}) must be a multiple of 'heads' ({self.heads}).")
        for attr in ("learning_rate", "churn_days", "encoder_lr_scale"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise JourneymapError(f"{name}'s '{attr}' must be a positive number. Got {value!r}.")
        for attr in ("dropout", "validation"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise JourneymapError(f"{name}'s '{attr}' must be a number in [0, 1). Got {value!r}.")
        if self.calibration not in CALIBRATIONS:
            raise JourneymapError(f"{name}'s 'calibration' must be one of {', '.join(CALIBRATIONS)}. "
                                  f"Got {self.calibration!r}.")
        chosen = [t.strip() for t in str(self.tasks).split(",") if t.strip()]
        if not chosen or set(chosen) - set(TASKS):
            raise JourneymapError(f"{name}'s 'tasks' names the heads to fine-tune, comma-separated, from "
                                  f"{', '.join(TASKS)}. Got {self.tasks!r}.")
        if not isinstance(self.text_vectors, (bool, str)):
            raise JourneymapError(f"{name}'s 'text_vectors' is False, True (the default text encoder) or an encoder "
                                  f"path 'package.module:Class'. Got {self.text_vectors!r}.")

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, sequences: Sequence[Sequence[Any]], event_types: Sequence[Sequence[str]] | None = None) -> BehaviourModel:
        """The next-item contract: each session its own stream (no times, so no churn head)."""
        sequences = check_sequences(sequences, event_types, "training sequences")
        Vocabulary.build(sequences)  # the contract's errors: no items, or mixed id types
        if self.text_vectors:
            raise JourneymapError("Item text vectors come from a store's catalog; train with fit_store(store) "
                                  "(journeymap train --store) or leave text_vectors off.")
        return self.fit_log(log_from_sequences(sequences, event_types))

    def fit_store(self, store: str | Path, gap: str | timedelta | None = None, settings: Any = None) -> BehaviourModel:
        """Pre-train on every event of the store, fine-tune every head, calibrate on held-out users."""
        log = read_event_log(store, gap, settings)
        return self.fit_log(log, self._load_text(store) if self.text_vectors else None)

    def fit_log(self, log: EventLog, item_vectors: Any = None) -> BehaviourModel:
        """``pretrain(log)`` then ``finetune(log)``: every stream is both unlabelled and labelled data."""
        self._check_params()
        if self.epochs:
            self.pretrain(log, item_vectors)
        else:
            self._start(log, item_vectors)
        return self.finetune(log)

    def pretrain(self, log: EventLog, item_vectors: Any = None) -> BehaviourModel:
        """Self-supervised pre-training of the encoder on every stream of ``log`` (its vocabularies too).

        ``item_vectors`` (an ``ItemVectors``, when ``text_vectors`` is on) adds the catalogue's
        items without events to the vocabulary, so a new item can be predicted from its text.
        """
        from journeymap.models import _pretrain as P

        self._check_params()
        self._start(log, item_vectors)
        train, held = self._split(len(log))
        net = self._net()
        with P.torch_session(self.threads, self.seed):
            tokens = self._tokens(log)
            history = P.pretrain(net, _subset(tokens, train), _subset(tokens, held) if held is not None else None,
                                 epochs=self.epochs, patience=self.patience, learning_rate=self.learning_rate,
                                 batch_tokens=self.batch_tokens, seed=self.seed, device=self._device(),
                                 verbose=self.verbose)
        self.pretrained_ = True
        self.history_ = {"pretrain": history}
        self._store_weights()
        return self

    def finetune(self, log: EventLog, users: Sequence[int] | np.ndarray | None = None,
                 item_vectors: Any = None) -> BehaviourModel:
        """Fine-tune the task heads (and the encoder, more gently when pre-trained) on ``users`` of ``log``.

        ``users`` are stream indices of ``log`` (default: all). A model never pre-trained starts here
        from random weights: "from scratch". The propensities and the next action are calibrated on
        the held-out share (``validation``) of these users, and the report compares raw with calibrated.
        """
        from journeymap.models import _pretrain as P

        self._check_params()
        if not hasattr(self, "config_"):
            self._start(log, item_vectors)
        users = np.arange(len(log)) if users is None else np.asarray(users, dtype=np.int64)
        if not len(users):
            raise JourneymapError("finetune() needs at least one user (stream) to learn from.")
        sub = log.take(users)
        train, held = self._split(len(sub))
        net = self._net()
        with P.torch_session(self.threads, self.seed + 1):
            tokens = self._tokens(sub)
            fit_tokens = _subset(tokens, train)
            chosen = {t.strip() for t in self.tasks.split(",")}
            self.baselines_ = {task: loss if task in chosen else 0.0 for task, loss in
                               _baseline_losses(fit_tokens, len(self.vocab_), len(self.event_types_) + 1).items()}
            self.heads_ = [t for t in TASKS if self.baselines_.get(t)]
            if not self.heads_:
                raise JourneymapError("The training streams hold no labels to fine-tune on (no next items, actions, "
                                      "purchases or returns); give streams with at least two events.")
            net.tasks = task_heads(net.encoder.config, len(self.event_types_) + 1,
                                   net.pretext if self.pretrained_ else None).to(self._device())
            history = _finetune(self, net, fit_tokens, _subset(tokens, held) if held is not None else None)
            self._net_cache = net
            self.calibration_, self.report_ = {}, {"split": "validation", "users": 0}
            if held is not None:
                self._calibrate(sub.take(held))
        self.history_ = {**getattr(self, "history_", {}), "finetune": history}
        self._store_weights()
        return self

    # -- predicting ------------------------------------------------------------------------------
    def score_items(self, prefixes: Sequence[Sequence[Any]], event_types: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """A score (log-probability) for every known item as the next one after each prefix: (n, n_items)."""
        self._check_heads()
        prefixes = check_sequences(prefixes, event_types, "prefixes")
        return self._prefix_scores(prefixes, event_types)

    def predict_next(self, prefixes: Sequence[Sequence[Any]], k: int = 20,
                     event_types: Sequence[Sequence[str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` next items after each prefix (item ids, log-probabilities), best first."""
        from journeymap.models._base import top_k

        self._check_heads()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise JourneymapError(f"k must be a positive number of items to return. Got {k!r}.")
        prefixes = check_sequences(prefixes, event_types, "prefixes")
        k = min(int(k), len(self.vocab_))
        order = np.zeros((len(prefixes), k), dtype=np.int64)
        scores = np.zeros((len(prefixes), k))
        step = self.batch_rows()
        for start in range(0, len(prefixes), step):
            chunk = self._prefix_scores(prefixes[start:start + step],
                                        None if event_types is None else event_types[start:start + step])
            top = top_k(chunk, k)
            order[start:start + len(top)] = top
            scores[start:start + len(top)] = np.take_along_axis(chunk, top, axis=1)
        return self.vocab_.items[order], scores

    def _score(self, prefixes: Encoded) -> np.ndarray:
        """Scores of encoded prefixes (vocabulary indices, -1 unknown): the contract's hook."""
        rows = [prefixes.items[a:b] for a, b in zip(prefixes.indptr[:-1], prefixes.indptr[1:])]
        return self._prefix_scores([self.vocab_.items[r[r >= 0]].tolist() for r in rows], None)

    def _prefix_scores(self, prefixes: list[list[Any]], event_types: Sequence[Sequence[str]] | None) -> np.ndarray:
        if event_types is None:  # an unknown item alone carries no information: left out
            known = [self.vocab_.index_of(p) >= 0 if p else np.zeros(0, dtype=bool) for p in prefixes]
            prefixes = [[i for i, keep in zip(p, mask) if keep] for p, mask in zip(prefixes, known)]
        log = log_from_sequences(prefixes, event_types)
        h = self._last_states(log)
        return self._outputs(h, ("next_item",))["next_item"]

    def predict_user(self, events: Any, k: int = 20, gap: str | timedelta = timedelta(minutes=30)) -> dict[str, Any]:
        """What one user does next, from their events so far (an ``EventLog`` of one stream, a
        DataFrame, or a list of dicts with ``ts``, ``item_id``, ``event_type``, ``device``, ``channel``).

        Returns ``next_items`` (the top ``k`` with probabilities), ``next_action`` (probability of
        every event type and ``leave``), ``purchase_propensity`` (this session goes on to a
        purchase) and ``churn_propensity`` (if the session ends now, no return within
        ``churn_days``); a head the model was not trained for gives None.
        """
        self._check_heads()
        log = events if isinstance(events, EventLog) else log_from_events(events, gap)
        if len(log) == 0:  # a user with no events yet: what a new user does
            log = log_from_sequences([[]])
        if len(log) != 1:
            raise JourneymapError(f"predict_user takes one user's events; this log holds {len(log)} users.")
        out = self._outputs(self._last_states(log), ("next_item", *self.heads_), calibrated=True)
        scores = out["next_item"][0]
        k = min(int(k), len(self.vocab_))
        top = np.argsort(-scores, kind="stable")[:k]
        probabilities = np.exp(scores[top])
        session = log.sessions == log.sessions[-1] if log.events else np.zeros(0, dtype=bool)
        bought = bool(np.any(log.event_types[session] == PURCHASE))
        result = {
            "events": log.events,
            "sessions": int(len(np.unique(log.sessions))),
            "next_items": [{"item": str(i), "score": float(p)} for i, p in zip(self.vocab_.items[top].tolist(), probabilities)],
            "next_action": ({a: float(p) for a, p in zip(self.actions, out["next_action"][0])}
                            if "next_action" in out else None),
            "purchase_propensity": float(out["purchase"][0]) if "purchase" in out else None,
            "purchased_in_session": bought,
            "churn_propensity": float(out["churn"][0]) if "churn" in out else None,
            "churn_days": self.churn_days,
        }
        return result

    def user_outputs(self, log: EventLog, batch_users: int = 8192,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Every stream's state after its last event and the propensities there, many users at a time.

        Returns ``users`` (n,) the log's user ids (pseudonyms for a store's log); ``embedding``
        (n, dim) float32, the encoder's last hidden state (where the user stands in behaviour
        space); ``purchase_propensity`` and ``churn_propensity`` (n,) float64, calibrated: what
        ``predict_user`` gives for each stream alone, or None for a head the model lacks.
        ``batch_users`` streams are tokenized at a time (bounding memory); ``progress(done, total)``
        is called after each such batch.
        """
        self._check_heads()
        if isinstance(batch_users, bool) or not isinstance(batch_users, (int, np.integer)) or batch_users < 1:
            raise JourneymapError(f"batch_users must be a positive number of users. Got {batch_users!r}.")
        n = len(log)
        heads = tuple(t for t in BINARY if t in self.heads_)
        embedding = np.zeros((n, self.config_["dim"]), dtype=np.float32)
        out = {task: np.zeros(n) for task in heads}
        for start in range(0, n, int(batch_users)):
            stop = min(start + int(batch_users), n)
            part = log if (start, stop) == (0, n) else log.take(np.arange(start, stop))
            h = self._last_states(part)  # (users, C)
            embedding[start:stop] = h.numpy()
            for task, values in self._outputs(h, heads, calibrated=True).items():
                out[task][start:stop] = values
            if progress is not None:
                progress(stop, n)
        return {"users": np.asarray(log.users, dtype=object).copy(), "embedding": embedding,
                "purchase_propensity": out.get("purchase"), "churn_propensity": out.get("churn")}

    @property
    def actions(self) -> list[str]:
        """The next-action classes: every event type the model knows, then ``leave``."""
        self._check_fitted()
        return [*self.event_types_, LEAVE]

    def score_log(self, log: EventLog, calibrated: bool = True) -> Scored:
        """Predictions at every labelled position of ``log`` (held-out users, for evaluation)."""
        from journeymap.evaluation import label_ranks
        from journeymap.models import _pretrain as P

        self._check_heads()
        tokens = self._tokens(log)
        spans = P.windows(tokens, self.max_len)
        h = self._states(tokens, spans)  # (N, C), every position
        ranks, item_rows, actions, action_labels = [], [], [], []
        out: dict[str, list] = {t: [] for t in BINARY}
        labels = {t: [] for t in BINARY}
        rows = {t: [] for t in BINARY}
        heads = tuple(self.heads_)
        step = max(1, self.batch_rows())
        for start in range(0, len(h), step):
            stop = min(start + step, len(h))
            need = np.arange(start, stop)
            chunk = self._outputs(h[start:stop], heads, calibrated)
            target = tokens.next_item[need]
            if "next_item" in chunk and (target != -1).any():  # an item the model does not know counts as a miss
                ranks.append(label_ranks(chunk["next_item"][target != -1], np.maximum(target[target != -1], -1)))
                item_rows.append(tokens.next_item_row[need][target != -1])
            target = tokens.next_action[need]
            if "next_action" in chunk and (target >= 0).any():
                actions.append(chunk["next_action"][target >= 0])
                action_labels.append(target[target >= 0])
            for task in BINARY:
                target = getattr(tokens, task)[need]
                if task in chunk and (target >= 0).any():
                    out[task].append(chunk[task][target >= 0])
                    labels[task].append(target[target >= 0])
                    rows[task].append(tokens.row[need][target >= 0])

        def cat(parts: list, empty: tuple = (0,)) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(empty)

        def ints(parts: list) -> np.ndarray:
            return cat(parts).astype(np.int64)

        return Scored(
            next_item_ranks=cat(ranks), next_item_ids=log.items[ints(item_rows)],
            next_action=cat(actions, (0, len(self.actions))), next_action_label=ints(action_labels),
            purchase=cat(out["purchase"]), purchase_label=ints(labels["purchase"]), purchase_rows=ints(rows["purchase"]),
            churn=cat(out["churn"]), churn_label=ints(labels["churn"]), churn_rows=ints(rows["churn"]),
            actions=self.actions)

    # -- internals -------------------------------------------------------------------------------
    def _start(self, log: EventLog, item_vectors: Any) -> None:
        """Vocabularies and a freshly initialised network for ``log``."""
        has_item = np.array([i is not None for i in log.items], dtype=bool)
        if not has_item.any():
            raise JourneymapError("fit() needs at least one item; the training sequences are all empty.")
        vocab = Vocabulary.build([log.items[has_item].tolist()])
        text = np.zeros((0, 0), dtype=np.float32)
        if item_vectors is not None and len(item_vectors):
            known = set(vocab.items.tolist())
            extra = [i for i in item_vectors.item_ids if i not in known]  # catalogue items without events
            vocab = Vocabulary(np.r_[vocab.items, np.asarray(extra, dtype=object)].astype(vocab.items.dtype),
                               np.r_[vocab.counts, np.zeros(len(extra), dtype=np.int64)])
            text = np.zeros((len(vocab), item_vectors.matrix.shape[1]), dtype=np.float32)
            index = item_vectors.index
            for j, item in enumerate(vocab.items.tolist()):
                if str(item) in index:
                    text[j] = item_vectors.matrix[index[str(item)]]
        self.vocab_ = vocab
        self.item_text_ = text
        self.event_types_ = Field.build(log.event_types, EVENT_TYPES).values
        self.devices_ = Field.build(log.devices).values if self.context else []
        self.channels_ = Field.build(log.channels).values if self.context else []
        self.config_ = {"n_items": len(vocab) + FIRST_VALUE, "n_kinds": len(self.event_types_) + FIRST_VALUE,
                        "n_devices": len(self.devices_) + FIRST_VALUE, "n_channels": len(self.channels_) + FIRST_VALUE,
                        "text_dim": int(text.shape[1]), "dim": self.dim, "layers": self.layers, "heads": self.heads,
                        "max_len": self.max_len, "dropout": self.dropout}
        self.pretrained_ = False
        self.heads_, self.calibration_, self.report_, self.baselines_, self.history_ = [], {}, {}, {}, {}
        for attr in ("weights_", "layout_"):
            self.__dict__.pop(attr, None)
        from journeymap.models import _pretrain as P

        with P.torch_session(self.threads, self.seed):
            self._net_cache = self._build_net()

    def _build_net(self):
        from journeymap.models import _pretrain as P

        config = P.EncoderConfig(**self.config_)
        rows, seen = P.item_rows(self.vocab_.counts, self.min_count)
        text = None
        if config.text_dim:  # special tokens have no text
            text = np.r_[np.zeros((FIRST_VALUE, config.text_dim), dtype=np.float32), self.item_text_]
        net = P.BehaviourNet(config, rows, seen, text)
        if self.heads_:
            net.tasks = task_heads(config, len(self.event_types_) + 1, None)
        return net.to(self._device())

    def _net(self):
        """The network, rebuilt from the checkpoint's weights on first use after ``load``."""
        net = getattr(self, "_net_cache", None)
        if net is None:
            from journeymap.models import _pretrain as P

            net = P.from_arrays(self._build_net(), self.weights_, self.layout_)
            self._net_cache = net
        return net

    def _store_weights(self) -> None:
        from journeymap.models import _pretrain as P

        self.weights_, self.layout_ = P.to_arrays(self._net())

    def _device(self):
        from journeymap.models import _pretrain as P

        return P.pick_device(self.device)

    def _check_heads(self) -> None:
        self._check_fitted()
        if not self.heads_:
            from journeymap.models._base import NotFittedError

            raise NotFittedError(f"This {type(self).__name__} model is pre-trained but has no task heads yet; "
                                 "call finetune(log) (or fit) first.")

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Streams to train on and streams held out (for early stopping and calibration), seeded."""
        held = int(round(n * self.validation))
        if held < 1 or n - held < 1:
            return np.arange(n), None
        held_out, train = split_users(n, [self.validation], self.seed)
        return train, held_out

    def _tokens(self, log: EventLog) -> Tokens:
        devices = Field(self.devices_) if self.context else Field([])
        channels = Field(self.channels_) if self.context else Field([])
        return tokenize(log, self.vocab_, Field(self.event_types_), devices, channels, self.churn_days,
                        labelled(log, self.churn_days))

    def _states(self, tokens: Tokens, spans: np.ndarray, last_only: bool = False):
        """Encoder states of every position in ``spans`` (N, C), or of each span's last position (n_spans, C)."""
        import torch

        from journeymap.models import _pretrain as P

        net = self._net()
        net.eval()
        device = self._device()
        width = net.encoder.config.dim
        out = torch.zeros((len(spans) if last_only else len(tokens.item), width))
        with P.torch_session(self.threads, self.seed), torch.no_grad():
            for group in P.batches(spans, self.batch_tokens):
                batch = P.collate(tokens, spans[group], P.INPUTS, device)
                h = net.encoder(batch).float().cpu()  # (B, T, C)
                lengths = batch["length"].cpu()
                if last_only:
                    out[torch.as_tensor(group)] = h[torch.arange(len(group)), lengths - 1]
                else:
                    for j, (a, b) in enumerate(spans[group].tolist()):
                        out[a:b] = h[j, :b - a]
        return out

    def _last_states(self, log: EventLog):
        from journeymap.models import _pretrain as P

        tokens = self._tokens(log)
        return self._states(tokens, P.last_windows(tokens, self.max_len), last_only=True)

    def _outputs(self, h, heads: tuple[str, ...], calibrated: bool = True) -> dict[str, np.ndarray]:
        """The heads' outputs for states ``h`` (n, C): next-item log-probabilities (n, n_items),
        next-action probabilities (n, n_actions), propensities (n,)."""
        import torch

        from journeymap.models import _pretrain as P

        net = self._net()
        device = self._device()
        out: dict[str, np.ndarray] = {}
        with P.torch_session(self.threads, self.seed), torch.no_grad():
            h = h.to(device)
            for task in heads:
                if task not in net.tasks:
                    continue
                if task == "next_item":
                    logits = net.tasks[task](h, net.encoder.item_table())[:, FIRST_VALUE:]
                    out[task] = torch.log_softmax(logits.double(), dim=1).cpu().numpy()
                    continue
                logits = net.tasks[task](h).double().cpu().numpy()
                logits = logits[:, 0] if task in BINARY else logits
                calibrator = Calibrator.from_dict(self.calibration_[task]) if calibrated and task in self.calibration_ \
                    else Calibrator()
                out[task] = calibrator(logits)
        return out

    def _raw_logits(self, log: EventLog) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Raw logits and labels at every labelled position, per calibrated head."""
        import torch

        from journeymap.models import _pretrain as P

        tokens = self._tokens(log)
        h = self._states(tokens, P.windows(tokens, self.max_len))
        net = self._net()
        out = {}
        with P.torch_session(self.threads, self.seed), torch.no_grad():
            for task in ("next_action", *BINARY):
                if task not in self.heads_:
                    continue
                target = getattr(tokens, task)
                where = torch.as_tensor(target >= 0)
                logits = net.tasks[task](h[where].to(self._device())).double().cpu().numpy()
                out[task] = (logits[:, 0] if task in BINARY else logits, target[target >= 0])
        return out

    def _calibrate(self, held: EventLog) -> None:
        """Fit each head's calibration on the held-out users and report raw against calibrated there."""
        from journeymap.evaluation import auc, calibration, log_loss

        self.report_ = {"split": "validation (calibration fitted here)", "users": len(held)}
        for task, (logits, y) in self._raw_logits(held).items():
            method = self.calibration if task in BINARY else ("none" if self.calibration == "none" else "temperature")
            fitted = Calibrator.fit(logits, y, method)
            self.calibration_[task] = fitted.to_dict()
            if task in BINARY:
                raw, cal = Calibrator()(logits), fitted(logits)
                self.report_[task] = {"cases": len(y), "positives": int(y.sum()), "method": fitted.method,
                                      "note": fitted.note, "auc": auc(y, cal) if len(set(y.tolist())) > 1 else None,
                                      "log_loss_raw": log_loss(y, raw), "log_loss": log_loss(y, cal),
                                      "ece_raw": calibration(y, raw).ece, "ece": calibration(y, cal).ece}
            else:
                raw, cal = _softmax(logits), fitted(logits)
                pick = np.arange(len(y))
                self.report_[task] = {"cases": len(y), "temperature": 1.0 / fitted.a, "note": fitted.note,
                                      "log_loss_raw": float(-np.log(np.clip(raw[pick, y], 1e-15, None)).mean()),
                                      "log_loss": float(-np.log(np.clip(cal[pick, y], 1e-15, None)).mean())}

    def _load_text(self, store: str | Path):
        from journeymap.items import load_item_vectors

        encoder = None if self.text_vectors is True else self.text_vectors
        return load_item_vectors(store, encoder)

    def copy(self) -> BehaviourModel:
        """An independent copy (fine-tune several copies of one pre-trained model)."""
        return copy.deepcopy(self)


# -- task heads and fine-tuning --------------------------------------------------------------------
def task_heads(config: Any, n_actions: int, pretext: Any = None):
    """The four heads over the encoder's states; from a pre-trained model, the next-item and
    next-action heads start as its next-event item and type heads."""
    import torch
    from torch import nn

    from journeymap.models._pretrain import ItemHead, _init

    heads = nn.ModuleDict({"next_item": ItemHead(config), "next_action": nn.Linear(config.dim, n_actions),
                           "purchase": nn.Linear(config.dim, 1), "churn": nn.Linear(config.dim, 1)})
    heads.apply(_init)
    if pretext is not None:
        heads["next_item"].load_state_dict(pretext.item.state_dict())
        with torch.no_grad():  # event-type rows carry over; "leave" starts at zero
            heads["next_action"].weight[:n_actions - 1] = pretext.kind.weight[FIRST_VALUE:]
            heads["next_action"].bias[:n_actions - 1] = pretext.kind.bias[FIRST_VALUE:]
    return heads


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _baseline_losses(tokens: Tokens, n_items: int, n_actions: int) -> dict[str, float]:
    """Each task's loss when predicting its base rates (0 when the task has no labels or one class)."""
    out = {}
    for task, size in (("next_item", n_items), ("next_action", n_actions), ("purchase", 2), ("churn", 2)):
        target = getattr(tokens, task)
        target = target[target >= 0]
        out[task] = _entropy(np.bincount(target, minlength=size).astype(np.float64)) if len(target) else 0.0
    return out


def _task_losses(net: Any, batch: dict, baselines: dict[str, float]):
    """Each present task's summed loss and cases in the batch (states computed once)."""
    import torch.nn.functional as F

    from journeymap.models._pretrain import masked_cross_entropy

    h = net.encoder(batch)  # (B, T, C)
    parts = {}
    if baselines.get("next_item"):
        table = net.encoder.item_table()
        seen = net.encoder.seen
        parts["next_item"] = masked_cross_entropy(lambda x: net.tasks["next_item"](x, table, seen)[:, FIRST_VALUE:], h,
                                                  batch["next_item"])
    if baselines.get("next_action"):
        parts["next_action"] = masked_cross_entropy(net.tasks["next_action"], h, batch["next_action"])
    for task in BINARY:
        if baselines.get(task):
            target = batch[task]
            where = target >= 0
            logits = net.tasks[task](h[where])[:, 0]
            parts[task] = (F.binary_cross_entropy_with_logits(logits, target[where].float(), reduction="sum"),
                           int(where.sum()))
    return parts


def _weighted(parts: dict, baselines: dict[str, float]):
    """The tasks' mean losses, each divided by its base-rate loss, averaged over the tasks present."""
    terms = [total / max(cases, 1) / baselines[task] for task, (total, cases) in parts.items()]
    return sum(terms) / max(len(terms), 1)


def _finetune(model: BehaviourModel, net: Any, tokens: Tokens, held: Tokens | None) -> dict[str, Any]:
    from journeymap.models import _pretrain as P

    fields = P.INPUTS + TASKS
    spans = P.windows(tokens, model.max_len)
    rng = np.random.default_rng(model.seed + 1)
    device = model._device()
    baselines = model.baselines_

    def epoch_batches(epoch: int) -> list:
        return [P.collate(tokens, spans[b], fields, device) for b in P.batches(spans, model.batch_tokens, rng)]

    validate = None
    if held is not None and len(held):
        held_spans = P.windows(held, model.max_len)
        held_batches = [P.collate(held, held_spans[b], fields, device) for b in P.batches(held_spans, model.batch_tokens)]

        def validate() -> float:
            sums: dict[str, list[float]] = {}
            for batch in held_batches:
                for task, (total, cases) in _task_losses(net, batch, baselines).items():
                    acc = sums.setdefault(task, [0.0, 0])
                    acc[0] += float(total)
                    acc[1] += cases
            return float(_weighted({k: tuple(v) for k, v in sums.items()}, baselines))

    scale = model.encoder_lr_scale if model.pretrained_ else 1.0
    groups = [{"params": list(net.tasks.parameters()), "lr": model.learning_rate},
              {"params": list(net.encoder.parameters()), "lr": model.learning_rate * scale}]
    return P.train_loop(net, groups, epoch_batches, lambda batch: _weighted(_task_losses(net, batch, baselines), baselines),
                        validate, epochs=model.finetune_epochs, patience=model.patience, verbose=model.verbose,
                        label="fine-tuning")


def _subset(tokens: Tokens, streams: np.ndarray) -> Tokens:
    """The tokens of these streams only."""
    starts, stops = tokens.indptr[streams], tokens.indptr[streams + 1]
    lengths = stops - starts
    flat = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(int(lengths.sum()))
    fields = {name: getattr(tokens, name)[flat] for name in tokens.__dataclass_fields__ if name != "indptr"}
    return Tokens(indptr=np.r_[0, np.cumsum(lengths)].astype(np.int64), **fields)

