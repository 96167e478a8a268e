"""The contextual bandit and the online policy around it: choices, learning, checkpoints, the
decision log, and rewards joined from later events exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from journeymap.exceptions import ConfigError, JourneymapError
from journeymap.policy import (
    BanditPolicy,
    ContextualBandit,
    OnlinePolicy,
    PolicyConfig,
    RewardConflictError,
    RewardDefinition,
    UnknownDecisionError,
    evaluate_policy,
    read_log,
)
from journeymap.policy._bandit import EXPLORATIONS
from journeymap.privacy import pseudonymize

SECRET = "test-secret-0123456789abcdef"
T0 = "2024-05-01T12:00:00Z"
BEST = {"x": "a", "y": "b"}  # the trivial world: in context x action a pays 1, in y action b does


def _trained(n: int = 400, **params) -> ContextualBandit:
    bandit = ContextualBandit(seed=1, **params)
    rng = np.random.default_rng(0)
    for i in range(n):
        ctx = "xy"[i % 2]
        action = "ab"[rng.integers(2)]
        bandit.learn({"ctx": ctx}, ["a", "b"], action, 0.5, float(action == BEST[ctx]))
    return bandit


def test_bandit_picks_the_better_action_after_learning():
    bandit = _trained(exploration="epsilon")
    for ctx, best in BEST.items():
        pmf = bandit.probabilities({"ctx": ctx}, ["a", "b"])
        assert bandit.greedy({"ctx": ctx}, ["a", "b"]) == best
        assert pmf[best] == pytest.approx(0.95)  # epsilon 0.1 spread over 2 actions


# The best action depends on the pair: a for a mobile shopper from social and a desktop shopper from
# search, b for the other two; each feature alone says nothing (exclusive or).
PAIRS = {("mobile", "social"): "a", ("desktop", "search"): "a", ("mobile", "search"): "b", ("desktop", "social"): "b"}


@pytest.mark.parametrize(("interactions", "right"), [(("CA", "NA", "CCA", "CNA"), 4), (("CA", "NA"), 3)])
def test_pairs_of_context_features_tell_apart_what_no_single_feature_does(interactions, right):
    bandit = ContextualBandit(exploration="epsilon", interactions=interactions, seed=1)
    rng = np.random.default_rng(0)
    cells = list(PAIRS)
    for i in range(2000):
        device, channel = cells[i % 4]
        action = "ab"[rng.integers(2)]
        bandit.learn({"device": device, "channel": channel}, ["a", "b"], action, 0.5,
                     float(action == PAIRS[device, channel]))
    greedy = {cell: bandit.greedy({"device": cell[0], "channel": cell[1]}, ["a", "b"]) for cell in cells}
    # the default crosses learn all four; features one at a time (-q CA) get three at most
    assert sum(greedy[cell] == best for cell, best in PAIRS.items()) <= right
    if right == 4:
        assert greedy == PAIRS
    assert ("--interactions CCA" in bandit.arguments()) == (right == 4)


def _learned_with(floor: float | None = None, **params) -> dict[str, float]:
    """The pmf in context x after 600 rewards logged with probabilities 0.02, 0.3 or 0.9 (each at
    least ``floor``, when given)."""
    bandit = ContextualBandit(exploration="squarecb", seed=1, **params)
    rng = np.random.default_rng(0)
    for _ in range(600):
        ctx, action, p = "xy"[rng.integers(2)], "abc"[rng.integers(3)], float(rng.choice([0.02, 0.3, 0.9]))
        reward = float(rng.random() < (0.5 if action == BEST.get(ctx) else 0.3))
        bandit.learn({"ctx": ctx}, ["a", "b", "c"], action, p if floor is None else max(p, floor), reward)
    return bandit.probabilities({"ctx": "x"}, ["a", "b", "c"])


def test_clip_p_weighs_a_reward_as_if_its_probability_were_at_least_clip_p():
    # A reward weighs 1 / probability, so a lucky reward for an action chosen with probability 0.02
    # weighs 50 times one taken for sure; clip_p 0.3 caps that at 1 / 0.3.
    clipped = _learned_with(clip_p=0.3)
    assert clipped == _learned_with(floor=0.3, clip_p=None)
    assert clipped != _learned_with(clip_p=None)
    assert "--clip_p 0.3" in ContextualBandit(clip_p=0.3).arguments()
    assert "--clip_p" not in ContextualBandit(clip_p=None).arguments()
    with pytest.raises(JourneymapError, match=r"The bandit's clip_p must be a probability in \(0, 1\], like 0.1. Got 0."):
        ContextualBandit(clip_p=0).arguments()
    with pytest.raises(ConfigError, match=r"policy.clip_p must be a number from 0 to 1, like 0.1. Got 1.5."):
        PolicyConfig.from_mapping({"clip_p": 1.5})
    assert PolicyConfig.from_mapping({"clip_p": 0.2}).bandit().clip_p == 0.2


def test_interactions_are_checked():
    with pytest.raises(JourneymapError, match=r"Each of the bandit's interactions is two or more of the namespaces C "
                                              r"\(context categories\), N \(context numbers\) and A \(the action\), "
                                              r"like 'CA'. Got 'CX'."):
        ContextualBandit(interactions=("CA", "CX")).arguments()
    with pytest.raises(ConfigError, match=r"policy.interactions must be a list of namespace crosses"):
        PolicyConfig.from_mapping({"interactions": "CA"})
    assert PolicyConfig.from_mapping({"interactions": ["CA"]}).bandit().arguments().count("-q ") == 1


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_choice_probability_is_its_share_of_a_pmf_that_sums_to_one(exploration):
    bandit = _trained(100, exploration=exploration)
    actions = [{"id": "a", "features": {"discount": 0.1, "kind": "price"}}, "b", {"id": "c"}]
    for ctx in ("x", "y", "z"):
        action, probability, pmf = bandit.choose({"ctx": ctx, "visits": 3, "new": True}, actions)
        assert list(pmf) == ["a", "b", "c"]
        assert sum(pmf.values()) == pytest.approx(1.0, abs=1e-12)
        assert probability == pmf[action] > 0


def test_the_same_seed_makes_the_same_choices():
    runs = []
    for _ in range(2):
        bandit = _trained(50)
        runs.append([bandit.choose({"ctx": "xy"[i % 2]}, ["a", "b", "c"]).action for i in range(200)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3  # and it explores


def test_a_checkpoint_rebuilds_the_bandit(tmp_path):
    bandit = _trained(exploration="squarecb", learning_rate=0.3, clip_p=0.2)
    path = bandit.save(tmp_path / "bandit.zip", log_lines=7)
    loaded = ContextualBandit.load(path)
    assert loaded.get_params() == bandit.get_params()
    assert (loaded.n_learned_, loaded.metadata_) == (400, {"log_lines": 7})
    for ctx in "xy":
        assert loaded.probabilities({"ctx": ctx}, ["a", "b"]) == bandit.probabilities({"ctx": ctx}, ["a", "b"])
    assert [loaded.choose({"ctx": "x"}, ["a", "b"]).action for _ in range(20)] == \
        [bandit.choose({"ctx": "x"}, ["a", "b"]).action for _ in range(20)]


def test_a_checkpoint_from_before_clip_p_loads_as_the_unclipped_bandit_it_was(tmp_path):
    import zipfile

    bandit = _trained(exploration="squarecb", clip_p=None)
    path = bandit.save(tmp_path / "bandit.zip")
    with zipfile.ZipFile(path) as zf:  # the header as an older journeymap wrote it: no clip_p
        header, model = json.loads(zf.read("bandit.json")), zf.read("model.vw")
    del header["params"]["clip_p"]
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("bandit.json", json.dumps(header))
        zf.writestr("model.vw", model)
    loaded = ContextualBandit.load(old)
    assert loaded.clip_p is None  # not the new default, which its model never learned with
    assert loaded.probabilities({"ctx": "x"}, ["a", "b"]) == bandit.probabilities({"ctx": "x"}, ["a", "b"])


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.zip"
    path.write_text("not a zip")
    with pytest.raises(JourneymapError, match="is not a journeymap bandit checkpoint"):
        ContextualBandit.load(path)


@pytest.mark.parametrize(("actions", "message"), [
    ([], "A decision needs a non-empty list of actions"),
    (["a", {"id": "a"}], "Action 'a' appears twice in one decision; give each action once."),
    ([{"features": {}}], r"Action 1 needs an id \(a non-empty string or an integer\). Got None."),
    ([{"id": "a", "features": {"tags": ["x"]}}], "Feature 'tags' of the action 'a' must be a number, string, "
                                                  "boolean or null. Got list."),
])
def test_bad_actions_are_refused_with_the_reason(actions, message):
    with pytest.raises(JourneymapError, match=message):
        ContextualBandit().choose({}, actions)


def test_learning_checks_its_inputs():
    bandit = ContextualBandit()
    with pytest.raises(JourneymapError, match=r"The chosen action 'c' is not one of the decision's actions \(a, b\)."):
        bandit.learn({}, ["a", "b"], "c", 0.5, 1.0)
    with pytest.raises(JourneymapError, match=r"The chosen action's probability must be in \(0, 1\]. Got 0."):
        bandit.learn({}, ["a", "b"], "a", 0, 1.0)
    with pytest.raises(JourneymapError, match="The bandit's exploration is one of epsilon, softmax, squarecb, bag. "
                                              "Got 'greedy'."):
        ContextualBandit(exploration="greedy").choose({}, ["a"])


# -- the online policy: logging and reward joins -------------------------------------------------------
@pytest.fixture
def policy(tmp_path):
    with OnlinePolicy(tmp_path / "shop.decisions.jsonl", secret=SECRET) as online:
        yield online


def _purchase(user: str, ts: str, **extra) -> dict:
    return {"user_id": user, "ts": ts, "event_type": "purchase", **extra}


def test_a_purchase_within_the_horizon_gives_reward_one(policy):
    d = policy.decide("u1", ["coupon", "nothing"], context={"device": "mobile"}, ts=T0)
    assert policy.pending == 1
    settled = policy.observe([{"user_id": "u1", "ts": "2024-05-01T12:05:00Z", "event_type": "product_view"},
                              _purchase("u1", "2024-05-01T12:29:59Z")])
    assert [(s.decision_id, s.reward, s.source) for s in settled] == [(d.decision_id, 1.0, "event")]
    record = policy.decision(d.decision_id)
    assert record["reward"] == 1.0 and record["rewarded_at"] == "2024-05-01T12:29:59Z"
    assert record["user"] == pseudonymize("u1", SECRET)
    assert policy.bandit.n_learned_ == 1


def test_no_purchase_by_the_horizon_gives_reward_zero(policy):
    d = policy.decide("u1", ["coupon", "nothing"], ts=T0)
    late = policy.observe([_purchase("u1", "2024-05-01T12:30:01Z")])  # a second past the 30 minutes
    assert [(s.decision_id, s.reward, s.source) for s in late] == [(d.decision_id, 0.0, "horizon")]
    assert policy.decision(d.decision_id)["reward"] == 0.0


def test_only_the_same_users_later_purchase_counts(policy):
    d = policy.decide("u1", ["coupon", "nothing"], ts=T0)
    assert policy.observe([_purchase("u2", "2024-05-01T12:10:00Z"),  # another user
                           _purchase("u1", "2024-05-01T11:59:00Z")]) == []  # before the decision
    assert policy.pending == 1
    assert [s.reward for s in policy.observe([{"user_id": "u3", "ts": "2024-05-01T13:00:00Z",
                                               "event_type": "page_view"}])] == [0.0]
    assert policy.decision(d.decision_id)["reward_source"] == "horizon"


def test_stored_events_match_by_pseudonym(policy):
    """The service may pass events as stored, their user ids already pseudonymized."""
    policy.decide("u1", ["coupon", "nothing"], ts=T0)
    settled = policy.observe([_purchase(pseudonymize("u1", SECRET), "2024-05-01T12:01:00")])  # naive = UTC
    assert [s.reward for s in settled] == [1.0]


def test_each_reward_is_joined_and_learned_once(policy):
    d = policy.decide("u1", ["coupon", "nothing"], ts=T0)
    events = [_purchase("u1", "2024-05-01T12:10:00Z"), _purchase("u1", "2024-05-01T12:10:00Z")]
    assert len(policy.observe(events)) == 1
    assert policy.observe(events) == []
    again = policy.reward(d.decision_id, 1.0)
    assert (again.joined, policy.bandit.n_learned_, policy.settled) == (False, 1, 1)
    with pytest.raises(RewardConflictError, match=f"Decision '{d.decision_id}' already has reward 1.0; a reward is "
                                                  "joined and learned once."):
        policy.reward(d.decision_id, 0.0)
    with pytest.raises(UnknownDecisionError, match="No decision 'nope' here."):
        policy.reward("nope", 1.0)
    assert len(read_log(policy.log_path)) == 1


def test_an_explicit_reward_settles_a_pending_decision(policy):
    d = policy.decide("u1", ["coupon", "nothing"], ts=T0)
    settled = policy.reward(d.decision_id, 0.5)
    assert (settled.reward, settled.source, settled.joined) == (0.5, "explicit", True)
    assert policy.observe([_purchase("u1", "2024-05-01T12:10:00Z")]) == []


def test_amount_rewards_sum_the_purchases_until_the_horizon(tmp_path):
    config = PolicyConfig(reward=RewardDefinition(value="amount", horizon=timedelta(hours=1)))
    with OnlinePolicy(tmp_path / "d.jsonl", secret=SECRET, config=config) as policy:
        d = policy.decide("u1", ["coupon", "nothing"], ts=T0)
        assert policy.observe([_purchase("u1", "2024-05-01T12:10:00Z", price=20.0, quantity=2),
                               _purchase("u1", "2024-05-01T12:10:00Z", price=5.5)]) == []
        settled = policy.settle("2024-05-01T13:00:00Z")
        assert [(s.decision_id, s.reward) for s in settled] == [(d.decision_id, 45.5)]


def test_explicit_only_rewards_wait_past_any_horizon(tmp_path):
    config = PolicyConfig(reward=RewardDefinition(event_type=None, default=None))
    with OnlinePolicy(tmp_path / "d.jsonl", secret=SECRET, config=config) as policy:
        d = policy.decide("u1", ["coupon", "nothing"], ts=T0)
        assert policy.observe([_purchase("u1", "2024-06-01T00:00:00Z")]) == []
        assert policy.settle("2025-01-01T00:00:00Z") == []
        assert policy.reward(d.decision_id, 1.0).joined


def test_a_restart_resumes_pending_decisions_and_relearns_unsaved_rewards(tmp_path):
    path = tmp_path / "shop.decisions.jsonl"
    first = OnlinePolicy(path, secret=SECRET)
    d1 = first.decide("u1", ["a", "b"], ts=T0)
    d2 = first.decide("u2", ["a", "b"], ts=T0)
    first.reward(d1.decision_id, 1.0)
    # no close(): as after a killed process, nothing but the flushed files remain
    second = OnlinePolicy(path, secret=SECRET)
    assert (second.pending, second.settled, second.bandit.n_learned_) == (1, 1, 1)
    assert second.observe([_purchase("u2", "2024-05-01T12:01:00Z")])[0].decision_id == d2.decision_id
    second.close()
    third = OnlinePolicy(path, secret=SECRET)  # from the checkpoint, nothing to replay
    assert (third.pending, third.settled, third.bandit.n_learned_) == (0, 2, 2)
    assert third.bandit.probabilities({}, ["a", "b"]) == second.bandit.probabilities({}, ["a", "b"])
    third.close()


def test_a_line_cut_short_by_a_crash_is_dropped_on_restart(tmp_path):
    path = tmp_path / "shop.decisions.jsonl"
    first = OnlinePolicy(path, secret=SECRET)
    first.reward(first.decide("u1", ["a", "b"], ts=T0).decision_id, 1.0)
    with open(path, "a") as fh:
        fh.write('{"decision_id": "cut sh')
    with OnlinePolicy(path, secret=SECRET) as second:
        second.reward(second.decide("u2", ["a", "b"], ts=T0).decision_id, 0.0)
    assert read_log(path).decisions["reward"].tolist() == [1.0, 0.0]


def test_an_event_from_a_clock_far_ahead_does_not_close_decisions(policy):
    policy.decide("u1", ["a", "b"])  # now
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert policy.observe([{"user_id": "u9", "ts": tomorrow, "event_type": "page_view"}]) == []
    assert policy.pending == 1


def test_the_log_is_a_decision_log_and_the_bandit_a_policy_to_evaluate(policy):
    """Every decision is logged with its context, action set and propensity; the bandit read back
    as a policy gives each logged decision the very pmf it was chosen from."""
    actions = [{"id": "coupon", "features": {"discount": 0.1, "kind": "price", "new": True}},
               {"id": "banner", "features": {"kind": "shipping"}}, "nothing"]
    profile = {"sessions": 4, "lifecycle": "active", "top_categories": [{"name": "shoes", "weight": 1, "share": 1}]}
    decisions = [policy.decide(f"u{i}", actions, context={"device": "mobile" if i % 2 else "desktop",
                                                          "visit": i % 3, "returning": i % 2 == 0},
                               profile=profile if i % 3 else None, ts=T0) for i in range(30)]
    log = policy.log(pending=True)
    assert len(log) == 30 and log.summary()["pending"] == 30
    assert json.loads(policy.pending_path.read_text().splitlines()[0])["context"] == \
        {"device": "desktop", "visit": 0, "returning": True}
    propensities = log.decisions["propensity"].to_numpy()
    assert propensities == pytest.approx([d.probability for d in decisions])
    assert BanditPolicy(policy.bandit).probabilities(log).chosen == pytest.approx(propensities)

    for i, d in enumerate(decisions):
        policy.reward(d.decision_id, float(i % 2))
    settled = read_log(policy.log_path)
    assert len(settled) == 30 and settled.summary()["pending"] == 0
    assert set(settled.context.columns) >= {"device", "visit", "returning", "sessions", "lifecycle", "top_category"}
    result = evaluate_policy(settled, BanditPolicy(policy.bandit, greedy=True), ci="normal")
    assert {e.estimator for e in result.estimates} == {"ips", "snips", "dr"}


def test_policy_settings_read_from_a_config_table():
    config = PolicyConfig.from_mapping({"exploration": "softmax", "reward": {"horizon": "2h", "value": "amount"}})
    assert (config.exploration, config.reward.horizon, config.reward.value) == ("softmax", timedelta(hours=2), "amount")
    with pytest.raises(ConfigError, match="Unknown policy setting"):
        PolicyConfig.from_mapping({"explore": "softmax"})
    with pytest.raises(ConfigError, match="The policy.reward.horizon must be a positive duration like '30m', '1h' or '7d'. "
                                          "Got '-5m'."):
        PolicyConfig.from_mapping({"reward": {"horizon": "-5m"}})
    with pytest.raises(ConfigError, match="A reward's value is 'one'"):
        RewardDefinition(value="revenue")
