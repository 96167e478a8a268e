"""SASRec on logs whose right answer is known by construction (tiny networks, a few epochs)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from journeymap.evaluation import TestCases, evaluate
from journeymap.exceptions import JourneymapError
from journeymap.models import SASRec, SequenceModel
from journeymap.models._sasrec import _gap_buckets, _windows

CYCLE = ["p1", "p2", "p3", "p4", "p5"]
CYCLIC = [[CYCLE[(start + i) % 5] for i in range(2 + (start * 3) % 6)] for start in range(60)]
TINY = dict(hidden=16, blocks=1, heads=2, max_len=8, dropout=0.0, learning_rate=0.01, batch_size=16, epochs=15,
            validation=0.0, verbose=False)


def test_learns_a_cyclic_log_perfectly():
    test = TestCases.from_sessions([[CYCLE[(s + i) % 5] for i in range(4)] for s in range(5)])
    result = evaluate(SASRec(**TINY), CYCLIC, test, metrics=("P@1", "MRR@20"), n_resamples=0)
    assert result["P@1"] == 100.0


def test_long_sessions_are_cut_into_windows_that_predict_every_click_once():
    from journeymap.models import Vocabulary

    sessions = [list(range(10)), [1], [3, 4]]
    encoded = Vocabulary.build(sessions).encode(sessions)
    start, length = _windows(encoded, max_len=4)
    assert start.tolist() == [0, 4, 8, 11] and length.tolist() == [5, 5, 2, 2]
    assert int((length - 1).sum()) == 9 + 1  # one target per click after each session's first


def test_scores_have_the_catalogue_shape_and_long_prefixes_read_the_last_max_len():
    model = SASRec(**TINY).fit(CYCLIC)
    scores = model.score_items([["p1"], CYCLE * 3 + ["p1"], ["nope", "p1"], []])
    assert scores.shape == (4, 5) and scores.dtype == np.float64
    items, _ = model.predict_next([["p1"], CYCLE * 3 + ["p1"]], k=1)
    assert items[:, 0].tolist() == ["p2", "p2"]
    np.testing.assert_array_equal(scores[0], scores[2])  # an unknown item carries nothing


def test_same_seed_same_model_other_seed_other_model():
    first = SASRec(**TINY, seed=3).fit(CYCLIC).score_items([["p1", "p2"]])
    again = SASRec(**TINY, seed=3).fit(CYCLIC).score_items([["p1", "p2"]])
    other = SASRec(**TINY, seed=4).fit(CYCLIC).score_items([["p1", "p2"]])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_checkpoint_rebuilds_the_network(tmp_path):
    model = SASRec(**TINY).fit(CYCLIC)
    loaded = SequenceModel.load(model.save(tmp_path / "sasrec.npz"))
    assert isinstance(loaded, SASRec) and loaded.get_params() == model.get_params()
    prefixes = [["p3"], ["p1", "p2", "p3"], ["nope"]]
    np.testing.assert_array_equal(loaded.score_items(prefixes), model.score_items(prefixes))


def _return_log(n: int, seed: int) -> list[list[str]]:
    """Sessions x, y, x of random distinct items: only a return to the session's first item predicts
    the third click, whatever the items."""
    rng = np.random.default_rng(seed)
    return [[f"i{a}", f"i{b}", f"i{a}"] for a, b in (rng.choice(60, 2, replace=False) for _ in range(n))]


def test_the_repeat_bonus_learns_to_return_to_an_item_of_the_session(tmp_path):
    train, test = _return_log(600, 0), _return_log(200, 1)
    cases = TestCases.from_sessions(test)
    model = SASRec(**{**TINY, "epochs": 8, "max_len": 4}, repeat=True)
    # Half the test cases are second clicks (y: a guess among 59), half returns to x.
    assert evaluate(model, train, cases, metrics=("P@1",), n_resamples=0)["P@1"] >= 48.0
    bias = model._network()["repeat_bias"].weight.detach().numpy()[:, 0]
    assert bias[1] > bias[0] + 1  # x was one click ago; returning to y (just clicked) is not rewarded
    loaded = SequenceModel.load(model.save(tmp_path / "repeat.npz"))
    assert loaded.repeat is True
    np.testing.assert_array_equal(loaded.score_items(test[:5]), model.score_items(test[:5]))


def test_the_repeat_bonus_is_shifted_to_fit_the_held_out_sessions():
    # As GRU4Rec's: training returns over 6 fixed pairs, which the network learns item by item;
    # the held-out tail (the newest quarter) and the test return over random pairs of 60 items.
    import torch

    from journeymap.evaluation import rank_cases

    rng = np.random.default_rng(0)
    pairs = [(f"i{2 * k}", f"i{2 * k + 1}") for k in range(6)]
    known = [[a, b, a] for a, b in (pairs[k] for k in rng.integers(0, 6, 450))]
    novel = [[f"i{a}", f"i{b}", f"i{a}"] for a, b in (rng.choice(60, 2, replace=False) for _ in range(150))]
    test = TestCases.from_sessions(_return_log(200, 1))
    model = SASRec(**{**TINY, "epochs": 6, "max_len": 4, "validation": 0.25, "patience": 6}, repeat=True)
    model.fit(known + novel)
    record = model.history_["calibrated"]["repeat_bias.weight"]
    shifts = np.subtract(record["fitted"], record["trained"])
    np.testing.assert_allclose(shifts, shifts[0], atol=1e-5)  # one shift for every clicks-ago slot
    calibrated = 100 * np.mean(rank_cases(model, test) == 1)
    with torch.no_grad():
        model._network()["repeat_bias"].weight[:, 0] = torch.tensor(record["trained"])
    trained = 100 * np.mean(rank_cases(model, test) == 1)
    # Half the cases are second clicks (a guess among 59): 50 is the ceiling.
    assert shifts[0] > 1 and calibrated >= 48 > trained + 5, (shifts, calibrated, trained)


def test_the_repeat_bonus_adds_its_weight_for_each_earlier_click_of_an_item():
    import torch

    from journeymap.models._sasrec import _logits, _network

    net = _network(5, 4, 1, 1, 4, 0.0, 0, False, repeat=True)
    with torch.no_grad():
        net["repeat_bias"].weight[:, 0] = torch.tensor([1.0, 10.0, 100.0, 1000.0])
    items = torch.tensor([[2, 3, 2, 5], [4, 5, 5, 5]])  # 5 pads
    states = torch.randn(3, 4)
    rows, steps = torch.tensor([0, 0, 1]), torch.tensor([2, 1, 0])
    plain = states @ net["item_embedding"].weight[:5].T
    bonus = (_logits(net, states, items, rows, steps, 5) - plain).detach().numpy()
    expected = np.zeros((3, 5))
    expected[0, 2], expected[0, 3] = 1 + 100, 10  # row 0 at step 2: item 2 now and 2 clicks ago, 3 one ago
    expected[1, 2], expected[1, 3] = 10, 1  # at step 1: the later click of item 2 is not seen yet
    expected[2, 4] = 1
    np.testing.assert_allclose(bonus, expected, atol=1e-5)


def test_refit_trains_anew_on_every_session_for_the_best_number_of_epochs():
    log = CYCLIC + [["q1", "q2"]] * 15  # only the most recent sessions, held out, show q2 after q1
    held_out = SASRec(**{**TINY, "validation": 0.19, "refit": False, "epochs": 4}).fit(log)
    refit = SASRec(**{**TINY, "validation": 0.19, "epochs": 4}).fit(log)
    assert "refit_epochs" not in held_out.history_
    assert refit.history_["refit_epochs"] == refit.history_["best_epoch"] == len(refit.history_["refit_seconds"])
    assert refit.predict_next([["q1"]], k=1)[0][0, 0] == "q2"
    assert held_out.predict_next([["q1"]], k=1)[0][0, 0] != "q2"


def test_early_stopping_stops_and_keeps_the_best_epoch():
    log = CYCLIC + [["p1", "p3"]] * 15  # the held-out tail contradicts training
    model = SASRec(**{**TINY, "epochs": 40, "patience": 2, "validation": 0.2}).fit(log)
    history = model.history_
    assert history["stopped_early"] and history["epochs"] == history["best_epoch"] + 2 < 40
    assert max(history["validation"]) == history["validation"][history["best_epoch"] - 1]


def test_event_types_are_embedded_and_decide_the_next_item():
    # After x, a viewer goes on to "a" and a shopper who carted x goes to "b": only the type tells.
    log = [["x", "a"], ["x", "b"]] * 40
    types = [["view", "view"], ["cart", "view"]] * 40
    model = SASRec(**TINY).fit(log, event_types=types)
    assert model.event_types_ == ["cart", "view"]
    items, _ = model.predict_next([["x"], ["x"]], k=1, event_types=[["view"], ["cart"]])
    assert items[:, 0].tolist() == ["a", "b"]
    one, _ = model.recommend(["x"], k=1, event_types=["cart"])
    assert one.tolist() == ["b"]
    scores = model.score_items([["x"]], event_types=[["cart"]])
    assert scores[0, model.vocab_.index_of(["b"])[0]] > scores[0, model.vocab_.index_of(["a"])[0]]


def test_time_gaps_are_embedded_when_asked_for():
    t0 = datetime(2024, 1, 1)
    log = [["x", "y", "a"], ["x", "y", "b"]] * 40
    # y right after x leads to a; y a day after x leads to b.
    times = [[t0, t0 + timedelta(seconds=5), t0 + timedelta(seconds=9)],
             [t0, t0 + timedelta(days=1), t0 + timedelta(days=1, seconds=4)]] * 40
    model = SASRec(**{**TINY, "time_gaps": True}).fit(log, times=times)
    items, _ = model.predict_next([["x", "y"], ["x", "y"]], k=1, times=[[0, 5], [0, 86400]])
    assert items[:, 0].tolist() == ["a", "b"]
    assert _gap_buckets([["x", "y", "z"]], [[0, 0, 7]]).tolist() == [1, 2, 5]  # first, 0 s, 7 s -> log2(8) = 3


def test_time_gaps_need_times():
    with pytest.raises(JourneymapError, match=r"time_gaps=True\) reads the time between clicks: give fit"):
        SASRec(**{**TINY, "time_gaps": True}).fit(CYCLIC)


@pytest.mark.parametrize("params, message", [
    ({"hidden": 10, "heads": 3}, r"'hidden' \(10\) must be a multiple of 'heads' \(3\)"),
    ({"max_len": 0}, "'max_len' must be a whole number >= 1. Got 0"),
    ({"dropout": -0.1}, r"'dropout' must be a probability in \[0, 1\). Got -0.1"),
    ({"learning_rate": 0}, "'learning_rate' must be a number > 0. Got 0"),
    ({"epochs": 2.5}, "'epochs' must be a whole number >= 1. Got 2.5"),
])
def test_bad_parameters_are_refused_before_training(params, message):
    with pytest.raises(JourneymapError, match=message):
        SASRec(**params).fit(CYCLIC)
