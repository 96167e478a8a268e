"""Labels, task heads, calibration and the behaviour model's user-facing API (journeymap.models._multitask)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from journeymap.config import Settings
from journeymap.evaluation import calibration, log_loss
from journeymap.exceptions import JourneymapError
from journeymap.models import BehaviourModel, SequenceModel, make_model, read_event_log
from journeymap.models._events import LEAVE, labelled
from journeymap.models._multitask import Calibrator
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo
from tests.models.test_pretrain import TINY, small_shop
from tests.test_cli import jm

T0 = datetime(2024, 3, 1, 12, 0, 0)
DAY = 86400

torch.set_num_threads(1)


def ev(user, session, seconds, event_type="product_view", item=None, **extra):
    return {"user_id": user, "session_id": session, "ts": (T0 + timedelta(seconds=seconds)).isoformat(sep=" "),
            "event_type": event_type, "item_id": item, **extra}


def rows_of(log, user):
    stream = log.stream_of(pseudo(user))
    return np.arange(log.indptr[stream], log.indptr[stream + 1])


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    store = small_shop(tmp_path_factory.mktemp("small-shop"))
    return store, read_event_log(store, settings=Settings(secret=SECRET))


@pytest.fixture(scope="module")
def trained(shop):
    _, log = shop
    return BehaviourModel(**{**TINY, "max_len": 64}).fit_log(log)


# -- labels ----------------------------------------------------------------------------------------
def test_purchase_examples_are_cut_strictly_before_the_sessions_first_purchase(tmp_path):
    rows = [ev("buyer", "s1", 0, "page_view"), ev("buyer", "s1", 10, "product_view", "i1"),
            ev("buyer", "s1", 20, "add_to_cart", "i1"), ev("buyer", "s1", 30, "begin_checkout", "i1"),
            ev("buyer", "s1", 100, "purchase", "i1"), ev("buyer", "s1", 100, "purchase", "i2"),
            ev("buyer", "s1", 100, "page_view"),  # as old as the purchase: not a cut, whatever its order
            ev("buyer", "s1", 110, "product_view", "i3"),
            ev("buyer", "s2", DAY, "product_view", "i2"),  # a later session without a purchase: 0
            ev("late", "s3", 20 * DAY - 60, "product_view", "i1"),  # may still be going on at the store's end
            ev("clock", "s4", 20 * DAY, "page_view")]
    log = read_event_log(make_store(tmp_path, rows), settings=Settings(secret=SECRET))
    labels = labelled(log)
    buyer = rows_of(log, "buyer")
    first_buy = log.ts[buyer][log.event_types[buyer] == "purchase"].min()
    cuts = buyer[labels.purchase[buyer] >= 0]
    assert (log.ts[cuts[:-1]] < first_buy).all()  # every cut of s1 is earlier than its first purchase
    assert labels.purchase[buyer].tolist() == [1, 1, 1, 1, -1, -1, -1, -1, 0]
    assert labels.purchase[rows_of(log, "late")].tolist() == [-1]
    # next action: the next event's type, leave where the session ends, unknown where it may go on
    assert labels.next_action[buyer].tolist()[:4] == ["product_view", "add_to_cart", "begin_checkout", "purchase"]
    assert labels.next_action[buyer][-2:].tolist() == [LEAVE, LEAVE]
    assert labels.next_action[rows_of(log, "late")].tolist() == [None]


def test_the_prediction_at_a_cut_uses_only_events_before_it(shop, trained):
    _, log = shop
    bought = np.flatnonzero(log.event_types == "purchase")
    stream = np.searchsorted(log.indptr, bought, side="right") - 1
    short = stream[log.lengths[stream] < trained.max_len][0]  # one window holds the whole stream
    one = log.take([short])
    scored = trained.score_log(one)
    cut = int(scored.purchase_rows[scored.purchase_label == 1][-1])  # the last cut before the purchase
    session = one.sessions == one.sessions[cut]
    before = session & (np.arange(one.events) <= cut)
    assert "purchase" not in one.event_types[before].tolist() and "purchase" in one.event_types[session].tolist()
    alone = trained.predict_user(one.keep(np.arange(one.events) <= cut))  # every later event removed
    at_cut = scored.purchase[scored.purchase_rows == cut][0]
    assert alone["purchase_propensity"] == pytest.approx(at_cut, rel=1e-5)


def test_churn_labels_are_exact_at_session_ends_and_only_a_horizon_before_the_store_ends(tmp_path):
    rows = [ev("c", "c1", 0), ev("c", "c1", 10), ev("c", "c2", 3 * DAY), ev("c", "c3", 12 * DAY),
            ev("d", "d1", 15 * DAY),  # ends 5 days before the store: unknown at a 7-day horizon
            ev("e", "e1", 10 * DAY), ev("e", "e2", 17 * DAY),  # back after exactly 7 days: returned
            ev("clock", "z", 20 * DAY)]
    store = make_store(tmp_path, rows)
    log = read_event_log(store, settings=Settings(secret=SECRET))
    labels = labelled(log, churn_days=7)
    assert labels.churn[rows_of(log, "c")].tolist() == [-1, 0, 1, 1]  # 3 days away, 9 days, never (8 days seen)
    assert labels.churn[rows_of(log, "d")].tolist() == [-1]
    assert labels.churn[rows_of(log, "e")].tolist() == [0, -1]
    assert labelled(log, churn_days=2).churn[rows_of(log, "c")].tolist() == [-1, 1, 1, 1]


# -- calibration -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "bias"), [("platt", -1.0), ("temperature", 0.0), ("isotonic", -1.0)])
def test_calibration_fitted_on_one_split_lowers_log_loss_on_another(method, bias):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(logits / 3 + bias)))).astype(int)  # raw logits 3x overconfident
    fit, held = slice(0, 2000), slice(2000, None)
    calibrator = Calibrator.fit(logits[fit], y[fit], method)
    raw, calibrated = Calibrator()(logits[held]), calibrator(logits[held])
    assert log_loss(y[held], calibrated) < log_loss(y[held], raw) - 0.05
    assert calibration(y[held], calibrated).ece < calibration(y[held], raw).ece / 2
    again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_array_equal(again(logits[held]), calibrated)


def test_next_action_temperature_and_too_few_cases():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(3000, 4))
    y = np.array([rng.choice(4, p=np.exp(t) / np.exp(t).sum()) for t in truth])
    calibrator = Calibrator.fit(truth * 4, y, "temperature")  # 4x overconfident
    assert 1 / calibrator.a == pytest.approx(4, rel=0.15)
    few = Calibrator.fit(np.array([0.1, 2.0, -1.0]), np.array([0, 1, 0]), "platt")
    assert few.method == "none" and "too few to calibrate" in few.note


def test_the_model_calibrates_on_its_validation_users_and_reports_both(trained):
    report = trained.report_
    assert report["users"] > 0 and report["split"].startswith("validation")
    for task in ("purchase", "churn"):
        assert trained.calibration_[task]["method"] in ("platt", "none")
        assert report[task]["log_loss"] <= report[task]["log_loss_raw"] + 1e-12
    assert report["next_action"]["log_loss"] <= report["next_action"]["log_loss_raw"] + 1e-12


# -- the model -------------------------------------------------------------------------------------
def test_predict_user_answers_every_head(shop, trained):
    _, log = shop
    answer = trained.predict_user(log.take([0]), k=5)
    assert len(answer["next_items"]) == 5
    assert set(answer["next_action"]) == {*trained.event_types_, LEAVE}
    assert sum(answer["next_action"].values()) == pytest.approx(1.0)
    assert 0 < answer["purchase_propensity"] < 1 and 0 < answer["churn_propensity"] < 1
    events = [{"ts": "2024-01-03 10:00:00", "event_type": "page_view"},
              {"ts": "2024-01-03 10:00:09", "event_type": "product_view", "item_id": answer["next_items"][0]["item"],
               "device": "mobile"}]
    from_dicts = trained.predict_user(events)
    assert from_dicts["events"] == 2 and from_dicts["sessions"] == 1
    assert trained.predict_user([])["events"] == 0  # a new user


def test_save_and_load_give_identical_predictions(shop, trained, tmp_path):
    _, log = shop
    loaded = SequenceModel.load(trained.save(tmp_path / "behaviour.npz"))
    assert type(loaded) is BehaviourModel and loaded.get_params() == trained.get_params()
    assert loaded.predict_user(log.take([3])) == trained.predict_user(log.take([3]))
    first, again = trained.score_log(log.take(np.arange(50))), loaded.score_log(log.take(np.arange(50)))
    np.testing.assert_array_equal(first.purchase, again.purchase)
    np.testing.assert_array_equal(first.next_item_ranks, again.next_item_ranks)


def test_a_planted_device_effect_shows_in_the_purchase_propensity(tmp_path):
    """Desktop checkouts always complete, mobile ones never: the propensity at checkout must tell them apart."""
    rows = []
    for u in range(240):
        device = "desktop" if u % 2 else "mobile"
        t = u * 600
        item = f"i{u % 6}"
        rows += [ev(f"u{u}", f"s{u}", t, "page_view", device=device), ev(f"u{u}", f"s{u}", t + 5, "product_view", item, device=device)]
        if u % 3:  # two in three go on to check out
            rows += [ev(f"u{u}", f"s{u}", t + 9, "add_to_cart", item, device=device),
                     ev(f"u{u}", f"s{u}", t + 20, "begin_checkout", item, device=device)]
            if device == "desktop":
                rows.append(ev(f"u{u}", f"s{u}", t + 60, "purchase", item, device=device))
    rows.append(ev("clock", "z", 3 * DAY, "page_view"))
    log = read_event_log(make_store(tmp_path, rows), settings=Settings(secret=SECRET))
    model = BehaviourModel(**{**TINY, "epochs": 5, "finetune_epochs": 30, "patience": 30}).fit_log(log)
    scored = model.score_log(log)
    at_checkout = log.event_types[scored.purchase_rows] == "begin_checkout"
    device = log.devices[scored.purchase_rows]
    desktop = scored.purchase[at_checkout & (device == "desktop")].mean()
    mobile = scored.purchase[at_checkout & (device == "mobile")].mean()
    assert desktop > 0.7 and mobile < 0.3


def test_tasks_chooses_the_heads_to_fine_tune(shop):
    _, log = shop
    model = BehaviourModel(**{**TINY, "epochs": 0}, tasks="next_item,churn").finetune(log.take(np.arange(100)))
    assert model.heads_ == ["next_item", "churn"] and not model.pretrained_
    answer = model.predict_user(log.take([0]))
    assert answer["next_action"] is None and answer["purchase_propensity"] is None
    assert 0 < answer["churn_propensity"] < 1


def test_bad_parameters_get_clear_errors():
    with pytest.raises(JourneymapError, match="'calibration' must be one of platt, temperature, isotonic, none. Got 'x'"):
        make_model("behaviour", calibration="x").fit([["a", "b"]])
    with pytest.raises(JourneymapError, match="'tasks' names the heads to fine-tune, comma-separated, from next_item, "
                                              "next_action, purchase, churn. Got 'next_item,price'"):
        make_model("behaviour", tasks="next_item,price").fit([["a", "b"]])
    with pytest.raises(JourneymapError, match=r"'dim' \(30\) must be a multiple of 'heads' \(4\)"):
        make_model("behaviour", dim=30, heads=4).fit([["a", "b"]])
    with pytest.raises(JourneymapError, match="takes one user's events; this log holds 2 users"):
        model = make_model("behaviour", **TINY).fit([["a", "b"], ["b", "a"]])
        from journeymap.models._events import log_from_sequences

        model.predict_user(log_from_sequences([["a"], ["b"]]))


# -- the command line ------------------------------------------------------------------------------
def test_cli_train_and_predict_print_the_heads_as_json(tmp_path):
    rows = [ev(f"u{u}", f"s{u}-{k}", u * 300 + k * 2 * DAY + i * 7, kind, f"i{(u + i) % 4}" if kind != "page_view" else None,
               device="mobile" if u % 2 else "desktop")
            for u in range(30) for k in range(2)
            for i, kind in enumerate(["page_view", "product_view", "add_to_cart", "begin_checkout", "purchase"][:2 + u % 4])]
    rows.append(ev("clock", "z", 20 * DAY, "page_view"))
    store = make_store(tmp_path, rows)
    model = tmp_path / "behaviour.npz"
    params = [p for key, value in TINY.items() if key != "verbose" for p in ("--param", f"{key}={value}")]
    done = jm("train", "--store", str(store), "--model", "behaviour", "--out", str(model), *params, "--json")
    assert done.returncode == 0, done.stderr
    trained = json.loads(done.stdout)
    assert trained["model"] == "behaviour" and set(trained["heads"]) == {"next_item", "next_action", "purchase", "churn"}
    done = jm("predict", "--model", str(model), "--store", str(store), "--user", "u3", "--k", "3", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert {"next_items", "next_action", "purchase_propensity", "churn_propensity"} <= set(answer)
    assert answer["user"] == "u3" and answer["history_events"] == 10 and len(answer["next_items"]) == 3
    assert set(answer["next_items"][0]) == {"item", "score"}
    assert sum(answer["next_action"].values()) == pytest.approx(1.0)

    from typer.testing import CliRunner

    from journeymap.cli import app

    runner = CliRunner()  # in this process: the table and a refusal need no second start of torch
    table = runner.invoke(app, ["predict", "--model", str(model), "--store", str(store), "--user", "u3"],
                          env={"JOURNEYMAP_SECRET": SECRET})
    assert table.exit_code == 0 and "purchase in this session:" in table.stdout and "next action:" in table.stdout
    refused = runner.invoke(app, ["train", "--store", str(store), "--model", "behaviour", "--out", str(model),
                                  "--events", "purchase"], env={"JOURNEYMAP_SECRET": SECRET})
    assert "--events does not apply to --model behaviour" in str(refused.exception)
