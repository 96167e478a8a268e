"""Event tokens and the encoder's self-supervised pre-training (journeymap.models._events, _pretrain)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from journeymap.config import Settings
from journeymap.items import ItemVectors
from journeymap.models import (
    BehaviourModel,
    NotFittedError,
    SequenceModel,
    read_event_log,
)
from journeymap.models._events import (
    BOS,
    FIRST_VALUE,
    GAP_FIRST,
    GAP_IN_SESSION,
    GAP_NEW_SESSION,
    GAP_NO_TIME,
    MISSING,
    N_GAP_TOKENS,
    UNKNOWN,
    Field,
    gap_label,
    gap_tokens,
    log_from_sequences,
    tokenize,
)
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

T0 = datetime(2024, 3, 1, 12, 0, 0)
TINY = {"dim": 16, "layers": 1, "heads": 2, "max_len": 16, "epochs": 3, "finetune_epochs": 3, "verbose": False}

torch.set_num_threads(1)


def small_shop(folder) -> str:
    """A simulated shop small enough to train on in a second: 800 users over 14 days."""
    from journeymap.events import ingest
    from journeymap.simulator import simulate

    result = simulate(users=800, days=14, seed=3, out=folder / "shop.csv")
    store = folder / "shop.duckdb"
    ingest(result.path, store, settings=Settings(secret=SECRET))
    return store


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    store = small_shop(tmp_path_factory.mktemp("small-shop"))
    return store, read_event_log(store, settings=Settings(secret=SECRET))


def ev(user, session, seconds, event_type="product_view", item=None, **extra):
    return {"user_id": user, "session_id": session, "ts": (T0 + timedelta(seconds=seconds)).isoformat(sep=" "),
            "event_type": event_type, "item_id": item, **extra}


# -- tokens ----------------------------------------------------------------------------------------
def test_gap_buckets_are_log2_seconds_in_a_session_and_log2_hours_across_sessions():
    hour = 3600.0
    ts = np.array([0, 0.5, 1.5, 4.5, 1028.5, 1028.5 + 1.5 * hour, 1028.5 + 601.5 * hour, 1028.5 + 601.7 * hour])
    new_session = np.array([True, False, False, False, False, True, True, True])
    first = np.array([True] + [False] * 7)
    assert gap_tokens(ts, new_session, first).tolist() == [
        GAP_FIRST,
        GAP_IN_SESSION + 0,  # 0.5 s: [0, 1)
        GAP_IN_SESSION + 1,  # 1 s: [1, 2)
        GAP_IN_SESSION + 2,  # 3 s: [2, 4)
        GAP_IN_SESSION + 11,  # 1024 s: the last bucket, [1024, inf)
        GAP_NEW_SESSION + 1,  # 1.5 h: [1 h, 2 h)
        GAP_NEW_SESSION + 10,  # 600 h: [512 h, inf)
        GAP_NEW_SESSION + 0,  # 0.2 h, a new session by the source's id: [0, 1 h)
    ]
    assert gap_tokens(None, new_session, first).tolist() == [GAP_FIRST] + [GAP_NO_TIME] * 7
    assert GAP_NEW_SESSION + 10 == N_GAP_TOKENS - 1
    assert gap_label(GAP_IN_SESSION + 2) == "in session, 2-4 s"
    assert gap_label(GAP_IN_SESSION + 11) == "in session, >= 1024 s"
    assert gap_label(GAP_NEW_SESSION + 1) == "new session, 1-2 h"


def test_a_store_reads_as_one_stream_per_user_with_every_event_and_exact_tokens(tmp_path):
    rows = [ev("u1", "a", 0, "page_view"), ev("u1", "a", 3, "product_view", "i1", device="mobile"),
            ev("u1", "a", 10, "add_to_cart", "i1", device="mobile"), ev("u1", "b", 7200, "product_view", "i2"),
            ev("u2", "c", 5, "product_view", "i2", channel="email")]
    store = make_store(tmp_path, rows)
    log = read_event_log(store, settings=Settings(secret=SECRET))
    assert len(log) == 2 and log.events == 5
    u1 = log.stream_of(pseudo("u1"))
    one = log.take([u1])
    assert one.items.tolist() == [None, "i1", "i1", "i2"]
    assert one.event_types.tolist() == ["page_view", "product_view", "add_to_cart", "product_view"]
    assert one.devices.tolist() == [None, "mobile", "mobile", None]
    assert one.end == pytest.approx((T0 + timedelta(seconds=7200)).timestamp())
    assert np.diff(one.sessions).tolist() == [0, 0, 1]

    from journeymap.models import Vocabulary

    vocab = Vocabulary.build([["i2", "i2", "i1"]])  # i2 first: more popular
    kinds = Field(["page_view", "product_view", "add_to_cart"])
    tokens = tokenize(one, vocab, kinds, Field(["mobile"]), Field([]))
    assert tokens.indptr.tolist() == [0, 5]  # a start token, then the four events
    assert tokens.item.tolist() == [BOS, MISSING, FIRST_VALUE + 1, FIRST_VALUE + 1, FIRST_VALUE]
    assert tokens.kind.tolist() == [BOS, FIRST_VALUE, FIRST_VALUE + 1, FIRST_VALUE + 2, FIRST_VALUE + 1]
    assert tokens.gap.tolist() == [BOS, GAP_FIRST, GAP_IN_SESSION + 2, GAP_IN_SESSION + 3, GAP_NEW_SESSION + 1]
    assert tokens.device.tolist() == [BOS, MISSING, FIRST_VALUE, FIRST_VALUE, MISSING]
    # pre-training targets: the next event's tokens; none after the last event
    assert tokens.next_item_any.tolist() == [MISSING, FIRST_VALUE + 1, FIRST_VALUE + 1, FIRST_VALUE, -1]
    assert tokens.next_gap.tolist() == [GAP_FIRST, GAP_IN_SESSION + 2, GAP_IN_SESSION + 3, GAP_NEW_SESSION + 1, -1]
    # the next item (vocabulary index) skips events without one; an unknown item is -2
    assert tokens.next_item.tolist() == [1, 1, 1, 0, -1]
    assert tokenize(one, Vocabulary.build([["i1"]]), kinds, Field([]), Field([])).next_item.tolist() == [0, 0, 0, -2, -1]
    assert tokenize(one, Vocabulary.build([["zz"]]), kinds, Field([]), Field([])).item.tolist()[2] == UNKNOWN
    # after a user's last event the next gap is censored: u1's last event is the store's end (its session may
    # go on: no bound); u2 was last seen 7195 s before the end, so their next event is at least 1-2 h away
    assert tokens.gap_at_least.tolist() == [-1] * 5
    two = tokenize(log.take([log.stream_of(pseudo("u2"))]), vocab, kinds, Field([]), Field([]))
    assert two.gap_at_least.tolist() == [-1, GAP_NEW_SESSION + 1]


def test_plain_sequences_are_one_stream_per_session_without_times():
    log = log_from_sequences([["a", "b"], [], ["c"]], None)
    assert len(log) == 3 and log.lengths.tolist() == [2, 0, 1]
    assert log.ts is None and log.event_types.tolist() == [None, None, None]


# -- pre-training ----------------------------------------------------------------------------------
def test_a_censored_gap_scores_the_probability_of_every_bucket_at_least_as_long():
    from journeymap.models._pretrain import censored_cross_entropy

    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]]))
    total, cases = censored_cross_entropy(lambda x: x, logits, torch.tensor([2, 0, -1]))
    assert cases == 2
    assert float(total) == pytest.approx(-np.log(0.3 + 0.4) - np.log(1.0), abs=1e-6)


def test_pretraining_learns_and_the_encoder_sees_only_the_past(shop):
    _, log = shop
    model = BehaviourModel(**TINY).pretrain(log)
    history = model.history_["pretrain"]
    assert history["epochs"] == 3 and history["validation"][-1] < history["validation"][0]
    assert model.pretrained_ and model.heads_ == []

    # Causality: the state after event t does not change when every later event changes.
    from journeymap.models._pretrain import collate

    stream = int(np.argmax(log.lengths))
    tokens = model._tokens(log.take([stream]))
    n = min(len(tokens.item), model.max_len)
    changed = model._tokens(log.take([stream]))
    cut = n // 2
    changed.item[cut + 1:] = FIRST_VALUE
    changed.kind[cut + 1:] = FIRST_VALUE
    net = model._net().eval()
    with torch.no_grad():
        spans = np.array([[0, n]])
        fields = ("item", "kind", "gap", "device", "channel")
        before = net.encoder(collate(tokens, spans, fields, torch.device("cpu")))[0]
        after = net.encoder(collate(changed, spans, fields, torch.device("cpu")))[0]
    torch.testing.assert_close(before[:cut + 1], after[:cut + 1])
    assert not torch.allclose(before[cut + 1:], after[cut + 1:])


def test_a_pretrained_encoder_is_saved_loaded_and_fine_tuned_later(shop, tmp_path):
    _, log = shop
    model = BehaviourModel(**TINY).pretrain(log)
    loaded = SequenceModel.load(model.save(tmp_path / "encoder.npz"))
    assert isinstance(loaded, BehaviourModel) and loaded.pretrained_
    np.testing.assert_array_equal(loaded.weights_, model.weights_)
    with pytest.raises(NotFittedError, match=r"pre-trained but has no task heads yet; call finetune\(log\)"):
        loaded.predict_user(log.take([0]))
    loaded.finetune(log, np.arange(100))
    assert set(loaded.heads_) == {"next_item", "next_action", "purchase", "churn"}
    assert loaded.history_["pretrain"] == model.history_["pretrain"]


def test_the_same_seed_gives_the_same_weights(shop):
    _, log = shop
    sub = log.take(np.arange(200))
    first = BehaviourModel(**TINY, seed=3).fit_log(sub)
    again = BehaviourModel(**TINY, seed=3).fit_log(sub)
    other = BehaviourModel(**TINY, seed=4).fit_log(sub)
    np.testing.assert_array_equal(first.weights_, again.weights_)
    assert not np.array_equal(first.weights_, other.weights_)


# -- item text vectors -----------------------------------------------------------------------------
def test_catalogue_items_without_events_are_ranked_through_their_text(shop):
    _, log = shop
    items = sorted({i for i in log.items.tolist() if i is not None})
    new = items[:5]
    train = log.keep(np.array([i not in new for i in log.items.tolist()], dtype=bool))
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(items), 8)).astype(np.float32)
    vectors = ItemVectors("test-encoder", items, matrix / np.linalg.norm(matrix, axis=1, keepdims=True))
    model = BehaviourModel(**TINY, text_vectors=True).fit_log(train, vectors)
    assert set(new) <= set(model.vocab_.items.tolist())
    assert model.vocab_.counts[-5:].tolist() == [0] * 5  # known from the catalogue only: the least popular
    np.testing.assert_array_equal(model.item_text_[-5:], vectors.matrix[:5])
    net = model._net()
    assert not net.encoder.seen[-5:].any() and net.encoder.seen[FIRST_VALUE:-5].all()  # never a training target
    scores = model.predict_user(log.take([0]), k=len(model.vocab_))
    ranked = {entry["item"]: entry["score"] for entry in scores["next_items"]}
    assert all(ranked[i] > 0 for i in new)  # a real probability: rankable through the text alone

    plain = BehaviourModel(**TINY).fit_log(train)
    assert not set(new) & set(plain.vocab_.items.tolist())
    with pytest.raises(Exception, match="text vectors come from a store's catalog"):
        BehaviourModel(**TINY, text_vectors=True).fit([["a", "b"]])
