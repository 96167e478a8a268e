"""GRU4Rec on logs whose right answer is known by construction (tiny networks, a few epochs)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from journeymap.evaluation import TestCases, evaluate, rank_cases
from journeymap.exceptions import JourneymapError
from journeymap.models import GRU4Rec, SequenceModel, Vocabulary
from journeymap.models._gru4rec import (
    REPEAT_WINDOW,
    _network,
    _session_parallel,
    _train_step,
)
from journeymap.models._torch import copy_bonus_shift

CYCLE = ["p1", "p2", "p3", "p4", "p5"]
# Every session walks the cycle from some start: the next item is always the following one.
CYCLIC = [[CYCLE[(start + i) % 5] for i in range(2 + (start * 3) % 6)] for start in range(60)]
TINY = dict(hidden=16, batch_size=8, n_sample=8, dropout_p_hidden=0.0, learning_rate=0.2, epochs=8, validation=0.0,
            verbose=False)


def test_session_parallel_batches_follow_the_official_iterator():
    sessions = [["a", "b", "c"], ["d", "e"], ["x"], ["f", "g", "h"]]
    vocab = Vocabulary.build(sessions)
    encoded = vocab.encode(sessions)
    steps = _session_parallel(encoded, batch_size=2, n_sample=4)
    shown = [(vocab.items[i].tolist(), vocab.items[t].tolist(), c.tolist()) for i, t, c in steps]
    assert shown == [
        (["a", "d"], ["b", "e"], [-1, -1]),  # two sessions side by side, fresh states
        (["b", "f"], ["c", "g"], [0, -1]),  # d-e ended: the next session (x is too short) takes slot 1
        (["g"], ["h"], [1]),  # a-b-c ended and none is left: the batch shrinks, f-g-h keeps its state
    ]
    # Without extra samples a lone slot has no negatives, so the epoch stops there (as officially).
    assert len(_session_parallel(encoded, batch_size=2, n_sample=0)) == 2


def test_with_the_repeat_bonus_each_step_carries_every_slot_s_recent_clicks():
    sessions = [["a", "b", "c"], ["d", "e"], ["x"], ["f", "g", "h"]]
    vocab = Vocabulary.build(sessions)
    steps = _session_parallel(vocab.encode(sessions), batch_size=2, n_sample=4, repeat_window=2)
    shown = [[[vocab.items[i] if i >= 0 else None for i in row] for row in step[3]] for step in steps]
    assert shown == [
        [["a", None], ["d", None]],  # the input first, then one click back: none yet
        [["b", "a"], ["f", None]],  # slot 1's new session does not see d-e
        [["g", "f"]],
    ]


def test_learns_a_cyclic_log_perfectly():
    test = TestCases.from_sessions([[CYCLE[(s + i) % 5] for i in range(4)] for s in range(5)])
    result = evaluate(GRU4Rec(**TINY), CYCLIC, test, metrics=("P@1", "MRR@20"), n_resamples=0)
    assert result["P@1"] == 100.0


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_both_losses_learn_and_scores_have_the_catalogue_shape(loss):
    model = GRU4Rec(**{**TINY, "loss": loss, "logq": 1.0 if loss == "cross-entropy" else 0.0}).fit(CYCLIC)
    scores = model.score_items([["p1"], ["p4", "p5"], ["p2", "unknown"], []])
    assert scores.shape == (4, 5) and scores.dtype == np.float64
    items, _ = model.predict_next([["p1"], ["p4", "p5"]], k=1)
    assert items[:, 0].tolist() == ["p2", "p1"]


def test_same_seed_same_model_other_seed_other_model():
    first = GRU4Rec(**TINY, seed=3).fit(CYCLIC).score_items([["p1", "p2"]])
    again = GRU4Rec(**TINY, seed=3).fit(CYCLIC).score_items([["p1", "p2"]])
    other = GRU4Rec(**TINY, seed=4).fit(CYCLIC).score_items([["p1", "p2"]])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_checkpoint_rebuilds_the_network(tmp_path):
    model = GRU4Rec(**TINY).fit(CYCLIC)
    loaded = SequenceModel.load(model.save(tmp_path / "gru.npz"))
    assert isinstance(loaded, GRU4Rec) and loaded.get_params() == model.get_params()
    assert loaded.history_ == model.history_
    prefixes = [["p3"], ["p1", "p2", "p3"], ["nope"]]
    np.testing.assert_array_equal(loaded.score_items(prefixes), model.score_items(prefixes))


def test_refit_trains_anew_on_every_session_for_the_best_number_of_epochs():
    log = CYCLIC + [["q1", "q2"]] * 15  # only the most recent sessions, held out, show q2 after q1
    held_out = GRU4Rec(**{**TINY, "validation": 0.19, "refit": False, "epochs": 4}).fit(log)
    refit = GRU4Rec(**{**TINY, "validation": 0.19, "epochs": 4}).fit(log)
    assert "refit_epochs" not in held_out.history_
    assert refit.history_["refit_epochs"] == refit.history_["best_epoch"] == len(refit.history_["refit_seconds"])
    assert refit.predict_next([["q1"]], k=1)[0][0, 0] == "q2"
    assert held_out.predict_next([["q1"]], k=1)[0][0, 0] != "q2"


def test_early_stopping_stops_and_keeps_the_best_epoch():
    # The held-out tail (the last 20 sessions) contradicts training: after p1 comes p3, not p2,
    # so validation cannot keep improving and training stops `patience` epochs after its best.
    log = CYCLIC + [["p1", "p3"]] * 15
    model = GRU4Rec(**{**TINY, "epochs": 40, "patience": 2, "validation": 0.2}).fit(log)
    history = model.history_
    assert history["stopped_early"] and history["epochs"] < 40
    assert history["epochs"] == history["best_epoch"] + 2
    assert max(history["validation"]) == history["validation"][history["best_epoch"] - 1]
    assert len(history["loss"]) == len(history["seconds"]) == history["epochs"]


def test_without_validation_every_epoch_runs():
    history = GRU4Rec(**{**TINY, "epochs": 3}).fit(CYCLIC).history_
    assert history["epochs"] == 3 and history["validation"] == [None] * 3 and not history["stopped_early"]


def test_event_types_are_accepted_and_torch_settings_are_restored():
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    types = [["view"] * len(s) for s in CYCLIC]
    model = GRU4Rec(**{**TINY, "epochs": 1, "threads": 1}).fit(CYCLIC, event_types=types)
    model.predict_next([["p1"]], k=2, event_types=[["view"]])
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_progress_is_shown_only_when_verbose(capfd):
    GRU4Rec(**{**TINY, "epochs": 2}).fit(CYCLIC)
    assert capfd.readouterr().err == ""
    GRU4Rec(**{**TINY, "epochs": 2, "verbose": True, "validation": 0.1}).fit(CYCLIC)
    err = capfd.readouterr().err
    assert "GRU4Rec epoch 1: loss" in err and "validation MRR@20" in err


@pytest.mark.parametrize("params, message", [
    ({"loss": "top1"}, "loss must be 'cross-entropy' or 'bpr-max'. Got 'top1'"),
    ({"hidden": 0}, "'hidden' must be a whole number >= 1. Got 0"),
    ({"dropout_p_hidden": 1.0}, r"'dropout_p_hidden' must be a probability in \[0, 1\). Got 1.0"),
    ({"validation": 0.5 + 0.5}, r"'validation' is the share of training sessions .* Got 1.0"),
    ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got 'tpu'"),
    ({"repeat": 1}, "GRU4Rec's 'repeat' must be True or False. Got 1"),
])
def test_bad_parameters_are_refused_before_training(params, message):
    with pytest.raises(JourneymapError, match=message):
        GRU4Rec(**params).fit(CYCLIC)


def _return_log(n: int, seed: int) -> list[list[str]]:
    """Sessions x, y, x of random distinct items among 200: only a return to the session's first item
    predicts the third click; each item is in few sessions, so the GRU alone recalls x poorly."""
    rng = np.random.default_rng(seed)
    return [[f"i{a}", f"i{b}", f"i{a}"] for a, b in (rng.choice(200, 2, replace=False) for _ in range(n))]


def test_the_repeat_bonus_learns_to_return_to_an_item_of_the_session(tmp_path):
    train, test = _return_log(600, 0), _return_log(200, 1)
    cases = TestCases.from_sessions(test)
    params = {**TINY, "batch_size": 16, "n_sample": 32}
    # Half the test cases are second clicks (y: a guess among 199), half returns to x: 50 is the ceiling.
    plain = evaluate(GRU4Rec(**params), train, cases, metrics=("P@1",), n_resamples=0)["P@1"]
    model = GRU4Rec(**params, repeat=True)
    assert evaluate(model, train, cases, metrics=("P@1",), n_resamples=0)["P@1"] >= 48.0 > plain + 10
    bias = model._network()["repeat_bias"].weight.detach().numpy()[:, 0]
    assert bias[1] > bias[0] + 1  # x was one click ago; returning to y (just clicked) is not rewarded
    loaded = SequenceModel.load(model.save(tmp_path / "repeat.npz"))
    assert loaded.repeat is True and "repeat_bias" in loaded._network()
    np.testing.assert_array_equal(loaded.score_items(test[:5]), model.score_items(test[:5]))


def test_the_repeat_bonus_adds_its_weight_for_each_of_the_last_clicks_of_an_item():
    model = GRU4Rec(**{**TINY, "epochs": 1}, repeat=True).fit(CYCLIC)
    net = model._network()
    with torch.no_grad():
        net["repeat_bias"].weight[:, 0] = 2.0 ** torch.arange(REPEAT_WINDOW)  # one bit per clicks ago
    prefixes = [["p1", "p2", "p1", "nope", "p3"], CYCLE * 5]  # the second: 25 clicks, each item every 5
    with_bonus = model.score_items(prefixes)
    del net["repeat_bias"]
    bonus = with_bonus - model.score_items(prefixes)
    columns = model.vocab_.index_of(CYCLE)
    # Known clicks p1, p2, p1, p3: p3 0 clicks ago, p1 1 and 3, p2 2 (the unknown item is not a click).
    np.testing.assert_allclose(bonus[0, columns], [2 + 8, 4, 1, 0, 0], atol=1e-3)
    # Only the last 20 of the 25 clicks count: p5 0, 5, 10 and 15 clicks ago (not 20), p4 1, 6, 11, 16...
    expected = [sum(2.0 ** ago for ago in range(REPEAT_WINDOW) if ago % 5 == 4 - c) for c in range(5)]
    np.testing.assert_allclose(bonus[1, columns], expected, rtol=1e-6)


def test_a_training_step_adds_the_same_bonus_to_the_sampled_scores():
    net = _network(6, 4, 0.0, 0.0, repeat_window=3)
    with torch.no_grad():
        net["repeat_bias"].weight[:, 0] = torch.tensor([1.0, 10.0, 100.0])
    inputs, targets, sample = torch.tensor([2, 5]), torch.tensor([3, 2]), torch.tensor([2, 4, 0])
    recent = torch.tensor([[2, 3, 2], [5, -1, -1]])  # slot 0: clicks 2, 3, 2 back from its input 2
    hidden = torch.zeros(2, 4)
    plain, _ = _train_step(net, inputs, targets, sample, hidden)
    scores, _ = _train_step(net, inputs, targets, sample, hidden, recent)
    # Columns: the targets 3, 2, then the samples 2, 4, 0; a sampled item gets its bonus too.
    expected = [[10, 1 + 100, 1 + 100, 0, 0], [0, 0, 0, 0, 0]]
    np.testing.assert_allclose((scores - plain).detach().numpy(), expected, atol=1e-5)


def test_the_copy_bonus_shift_is_the_maximum_likelihood_one():
    # 50 items scored alike; in 30% of 1,000 cases the next item is the one clicked last.
    n_items, q, n = 50, 0.3, 1000
    labels = torch.where(torch.arange(n) < int(q * n), 7, 8)
    scores = torch.zeros(n, n_items)
    # exp(s) / (exp(s) + 49) = 0.3 at s = log(0.3 * 49 / 0.7); the cases come in two batches
    batches = [(scores[:600], torch.full((600, 1), 7), labels[:600]),
               (scores[600:], torch.full((400, 1), 7), labels[600:])]
    assert copy_bonus_shift(batches, torch.zeros(1)) == pytest.approx(math.log(q * (n_items - 1) / (1 - q)), abs=1e-5)
    # Item 7 clicked 0 and 1 clicks ago, with a bonus of 1 and 0 there: it gains 1 + 2 * shift.
    shift = copy_bonus_shift([(scores, torch.full((n, 2), 7), labels)], torch.tensor([1.0, 0.0]))
    assert shift == pytest.approx((math.log(q * (n_items - 1) / (1 - q)) - 1) / 2, abs=1e-5)
    assert copy_bonus_shift([], torch.zeros(1)) == 0.0


def test_the_repeat_bonus_is_shifted_to_fit_the_held_out_sessions(tmp_path):
    # Training: x, y, x over 10 fixed pairs, so the GRU itself learns each return and the bonus
    # stays small. The held-out tail (the newest quarter) and the test: returns over random pairs
    # among 200 items, which only the bonus can predict.
    rng = np.random.default_rng(0)
    pairs = [(f"i{2 * k}", f"i{2 * k + 1}") for k in range(10)]
    known = [[a, b, a] for a, b in (pairs[k] for k in rng.integers(0, 10, 450))]
    novel = [[f"i{a}", f"i{b}", f"i{a}"] for a, b in (rng.choice(200, 2, replace=False) for _ in range(150))]
    test = TestCases.from_sessions(_return_log(200, 1))
    params = {**TINY, "batch_size": 16, "n_sample": 32, "validation": 0.25, "epochs": 4, "patience": 4}
    model = GRU4Rec(**params, repeat=True).fit(known + novel)
    record = model.history_["calibrated"]["repeat_bias.weight"]
    shifts = np.subtract(record["fitted"], record["trained"])
    np.testing.assert_allclose(shifts, shifts[0], atol=1e-5)  # one shift for every clicks-ago slot
    bias = model._network()["repeat_bias"].weight.detach().numpy()[:, 0]
    np.testing.assert_allclose(bias, record["fitted"], rtol=1e-6)  # what scores use
    calibrated = 100 * np.mean(rank_cases(model, test) == 1)
    with torch.no_grad():
        model._network()["repeat_bias"].weight[:, 0] = torch.tensor(record["trained"])
    trained = 100 * np.mean(rank_cases(model, test) == 1)
    assert shifts[1] > 1 and calibrated > trained + 10, (shifts, calibrated, trained)
    # Saved and loaded, the model scores with the fitted bonus.
    with torch.no_grad():
        model._network()["repeat_bias"].weight[:, 0] = torch.tensor(record["fitted"])
    loaded = SequenceModel.load(model.save(tmp_path / "calibrated.npz"))
    np.testing.assert_allclose(loaded._network()["repeat_bias"].weight.detach().numpy()[:, 0], record["fitted"],
                               rtol=1e-6)


def test_too_short_sessions_say_what_is_needed():
    with pytest.raises(JourneymapError, match="at least one training session with two or more items"):
        GRU4Rec(**TINY).fit([["a"], ["b"]])


def test_the_models_package_imports_without_torch():
    code = "import sys, journeymap.models as m; assert 'gru4rec' in m.MODELS; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
