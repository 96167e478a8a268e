"""The contract every next-item model keeps, scikit-learn style.

``__init__`` stores hyperparameters unchanged; ``fit(sequences)`` learns and returns ``self``;
learned state ends in ``_`` (``vocab_``, ``transitions_``). Every model scores the whole
catalogue (``score_items``), and ``predict_next`` ranks it: by score, ties to the more popular
item (the vocabulary's order), so evaluation measures exactly the list a shopper would see.

A checkpoint is one ``.npz`` file that rebuilds the model: a JSON header (class, parameters,
scalars) and numpy arrays (vocabulary, learned matrices). It is read with ``allow_pickle=False``:
loading runs no code from the file, and only classes of this package can be named in it.
"""

from __future__ import annotations

import inspect
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from journeymap.exceptions import FormatError, JourneymapError
from journeymap.models._data import Encoded, Vocabulary, check_sequences

FORMAT = "journeymap.model"
FORMAT_VERSION = 1
_CELLS_PER_BATCH = 1 << 22  # score matrices are built this many (row x item) cells at a time: 32 MB of float64

_CLASSES: dict[str, type[SequenceModel]] = {}


class NotFittedError(JourneymapError):
    """A model was asked to predict or save before ``fit``."""


class SequenceModel:
    """Base class of next-item models over sessions (lists of item ids in click order).

    Subclasses set ``name`` (the registry and CLI name), list their learned attributes in
    ``_state`` and implement ``_fit(encoded, event_types)`` and ``_score(encoded) -> (n, n_items)``.
    Event types are accepted everywhere and passed through; models that do not use them ignore them.
    """

    name: ClassVar[str] = ""
    _state: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    # -- parameters ----------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters, as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> SequenceModel:
        known = self._param_names()
        for key, value in params.items():
            if key not in known:
                raise JourneymapError(f"{type(self).__name__} has no parameter '{key}'; its parameters are "
                                      f"{', '.join(known) or 'none'}.")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- learning and predicting ----------------------------------------------------------------
    def fit(self, sequences: Sequence[Sequence[Any]], event_types: Sequence[Sequence[str]] | None = None) -> SequenceModel:
        """Learn from training sessions, oldest first (models that sample recent sessions use the order)."""
        sequences = check_sequences(sequences, event_types, "training sequences")
        self._check_params()
        self.vocab_ = Vocabulary.build(sequences)
        self._fit(self.vocab_.encode(sequences), event_types)
        return self

    def score_items(self, prefixes: Sequence[Sequence[Any]],
                    event_types: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """A score for every known item as the next one after each prefix: (n_prefixes, n_items).

        Column ``j`` is item ``vocab_.items[j]``. Unknown items in a prefix are kept in place
        (positions stay true) but carry no information; an empty prefix scores like a new session.
        """
        self._check_fitted()
        prefixes = check_sequences(prefixes, event_types, "prefixes")
        return self._score(self.vocab_.encode(prefixes))

    def predict_next(self, prefixes: Sequence[Sequence[Any]], k: int = 20,
                     event_types: Sequence[Sequence[str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` next items after each prefix, ranked over all known items.

        Returns ``(items, scores)``, both (n_prefixes, min(k, n_items)), best first; equal scores
        go to the more popular item. Items are the ids as given to ``fit``.
        """
        self._check_fitted()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise JourneymapError(f"k must be a positive number of items to return. Got {k!r}.")
        prefixes = check_sequences(prefixes, event_types, "prefixes")
        encoded = self.vocab_.encode(prefixes)
        k = min(int(k), len(self.vocab_))
        order = np.zeros((len(encoded), k), dtype=np.int64)
        scores = np.zeros((len(encoded), k))
        for start in range(0, len(encoded), self.batch_rows()):
            chunk = self._score(encoded[start:start + self.batch_rows()])
            top = top_k(chunk, k)
            order[start:start + len(top)] = top
            scores[start:start + len(top)] = np.take_along_axis(chunk, top, axis=1)
        return self.vocab_.items[order], scores

    def recommend(self, prefix: Sequence[Any], k: int = 20, exclude_seen: bool = False,
                  event_types: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` next items for one session so far: ``(items, scores)``, each (k,).

        ``exclude_seen`` leaves out items already in the prefix (off by default: shoppers often
        return to an item, and the literature's baselines may recommend it again).
        """
        prefix = check_sequences([prefix], None if event_types is None else [event_types], "prefixes")[0]
        if not exclude_seen:
            items, scores = self.predict_next([prefix], k, None if event_types is None else [event_types])
            return items[0], scores[0]
        seen = set(prefix)
        items, scores = self.predict_next([prefix], k + len(seen), None if event_types is None else [event_types])
        keep = np.array([i not in seen for i in items[0].tolist()], dtype=bool)
        return items[0][keep][:k], scores[0][keep][:k]

    def batch_rows(self) -> int:
        """How many prefixes to score at once so a score matrix stays about 32 MB."""
        return max(1, _CELLS_PER_BATCH // max(1, len(self.vocab_)))

    # -- for subclasses ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        """Refuse hyperparameters that cannot work, saying which and why (before any learning)."""

    def _fit(self, sessions: Encoded, event_types: Sequence[Sequence[str]] | None) -> None:
        raise NotImplementedError

    def _score(self, prefixes: Encoded) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "vocab_"):
            raise NotFittedError(f"This {type(self).__name__} model is not fitted yet; call fit(sequences) first.")

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model to one ``.npz`` file (written whole, then moved into place)."""
        self._check_fitted()
        path = Path(path)
        arrays: dict[str, np.ndarray] = {f"vocab.{k}": v for k, v in self.vocab_.to_arrays().items()}
        scalars: dict[str, Any] = {}
        kinds: dict[str, str] = {}
        for attr in self._state:
            value = getattr(self, attr)
            if sp.issparse(value):
                value = sp.csr_matrix(value)
                kinds[attr] = "csr"
                for part in ("data", "indices", "indptr"):
                    arrays[f"state.{attr}.{part}"] = getattr(value, part)
                arrays[f"state.{attr}.shape"] = np.asarray(value.shape, dtype=np.int64)
            elif isinstance(value, np.ndarray):
                kinds[attr] = "array"
                arrays[f"state.{attr}"] = value
            else:
                kinds[attr] = "json"
                scalars[attr] = value
        from journeymap import __version__

        header = {"format": FORMAT, "version": FORMAT_VERSION, "class": type(self).__name__, "name": self.name,
                  "params": self.get_params(), "state": kinds, "scalars": scalars, "journeymap": __version__}
        arrays["header"] = np.asarray(json.dumps(header))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SequenceModel:
        """Rebuild a saved model. ``SequenceModel.load`` returns whichever model the file holds."""
        path = Path(path)
        if not path.exists():
            raise FormatError(f"No model file at {path}; train one with `journeymap train --out {path}`.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            header = json.loads(str(arrays.pop("header")))
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise FormatError(f"{path} is not a journeymap model checkpoint ({type(exc).__name__}: {exc}).") from None
        if header.get("format") != FORMAT:
            raise FormatError(f"{path} is not a journeymap model checkpoint (its header has no '{FORMAT}' format).")
        if header.get("version", 0) > FORMAT_VERSION:
            raise FormatError(f"{path} was written by a newer journeymap (checkpoint format {header['version']}); "
                              "upgrade journeymap to read it.")
        import journeymap.models  # noqa: F401 - registers every model class

        model_cls = _CLASSES.get(header.get("class", ""))
        if model_cls is None:
            raise FormatError(f"{path} holds a '{header.get('class')}' model, which this journeymap does not have "
                              f"(it has {', '.join(sorted(_CLASSES))}).")
        if cls is not SequenceModel and not issubclass(model_cls, cls):
            raise FormatError(f"{path} holds a {model_cls.__name__} model, not a {cls.__name__}; "
                              "load it with SequenceModel.load to get whichever model it holds.")
        model = model_cls(**header["params"])
        model.vocab_ = Vocabulary.from_arrays({"items": arrays["vocab.items"], "counts": arrays["vocab.counts"]})
        for attr, kind in header["state"].items():
            if kind == "csr":
                shape = tuple(int(n) for n in arrays[f"state.{attr}.shape"])
                value = sp.csr_matrix((arrays[f"state.{attr}.data"], arrays[f"state.{attr}.indices"],
                                       arrays[f"state.{attr}.indptr"]), shape=shape)
            elif kind == "array":
                value = arrays[f"state.{attr}"]
            else:
                value = header["scalars"][attr]
            setattr(model, attr, value)
        return model


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` best scores per row, best first; ties to the lower index: (n, k)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :min(k, scores.shape[1])]
