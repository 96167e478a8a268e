"""Estimators on logs with an obvious right answer: a uniform logging policy with known click rates,
the logging policy evaluated on itself, and a 4-row log computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from journeymap.exceptions import FormatError, JourneymapError
from journeymap.models._base import NotFittedError
from journeymap.policy import (
    ActionTable,
    BetaThompson,
    FixedAction,
    Logged,
    RewardModel,
    Uniform,
    empirical_policy,
    evaluate_policy,
    from_records,
    ips,
    parse_policy,
    snips,
)
from tests.policy.conftest import CLICK_RATE, FOUR, uniform_log, uniform_records


@pytest.fixture(scope="module")
def log():
    return uniform_log()


@pytest.mark.parametrize("action", ["a", "c"])
@pytest.mark.parametrize("ci", ["bootstrap", "normal"])
def test_fixed_action_value_is_recovered_within_the_interval(log, action, ci):
    result = evaluate_policy(log, f"action:{action}", estimators=("ips", "snips", "dr"), ci=ci)
    truth = CLICK_RATE[action]
    for e in result.estimates:
        assert e.ci[0] <= truth <= e.ci[1], (e.estimator, e.value, e.ci)
        assert abs(e.value - truth) < 0.05
        assert e.n == 6000 and e.max_weight == 3.0
        assert e.effective_sample_size == pytest.approx(6000 / 3, rel=0.05)  # a third of the decisions count
    assert result["dr"].ci[1] - result["dr"].ci[0] < result["ips"].ci[1] - result["ips"].ci[0]  # the model helps


def test_logged_policy_gives_the_on_policy_mean_exactly(log):
    result = evaluate_policy(log, "logged", estimators=("ips", "snips", "dr", "dm"))
    mean = log.decisions["reward"].mean()
    for name in ("ips", "snips", "dr"):
        assert result[name].value == pytest.approx(mean, abs=1e-12)
    e = result["ips"]
    assert e.max_weight == 1.0 and e.mean_weight == 1.0 and e.effective_sample_size == pytest.approx(6000)
    assert e.logged_value == pytest.approx(mean) and e.lift == pytest.approx(0, abs=1e-12)


def test_uniform_candidate_on_uniform_log_has_weights_one(log):
    e = ips(log, Uniform())
    assert e.max_weight == pytest.approx(1.0) and e.value == pytest.approx(log.decisions["reward"].mean())


def test_four_rows_by_hand():
    four = from_records(FOUR)
    # uniform over {a, b}: w = 0.5 / [0.5, 0.25, 0.5, 0.25] = [1, 2, 1, 2]; rewards [1, 0, 1, 1]
    e = ips(four, "uniform", ci="normal")
    assert e.value == pytest.approx((1 + 0 + 1 + 2) / 4)
    se = math.sqrt(2 / 3) / 2  # terms [1, 0, 1, 2]: sample sd sqrt(2/3), over sqrt(4)
    assert e.std_error == pytest.approx(se)
    assert e.ci == pytest.approx((1 - 1.959964 * se, 1 + 1.959964 * se), rel=1e-6)
    assert e.effective_sample_size == pytest.approx(36 / 10) and e.max_weight == 2.0 and e.mean_weight == 1.5
    assert snips(four, "uniform").value == pytest.approx(4 / 6)
    # always a: w = [2, 0, 0, 4]
    assert ips(four, "action:a").value == pytest.approx((2 + 4) / 4)
    assert snips(four, "action:a").value == pytest.approx(1.0)
    assert ips(four, "logged").value == pytest.approx(3 / 4)


def test_bootstrap_is_seeded_and_snips_resamples_the_ratio():
    four = from_records(FOUR)
    first = snips(four, "action:a", n_resamples=500, seed=3)
    assert snips(four, "action:a", n_resamples=500, seed=3).ci == first.ci
    assert first.ci == (1.0, 1.0)  # every decision that took a was clicked: any resample's ratio is 1


def test_pending_rewards_are_left_out_and_counted():
    log = uniform_log(n=600, pending=100)
    result = evaluate_policy(log, "logged", estimators=("ips",))
    assert result["ips"].n == 500 and result.log["pending"] == 100 and result.log["rewarded"] == 500


def test_policy_table_from_file_matches_the_same_rule(tmp_path, log):
    path = tmp_path / "policy.csv"
    path.write_text("decision_id,action,probability\n" + "".join(f"{d},c,1\n" for d in log.decisions["decision_id"]))
    from_file = evaluate_policy(log, f"file:{path}", estimators=("ips", "snips"))
    fixed = evaluate_policy(log, FixedAction("c"), estimators=("ips", "snips"))
    assert from_file["ips"].value == fixed["ips"].value and from_file["snips"].value == fixed["snips"].value
    assert parse_policy(str(path)).name == f"file:{path}"  # a bare path is a file


def test_policy_table_by_position_and_for_every_decision():
    four = from_records([dict(r, position=i % 2) for i, r in enumerate(FOUR)])
    import pandas as pd

    by_slot = ActionTable(pd.DataFrame({"position": [0, 1], "action": ["a", "b"], "probability": [1.0, 1.0]}))
    # slot 0 holds decisions 1 and 3 (a, b), slot 1 decisions 2 and 4 (b, a): weights [2, 4, 0, 0]
    assert ips(four, by_slot).value == pytest.approx((2 * 1 + 4 * 0) / 4)
    everywhere = ActionTable(pd.DataFrame({"action": ["a", "b"], "probability": [0.5, 0.5]}))
    assert ips(four, everywhere).value == ips(four, "uniform").value


@pytest.mark.parametrize(("text", "message"), [
    ("decision_id,action,probability\n1,a,0.7\n1,b,0.2\n", "the probabilities for decision_id 1 must sum to 1. Got 0.9."),
    ("decision_id,action,probability\n1,a,1.5\n", "p.csv, line 2: field 'probability' must be a number in [0, 1]. Got '1.5'."),
    ("decision_id,action\n1,a\n", "a policy table needs columns action and probability"),
    ("decision_id,action,probability\n1,a,0.5\n1,a,0.5\n", "p.csv, line 3: action 'a' appears twice for the same decision_id."),
])
def test_bad_policy_files_are_refused(tmp_path, text, message):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        ActionTable.read(path)


def test_policy_that_does_not_cover_the_log_is_refused(tmp_path):
    four = from_records(FOUR)
    path = tmp_path / "p.csv"
    path.write_text("decision_id,action,probability\n1,a,1\n2,a,1\n3,a,1\n")
    with pytest.raises(JourneymapError, match=r"p.csv has no probabilities for decision '4' \(decision_id 4\)"):
        ips(four, f"file:{path}")
    path.write_text("action,probability\nz,1\n")
    with pytest.raises(JourneymapError, match=r"gives probability to action\(s\) z that synthetic never offers"):
        ips(from_records(FOUR, source="synthetic"), f"file:{path}")
    with pytest.raises(FormatError, match="Action 'z' is not offered anywhere in decisions; its actions are a, b."):
        ips(four, "action:z")
    partial = from_records([FOUR[0], dict(FOUR[1], actions=["b"], action="b", propensity=1.0)])
    with pytest.raises(JourneymapError, match=r"decision '2' \(record 2\) does not offer action 'a'"):
        ips(partial, "action:a")


def test_empirical_policy_is_the_logged_action_share_per_slot():
    four = from_records([dict(r, position=i % 2) for i, r in enumerate(FOUR)])
    table = empirical_policy(four).table.sort_values(["position", "action"])
    assert table.to_dict("records") == [
        {"position": 0, "action": "a", "probability": 0.5}, {"position": 0, "action": "b", "probability": 0.5},
        {"position": 1, "action": "a", "probability": 0.5}, {"position": 1, "action": "b", "probability": 0.5}]


def test_thompson_slot_probabilities_match_the_beta_integral():
    # P(Beta(2, 1) draw > Uniform draw) = integral of x * 2x over [0, 1] = 2/3
    ts = BetaThompson({"a": 2, "b": 1}, {"a": 1, "b": 1}, n_sim=200_000, seed=1)
    table = ts.table([1, 2]).table.set_index(["position", "action"])["probability"]
    assert table[(1, "a")] == pytest.approx(2 / 3, abs=0.005) and table[(2, "a")] == pytest.approx(1 / 3, abs=0.005)
    assert table[(1, "a")] + table[(1, "b")] == pytest.approx(1.0)


def test_thompson_priors_from_json(tmp_path):
    path = tmp_path / "priors.json"
    path.write_text('{"alpha": [1000, 1], "beta": [1, 1000], "n_sim": 1000}')
    log = from_records([dict(r, actions=["0", "1"], action="0" if r["action"] == "a" else "1") for r in FOUR])
    assert ips(log, f"thompson:{path}").value == pytest.approx(ips(log, "action:0").value)
    path.write_text('{"alpha": [1]}')
    with pytest.raises(FormatError, match="priors are a JSON object with 'alpha' and 'beta'"):
        parse_policy(f"thompson:{path}")


def test_doubly_robust_uses_a_cross_fitted_reward_model(log):
    result = evaluate_policy(log, "action:b", estimators=("dr", "dm"), folds=3)
    assert result.reward_model == {"kind": "logistic", "C": 1.0, "features": 1 + 2 + 1 + 3, "folds": 3}
    # visits (standardised), device (2 levels), position (1 slot), the action (3): 7 features
    assert result["dm"].value == pytest.approx(CLICK_RATE["b"], abs=0.03)


def test_reward_model_contract(log):
    model = RewardModel()
    with pytest.raises(NotFittedError, match=r"not fitted yet: call fit\(log\) first"):
        model.predict(log)
    q = model.fit(log).predict(log)
    assert q.shape == (6000, 3) and np.allclose(q.mean(axis=0), [0.2, 0.5, 0.8], atol=0.03)
    real = from_records([dict(r, reward=r["reward"] * 10 + 1) for r in uniform_records(600)])
    q = RewardModel().fit(real).predict(real)
    assert RewardModel().fit(real).describe()["kind"] == "ridge" and np.allclose(q.mean(axis=0), [3, 6, 9], atol=0.6)
    with pytest.raises(JourneymapError, match="A logistic reward model needs 0/1 rewards"):
        RewardModel(kind="logistic").fit(real)


def test_breakdown_by_position():
    log = from_records([dict(r, position=i % 2) for i, r in enumerate(uniform_records(900))])
    result = evaluate_policy(log, "logged", estimators=("ips",), by="position")
    assert list(result.groups) == ["position=0", "position=1"]
    assert sum(g[0].n for g in result.groups.values()) == 900
    assert set(result.to_frame()["group"].fillna("all")) == {"all", "position=0", "position=1"}


def test_results_have_dict_frame_and_figure(log):
    result = evaluate_policy(log, "action:a", estimators=("ips", "snips"), n_resamples=200)
    data = result.to_dict()
    assert [e["estimator"] for e in data["estimates"]] == ["ips", "snips"] and data["warnings"] == []
    assert set(data["estimates"][0]) >= {"estimate", "ci", "n", "effective_sample_size", "max_weight", "lift"}
    assert list(result.to_frame()["estimator"]) == ["ips", "snips"]
    one = result["ips"]
    assert one.to_frame().loc[0, "ci_low"] == one.ci[0]
    fig = result.figure()
    assert list(fig.data[0].x) == ["IPS", "SNIPS"] and fig.data[0].error_y.array[0] == pytest.approx(one.ci[1] - one.value)
    assert one.figure().data[0].y[0] == one.value
    with pytest.raises(KeyError, match="No dr estimate here; estimators run: ips, snips"):
        result["dr"]


def test_no_overlap_is_said_plainly():
    four = from_records([dict(r, actions=["a", "b", "c"]) for r in FOUR])
    result = evaluate_policy(four, "action:c", estimators=("ips", "snips"), ci="normal")
    assert result["ips"].value == 0 and math.isnan(result["snips"].value)
    assert result.warnings[0].startswith("No logged decision took an action the candidate policy would take")


@pytest.mark.parametrize(("options", "message"), [
    ({"estimators": ("ips", "magic")}, "Estimators are some of ips, snips, dr, dm. Got 'magic'."),
    ({"ci": "exact"}, "The interval method is bootstrap or normal. Got 'exact'."),
    ({"confidence": 95}, "The confidence level must be between 0 and 1, like 0.95. Got 95."),
    ({"by": "user"}, "A breakdown is by position (or none). Got 'user'."),
    ({"policy": "best"}, "A policy is one of uniform, logged, action:ID, file:PATH, empirical:LOG, "
                         "thompson:PRIORS.json (a bare path means file:PATH). Got 'best'."),
])
def test_bad_options_are_refused(options, message):
    four = from_records(FOUR)
    options = {"policy": "uniform", **options}
    with pytest.raises(JourneymapError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        evaluate_policy(four, **options)


def test_a_log_without_rewards_cannot_be_evaluated():
    pending = from_records([dict(r, reward=None) for r in FOUR])
    with pytest.raises(JourneymapError, match=r"No decision in decisions has a reward yet \(4 pending\)"):
        evaluate_policy(pending, Logged())
