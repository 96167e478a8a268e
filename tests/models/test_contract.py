"""One contract, run on every registered model (implicit's RecommenderBaseTestMixin, sklearn's checks)."""

from __future__ import annotations

import numpy as np
import pytest

from journeymap.exceptions import FormatError, JourneymapError
from journeymap.models import MODELS, NotFittedError, SequenceModel, make_model

# A toy log: two routes through a small catalogue, plus a popular item everyone sees.
TOY = [["home", "a", "b", "c"], ["home", "a", "b"], ["home", "x", "y"], ["a", "b", "c", "home"],
       ["x", "y", "z"], ["home", "x", "y", "z"], ["b", "c"], ["home"]]
PREFIXES = [["home", "a"], ["x"], ["home", "x", "y"], ["c"]]


@pytest.fixture(params=sorted(MODELS))
def name(request) -> str:
    return request.param


def fitted(name: str) -> SequenceModel:
    return make_model(name).fit(TOY)


def test_fit_returns_self_and_learns_state_ending_in_underscore(name):
    model = make_model(name)
    params = model.get_params()
    assert model.fit(TOY) is model
    assert model.get_params() == params  # __init__'s parameters are never changed by fit
    assert sorted(model.vocab_.items.tolist()) == sorted({i for s in TOY for i in s})
    assert all(attr.endswith("_") for attr in model._state)


def test_predicting_before_fit_says_to_call_fit(name):
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(sequences\) first"):
        make_model(name).predict_next([["a"]])


def test_predict_next_ranks_known_items_best_first(name):
    items, scores = fitted(name).predict_next(PREFIXES, k=3)
    assert items.shape == scores.shape == (len(PREFIXES), 3)
    assert set(items.ravel().tolist()) <= {i for s in TOY for i in s}
    assert (np.diff(scores, axis=1) <= 0).all()
    for row in items:
        assert len(set(row.tolist())) == 3


def test_predictions_are_deterministic(name):
    first = fitted(name).predict_next(PREFIXES, k=5)
    again = fitted(name).predict_next(PREFIXES, k=5)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_save_and_load_give_identical_scores(name, tmp_path):
    model = fitted(name)
    path = model.save(tmp_path / f"{name}.npz")
    loaded = SequenceModel.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.score_items(PREFIXES), model.score_items(PREFIXES))
    np.testing.assert_array_equal(loaded.predict_next(PREFIXES)[0], model.predict_next(PREFIXES)[0])
    assert type(model).load(path).get_params() == model.get_params()


def test_integer_item_ids_survive_a_round_trip(name, tmp_path):
    model = make_model(name).fit([[1, 2, 3], [2, 3, 4], [1, 2, 4]])
    loaded = SequenceModel.load(model.save(tmp_path / "m.npz"))
    items, _ = loaded.predict_next([[1, 2]], k=4)
    assert items.dtype.kind == "i"
    np.testing.assert_array_equal(items, model.predict_next([[1, 2]], k=4)[0])


def test_unknown_items_in_a_prefix_are_handled(name):
    model = fitted(name)
    items, scores = model.predict_next([["never-seen"], ["home", "never-seen"], []], k=4)
    assert items.shape == (3, 4)
    assert np.isfinite(scores).all()
    # A prefix of unknown items carries no information: it ranks like an empty one.
    np.testing.assert_array_equal(items[0], items[2])


def test_k_larger_than_the_catalogue_returns_every_item(name):
    model = fitted(name)
    items, scores = model.predict_next(PREFIXES, k=1000)
    assert items.shape == (len(PREFIXES), len(model.vocab_))
    for row in items:
        assert sorted(row.tolist()) == sorted(model.vocab_.items.tolist())


def test_recommend_is_predict_next_for_one_session(name):
    model = fitted(name)
    items, scores = model.recommend(["home", "a"], k=3)
    batch_items, batch_scores = model.predict_next([["home", "a"]], k=3)
    np.testing.assert_array_equal(items, batch_items[0])
    unseen, _ = model.recommend(["home", "a"], k=3, exclude_seen=True)
    assert len(unseen) == 3 and not {"home", "a"} & set(unseen.tolist())


def test_bad_inputs_get_clear_errors(name):
    model = fitted(name)
    with pytest.raises(JourneymapError, match="must be a list of item ids; number 0 is str"):
        model.predict_next(["home"])
    with pytest.raises(JourneymapError, match="k must be a positive number"):
        model.predict_next(PREFIXES, k=0)
    with pytest.raises(JourneymapError, match="all integers or all text; got int, str"):
        make_model(name).fit([[1, "a"]])
    with pytest.raises(JourneymapError, match="has no parameter 'nope'"):
        make_model(name, nope=1)


def test_load_refuses_files_that_are_not_checkpoints(name, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a model")
    with pytest.raises(FormatError, match="is not a journeymap model checkpoint"):
        SequenceModel.load(bad)
    path = fitted(name).save(tmp_path / "m.npz")
    other = next(cls for n, cls in MODELS.items() if n != name)
    with pytest.raises(FormatError, match=f"holds a {type(fitted(name)).__name__} model, not a {other.__name__}"):
        other.load(path)


def test_unknown_model_name_lists_the_models():
    with pytest.raises(JourneymapError, match="Unknown model 'gru'; models are pop, markov, sknn, iknn"):
        make_model("gru")
