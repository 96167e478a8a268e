"""GRU4Rec on logs whose right answer is known by construction (tiny networks, a few epochs)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from journeymap.evaluation import TestCases, evaluate
from journeymap.exceptions import JourneymapError
from journeymap.models import GRU4Rec, SequenceModel, Vocabulary
from journeymap.models._gru4rec import _session_parallel

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
])
def test_bad_parameters_are_refused_before_training(params, message):
    with pytest.raises(JourneymapError, match=message):
        GRU4Rec(**params).fit(CYCLIC)


def test_too_short_sessions_say_what_is_needed():
    with pytest.raises(JourneymapError, match="at least one training session with two or more items"):
        GRU4Rec(**TINY).fit([["a"], ["b"]])


def test_the_models_package_imports_without_torch():
    code = "import sys, journeymap.models as m; assert 'gru4rec' in m.MODELS; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
