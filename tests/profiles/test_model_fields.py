"""The profiles' model fields from a behaviour model: filled for every user, equal to the model's
own one-user answer, kept by later updates and rebuilds, and refused for a model that cannot fill them."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import torch

from journeymap.config import Settings
from journeymap.events import ingest
from journeymap.exceptions import JourneymapError
from journeymap.models import BehaviourModel, make_model, read_event_log
from journeymap.profiles import build_profiles, profile, score_profiles, update_profiles
from journeymap.simulator import simulate
from journeymap.store import Store
from tests.conftest import SECRET
from tests.models.test_pretrain import TINY

SETTINGS = Settings(secret=SECRET)
SPLIT = pd.Timestamp("2024-01-11")
FIELDS = ("embedding", "purchase_propensity", "churn_propensity")

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A 300-user, 14-day shop cut at day 11: the store holds the early part (``a``), ``b`` the rest
    (78 of its users are new), and a tiny behaviour model trained on the store."""
    folder = tmp_path_factory.mktemp("model-fields")
    sim = simulate(users=300, days=14, seed=5, out=folder / "shop.csv")
    log = pd.read_csv(sim.path, dtype=str, keep_default_na=False)
    early = pd.to_datetime(log["event_time"].str.removesuffix(" UTC")) < SPLIT
    a, b = folder / "a.csv", folder / "b.csv"
    log[early].to_csv(a, index=False)
    log[~early].to_csv(b, index=False)
    store = folder / "a.duckdb"
    ingest(a, store, settings=SETTINGS)
    model = BehaviourModel(**TINY).fit_store(store, settings=SETTINGS)
    return {"store": store, "b": b, "model": model, "model_file": model.save(folder / "behaviour.npz")}


@pytest.fixture
def store(shop, tmp_path):
    """A fresh copy of the early store for one test."""
    path = tmp_path / "shop.duckdb"
    shutil.copy(shop["store"], path)
    return path


def _profiles(store) -> pd.DataFrame:
    with Store(store, read_only=True) as st:
        return st.con.sql(f"SELECT user_id, {', '.join(FIELDS)} FROM profiles ORDER BY user_id").df().set_index("user_id")


def _scored(store) -> pd.DataFrame:
    with Store(store, read_only=True) as st:
        return st.con.sql("SELECT * FROM profile_model ORDER BY user_id").df().set_index("user_id")


def _same_fields(profiles: pd.DataFrame, scored: pd.DataFrame) -> None:
    assert profiles.index.equals(scored.index)
    np.testing.assert_array_equal(np.stack(profiles["embedding"]), np.stack(scored["embedding"]))
    for column in FIELDS[1:]:
        np.testing.assert_array_equal(profiles[column].to_numpy(), scored[column].to_numpy())


def test_every_user_is_scored_as_predict_user_scores_them_alone(shop, store):
    build_profiles(store, settings=SETTINGS)
    result = score_profiles(store, shop["model_file"], SETTINGS)
    with Store(store, read_only=True) as st:
        users, last = st.con.execute("SELECT count(DISTINCT user_id), max(ts) FROM events").fetchall()[0]
        meta = json.loads(st.con.execute("SELECT value FROM meta WHERE key = 'profile_model'").fetchall()[0][0])
    assert (result.users, result.profiles, result.dim) == (users, users, TINY["dim"])
    assert meta["model"] == str(shop["model_file"]) and meta["model_class"] == "BehaviourModel"
    assert meta["events_to"] == last.isoformat(sep=" ") and datetime.fromisoformat(meta["scored_at"])

    frame = _profiles(store)
    assert len(frame) == users and frame[list(FIELDS)].notna().all().all()
    assert {len(e) for e in frame["embedding"]} == {TINY["dim"]}
    assert frame["purchase_propensity"].between(0, 1).all() and frame["churn_propensity"].between(0, 1).all()
    _same_fields(frame, _scored(store))

    model = shop["model"]
    log = read_event_log(store, settings=SETTINGS)
    lengths = dict(zip(log.users.tolist(), log.lengths.tolist()))
    longest, shortest = max(lengths, key=lengths.get), min(lengths, key=lengths.get)
    for user in (longest, shortest, frame.index[len(frame) // 2]):
        alone = read_event_log(store, settings=SETTINGS, user_id=user)
        answer = model.predict_user(alone)
        assert frame.loc[user, "purchase_propensity"] == pytest.approx(answer["purchase_propensity"], abs=1e-6)
        assert frame.loc[user, "churn_propensity"] == pytest.approx(answer["churn_propensity"], abs=1e-6)
        np.testing.assert_allclose(frame.loc[user, "embedding"], model.user_outputs(alone)["embedding"][0], atol=1e-5)
    one = profile(store, longest, settings=SETTINGS)  # the typed profile carries them too
    assert one.purchase_propensity == frame.loc[longest, "purchase_propensity"] and len(one.embedding) == TINY["dim"]


def test_user_outputs_do_not_depend_on_the_batch(shop):
    log = read_event_log(shop["store"], settings=SETTINGS)
    model = shop["model"]
    whole = model.user_outputs(log)
    done = []
    parts = model.user_outputs(log, batch_users=7, progress=lambda n, total: done.append((n, total)))
    assert done[-1] == (len(log), len(log)) and len(done) == -(-len(log) // 7)
    assert whole["users"].tolist() == log.users.tolist() and whole["embedding"].dtype == np.float32
    np.testing.assert_allclose(parts["embedding"], whole["embedding"], atol=1e-5)
    for key in ("purchase_propensity", "churn_propensity"):
        np.testing.assert_allclose(parts[key], whole[key], atol=1e-6)


def test_updates_and_rebuilds_keep_the_fields_and_new_users_stay_null(shop, store):
    build_profiles(store, settings=SETTINGS)
    score_profiles(store, shop["model"], SETTINGS)
    scored = _scored(store)
    ingest(shop["b"], store, settings=SETTINGS)

    for run in (update_profiles, build_profiles):
        result = run(store, settings=SETTINGS)
        frame = _profiles(store)
        new = frame.index.difference(scored.index)
        assert len(new) == 78 and len(frame) == len(scored) + 78, run.__name__
        assert frame.loc[new, list(FIELDS)].isna().all().all()
        _same_fields(frame.loc[scored.index], scored)  # exactly as scored, though many have new events
        assert result.user_count == len(frame)

    rescored = score_profiles(store, shop["model_file"], SETTINGS)
    frame = _profiles(store)
    assert rescored.users == rescored.profiles == len(frame) and frame[list(FIELDS)].notna().all().all()
    assert not np.allclose(frame.loc[scored.index, "churn_propensity"], scored["churn_propensity"])  # new events count


def test_scoring_before_the_first_build_fills_it(shop, store):
    result = score_profiles(store, shop["model"], SETTINGS)
    assert result.profiles == 0 and result.model is None
    build_profiles(store, settings=SETTINGS)
    _same_fields(_profiles(store), _scored(store))


def test_the_profiles_command_scores_with_model(shop, store, monkeypatch):
    from typer.testing import CliRunner

    from journeymap.cli import app

    runner = CliRunner()
    env = {"JOURNEYMAP_SECRET": SECRET, "COLUMNS": "200"}
    assert "--model" in runner.invoke(app, ["profiles", "--help"], env=env).stdout
    done = runner.invoke(app, ["profiles", "--store", str(store), "--model", str(shop["model_file"]), "--json"], env=env)
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["model_fields"]["model"] == str(shop["model_file"]) and data["model_fields"]["profiles"] == data["users"]
    assert _profiles(store)[list(FIELDS)].notna().all().all()
    text = runner.invoke(app, ["profiles", "--store", str(store), "--model", str(shop["model_file"])], env=env)
    assert text.exit_code == 0 and f"model fields: {data['users']:,} profiles scored by" in text.stdout


def test_a_model_that_cannot_fill_the_fields_is_refused_with_what_to_train(shop, store, tmp_path):
    from typer.testing import CliRunner

    from journeymap.cli import app

    markov = make_model("markov").fit([["a", "b"], ["b", "a"]]).save(tmp_path / "markov.npz")
    with pytest.raises(JourneymapError, match=(
            r"come from the behaviour model; the model file \S+markov.npz is a 'markov' model, which predicts next "
            r"items only. Train one with `journeymap train --store \S+ --model behaviour --out behaviour.npz`")):
        score_profiles(store, markov, SETTINGS)
    log = read_event_log(store, settings=SETTINGS)
    churn_only = BehaviourModel(**{**TINY, "epochs": 0}, tasks="next_item,churn").finetune(log.take(np.arange(50)))
    with pytest.raises(JourneymapError, match=(
            r"The model has no purchase head \(its heads: next_item, churn\), so it cannot fill purchase_propensity. "
            r"Train a behaviour model on the store with every head: `journeymap train --store \S+ --model behaviour")):
        score_profiles(store, churn_only, SETTINGS)
    with pytest.raises(JourneymapError, match=r"No model file at \S+nothing.npz; train a behaviour model with"):
        score_profiles(store, tmp_path / "nothing.npz", SETTINGS)

    refused = CliRunner().invoke(app, ["profiles", "--store", str(store), "--model", str(markov)],
                                 env={"JOURNEYMAP_SECRET": SECRET})
    assert refused.exit_code != 0 and "'markov' model, which predicts next items only" in str(refused.exception)
    with Store(store, read_only=True) as st:  # refused before the build
        assert not st.con.execute("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_name IN ('profiles', 'profile_model')").fetchall()[0][0]
