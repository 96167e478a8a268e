"""int8 dynamic quantization of the neural models (journeymap.models.quantize): the quantized copy
ranks like the float model, scores differently, and refuses what it cannot do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.models import (
    BehaviourModel,
    GRU4Rec,
    NotFittedError,
    SASRec,
    SequenceModel,
    make_model,
    quantize,
    read_event_log,
)
from tests.conftest import SECRET
from tests.models.test_pretrain import TINY, small_shop

torch.set_num_threads(1)


def sessions(n: int, seed: int) -> list[list[str]]:
    """Sessions over 100 items where the next item is one of three known successors of the last."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        item, session = int(rng.integers(100)), []
        for _ in range(int(rng.integers(2, 9))):
            session.append(f"i{item}")
            item = (item * 7 + 3 + int(rng.integers(3))) % 100
        out.append(session)
    return out


TRAIN = sessions(1200, seed=0)
PREFIXES = [s[:-1] for s in sessions(300, seed=1)]
SMALL = {
    # heads=2 puts the float SASRec on torch's fused encoder path, which int8 layers must stay off
    "sasrec": {"hidden": 32, "blocks": 1, "heads": 2, "max_len": 8, "epochs": 5, "validation": 0.0, "verbose": False},
    "gru4rec": {"hidden": 32, "n_sample": 64, "epochs": 5, "validation": 0.0, "verbose": False},
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def fitted(request) -> SequenceModel:
    return make_model(request.param, **SMALL[request.param]).fit(TRAIN)


def overlap_at_20(first: SequenceModel, second: SequenceModel) -> np.ndarray:
    """Per prefix, the share of the first model's top 20 that the second model's top 20 holds too."""
    a, _ = first.predict_next(PREFIXES, k=20)
    b, _ = second.predict_next(PREFIXES, k=20)
    return np.array([len(set(x) & set(y)) / 20 for x, y in zip(a.tolist(), b.tolist())])


def test_the_quantized_copy_ranks_like_the_float_model_with_other_scores(fitted):
    before = fitted.score_items(PREFIXES)
    quantized = quantize(fitted)
    assert isinstance(quantized, type(fitted)) and quantized.device == "cpu"
    assert quantized.quantized_ == {"sasrec": ("blocks.layers.0.linear1", "blocks.layers.0.linear2"),
                                    "gru4rec": ("gru",)}[fitted.name]
    scores = quantized.score_items(PREFIXES)
    assert scores.shape == before.shape
    assert np.abs(scores - before).max() > 1e-4  # int8 weights really score
    overlap = overlap_at_20(fitted, quantized)
    # observed: mean 0.996 (sasrec) and 0.994 (gru4rec), worst prefix 0.95 and 0.90
    assert overlap.mean() >= 0.97 and overlap.min() >= 0.75
    np.testing.assert_array_equal(fitted.score_items(PREFIXES), before)  # the float model is untouched


def test_quantizing_after_load_gives_the_same_model(fitted, tmp_path):
    loaded = SequenceModel.load(fitted.save(tmp_path / "model.npz"))
    np.testing.assert_array_equal(quantize(loaded).score_items(PREFIXES), quantize(fitted).score_items(PREFIXES))


def test_a_quantized_model_is_not_saved_and_does_not_learn(tmp_path):
    quantized = quantize(SASRec(**SMALL["sasrec"]).fit(TRAIN[:200]))
    with pytest.raises(JourneymapError, match=r"This SASRec model is int8-quantized, and a checkpoint holds float "
                                              r"weights, so it is not saved; save the float model and quantize it "
                                              r"again after load_model\(path\)\."):
        quantized.save(tmp_path / "quantized.npz")
    assert not (tmp_path / "quantized.npz").exists()
    with pytest.raises(JourneymapError, match="int8-quantized for inference and does not learn; fit the float model"):
        quantized.fit(TRAIN)
    with pytest.raises(JourneymapError, match="This SASRec model is quantized already."):
        quantize(quantized)


@pytest.mark.parametrize("name", ["pop", "markov", "sknn", "iknn"])
def test_models_without_a_network_are_refused_by_name(name):
    model = make_model(name).fit(TRAIN[:50])
    label = type(model).__name__
    with pytest.raises(JourneymapError, match=rf"quantize\(\) makes the torch network of a neural model \(gru4rec, "
                                              rf"sasrec, behaviour\) int8; a {label} model \('{name}'\) scores from "
                                              r"counts and has no network to quantize\."):
        quantize(model)


def test_an_unfitted_model_is_not_quantized():
    with pytest.raises(NotFittedError, match=r"call fit\(sequences\) first"):
        quantize(GRU4Rec())


def test_the_behaviour_model_answers_predict_user_quantized(tmp_path_factory):
    log = read_event_log(small_shop(tmp_path_factory.mktemp("shop")), settings=Settings(secret=SECRET))
    model = BehaviourModel(**{**TINY, "max_len": 64}).fit_log(log)
    quantized = quantize(model)
    assert "tasks.purchase" in quantized.quantized_ and "encoder.blocks.0.attention.qkv" in quantized.quantized_
    for user in range(5):
        answer, float_answer = quantized.predict_user(log.take([user])), model.predict_user(log.take([user]))
        assert answer.keys() == float_answer.keys()
        for head in ("purchase_propensity", "churn_propensity"):
            assert answer[head] == pytest.approx(float_answer[head], abs=0.01)  # observed: within 0.004
        top = {x["item"] for x in answer["next_items"]} & {x["item"] for x in float_answer["next_items"]}
        assert len(top) >= 17  # of 20; observed: 20
    assert quantized.predict_user([])["events"] == 0
