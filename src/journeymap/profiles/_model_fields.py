"""The profiles' model fields: each user's behaviour embedding and propensities, from a behaviour model.

``score_profiles(store, model)`` runs a trained ``BehaviourModel`` over every user's events and
keeps its outputs in the ``profile_model`` table; ``build_profiles`` and ``update_profiles`` take
the three fields from there, so a rebuild keeps them, and users scored no model yet stay null.

What the fields mean: ``embedding`` is the model's state after the user's last event (FLOAT[] of
the model's width); ``purchase_propensity`` is the calibrated probability that the user's latest
session goes on to a purchase, ``churn_propensity`` that, if that session ends there, the user does
not return within the model's ``churn_days``. All three describe the user's events as of the
scoring time: later events change them only at the next scoring (the ``profile_model`` meta entry
says when that was, up to which event, and with which model).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.profiles._build import Progress, start_job
from journeymap.store import Store

MODEL_TABLE = "profile_model"
META_KEY = "profile_model"
NEEDED_HEADS = ("purchase", "churn")
BATCH_USERS = 8192  # users tokenized and encoded together: bounds memory, keeps batches full
MODEL_DDL = f"""
CREATE OR REPLACE TABLE {MODEL_TABLE} (
    user_id VARCHAR PRIMARY KEY, embedding FLOAT[], purchase_propensity DOUBLE, churn_propensity DOUBLE
)"""
_TRAIN_HINT = "journeymap train --store {store} --model behaviour --out behaviour.npz"


@dataclass
class ModelFields:
    """What a scoring wrote: the model used, how many users, and (on request) the table itself."""

    store: str
    model: str | None  # the model file, None for a model passed in memory
    model_class: str  # BehaviourModel (registry name 'behaviour')
    users: int  # rows of profile_model: every user with events
    profiles: int  # rows of profiles filled (0 when no profiles are built yet)
    dim: int
    churn_days: float
    events_to: datetime | None  # the store's last event when scored: the fields describe events up to it
    scored_at: datetime
    seconds: float
    _frame: pd.DataFrame | None = field(default=None, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """The profile_model table, one row per user (index: user_id), read from the store on first use."""
        if self._frame is None:
            with Store(self.store, read_only=True) as st:
                frame = st.con.sql(f"SELECT * FROM {MODEL_TABLE} ORDER BY user_id").df()
            self._frame = frame.set_index("user_id", drop=False).rename_axis(None)
        return self._frame

    def meta(self) -> dict[str, Any]:
        return {"model": self.model, "model_class": self.model_class, "users": self.users, "dim": self.dim,
                "churn_days": self.churn_days,
                "events_to": None if self.events_to is None else self.events_to.isoformat(sep=" "),
                "scored_at": self.scored_at.isoformat(sep=" ")}

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, **self.meta(), "profiles": self.profiles, "seconds": round(self.seconds, 3)}


def score_profiles(store_path: str | Path, model: Any, settings: Settings | None = None, *,
                   progress: Progress | None = None) -> ModelFields:
    """Fill every user's embedding, purchase_propensity and churn_propensity from a behaviour model.

    ``model``: a ``BehaviourModel`` with purchase and churn heads, or the file ``journeymap train
    --model behaviour`` wrote. Reads every event of the store (sessions by ``settings``' gap),
    replaces ``profile_model`` with one row per user and sets the three columns of ``profiles``
    in place (users without events get nulls). Later builds and updates keep the fields; they
    describe each user's latest session as of the store's last event now, until the next scoring.
    """
    from journeymap.models import read_event_log

    started, report, settings, path = start_job(store_path, settings, progress)
    source = str(Path(model).resolve()) if isinstance(model, (str, Path)) else None
    model = behaviour_model(model, path)

    report("reading events", 0.0)
    log = read_event_log(path, settings=settings)
    report("scoring users", 0.1)
    outputs = model.user_outputs(log, BATCH_USERS,
                                 progress=lambda done, total: report(f"scoring users ({done:,}/{total:,})",
                                                                     0.1 + 0.8 * done / max(total, 1)))
    report("writing", 0.9)
    events_to = None if log.end is None else datetime(1970, 1, 1) + timedelta(microseconds=round(log.end * 1e6))
    result = ModelFields(store=str(path), model=source, model_class=type(model).__name__, users=len(log),
                         profiles=0, dim=int(outputs["embedding"].shape[1]), churn_days=float(model.churn_days),
                         events_to=events_to, scored_at=datetime.now().replace(microsecond=0), seconds=0.0)
    result.profiles = _write(path, outputs, result)  # the meta entry records the rest
    result.seconds = time.perf_counter() - started
    report("done", 1.0)
    return result


def behaviour_model(model: Any, store: str | Path = "STORE"):
    """``model`` (a model or a model file) checked to be a behaviour model with purchase and churn heads."""
    from journeymap.models import BehaviourModel, SequenceModel, load_model

    hint = _TRAIN_HINT.format(store=store)
    what = "the model"
    if isinstance(model, (str, Path)):
        what = f"the model file {model}"
        if not Path(model).exists():
            raise JourneymapError(f"No model file at {model}; train a behaviour model with `{hint}`.")
        model = load_model(model)
    if not isinstance(model, BehaviourModel):
        kind = f"a '{model.name}' model, which predicts next items only" if isinstance(model, SequenceModel) \
            else f"a {type(model).__name__}"
        raise JourneymapError(f"Profile model fields (embedding, purchase and churn propensity) come from the "
                              f"behaviour model; {what} is {kind}. Train one with `{hint}`.")
    model._check_heads()  # not fitted, or only pre-trained: the error says what to call
    missing = [h for h in NEEDED_HEADS if h not in model.heads_]
    if missing:
        raise JourneymapError(
            f"{what[0].upper()}{what[1:]} has no {' or '.join(missing)} head (its heads: {', '.join(model.heads_)}), "
            f"so it cannot fill {' and '.join(f'{h}_propensity' for h in missing)}. Train a behaviour model on the "
            f"store with every head: `{hint}` (the default tasks; a --param tasks=... must include purchase and "
            "churn).")
    return model


def has_model_fields(con) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [MODEL_TABLE]).fetchall()[0][0])


def _write(path: Path, outputs: dict[str, Any], result: ModelFields) -> int:
    """profile_model replaced and profiles' model columns set, in one transaction; returns profiles filled."""
    import pyarrow as pa

    from journeymap.profiles._build import has_profiles

    embedding = outputs["embedding"]
    n, dim = embedding.shape
    table = pa.table({
        "user_id": pa.array(outputs["users"].tolist(), pa.string()),
        "embedding": pa.LargeListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int64) * dim),
                                                   pa.array(embedding.reshape(-1), pa.float32())),
        "purchase_propensity": pa.array(outputs["purchase_propensity"], pa.float64()),
        "churn_propensity": pa.array(outputs["churn_propensity"], pa.float64()),
    })
    with Store(path) as st:
        con = st.con
        con.begin()
        try:
            con.execute(MODEL_DDL)
            con.register("__model_fields", table)
            con.execute(f"INSERT INTO {MODEL_TABLE} SELECT user_id, embedding::FLOAT[], purchase_propensity, "
                        "churn_propensity FROM __model_fields")
            con.unregister("__model_fields")
            filled = 0
            if has_profiles(con):
                con.execute(f"""UPDATE profiles SET embedding = m.embedding,
                                    purchase_propensity = m.purchase_propensity, churn_propensity = m.churn_propensity
                                FROM {MODEL_TABLE} m WHERE profiles.user_id = m.user_id""")
                con.execute(f"""UPDATE profiles SET embedding = NULL, purchase_propensity = NULL,
                                    churn_propensity = NULL
                                WHERE user_id NOT IN (SELECT user_id FROM {MODEL_TABLE})""")
                filled = con.execute("SELECT count(*) FROM profiles WHERE embedding IS NOT NULL").fetchall()[0][0]
            con.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [META_KEY, json.dumps(result.meta())])
            con.commit()
        except BaseException:
            con.rollback()
            raise
    return int(filled)
