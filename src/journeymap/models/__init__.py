"""Next-item models over behaviour sequences, one contract for all (``SequenceModel``).

``MODELS`` names every model the CLI and the benchmarks know; ``make_model("sknn", neighbors=50)``
builds one, ``SequenceModel.load(path)`` rebuilds a saved one. Evaluation lives apart, in
``journeymap.evaluation``, so that every model is measured by the same code. The neural models
(``gru4rec``, ``sasrec``, ``behaviour``) import torch only when they fit or score.
"""

from __future__ import annotations

from typing import Any

from journeymap.exceptions import JourneymapError
from journeymap.models._base import NotFittedError, SequenceModel
from journeymap.models._baselines import ItemKNN, Markov, Popularity, SessionKNN
from journeymap.models._data import Encoded, Session, Vocabulary, read_sessions
from journeymap.models._events import EventLog, read_event_log
from journeymap.models._gru4rec import GRU4Rec
from journeymap.models._multitask import BehaviourModel
from journeymap.models._quantize import quantize
from journeymap.models._sasrec import SASRec

__all__ = [
    "BehaviourModel",
    "Encoded",
    "EventLog",
    "GRU4Rec",
    "ItemKNN",
    "MODELS",
    "Markov",
    "NotFittedError",
    "Popularity",
    "SASRec",
    "SequenceModel",
    "Session",
    "SessionKNN",
    "Vocabulary",
    "load_model",
    "make_model",
    "quantize",
    "read_event_log",
    "read_sessions",
]

MODELS: dict[str, type[SequenceModel]] = {
    "pop": Popularity,
    "markov": Markov,
    "sknn": SessionKNN,
    "iknn": ItemKNN,
    "gru4rec": GRU4Rec,
    "sasrec": SASRec,
    "behaviour": BehaviourModel,
}


def make_model(name: str, **params: Any) -> SequenceModel:
    """A new, unfitted model by registry name, with hyperparameters (the rest take their defaults)."""
    if name not in MODELS:
        raise JourneymapError(f"Unknown model '{name}'; models are {', '.join(MODELS)}.")
    return MODELS[name]().set_params(**params)


def load_model(path: Any) -> SequenceModel:
    """Rebuild whichever model a checkpoint holds (``SequenceModel.load``)."""
    return SequenceModel.load(path)
