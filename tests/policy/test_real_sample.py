"""The Open Bandit sample: the Bernoulli-TS policy's click rate estimated from the random policy's
log lands within the interval around what the Bernoulli-TS log itself shows (the on-policy truth)."""

from __future__ import annotations

import pytest

from journeymap.policy import empirical_policy, evaluate_policy, read_log
from tests.conftest import shared

OBP = "obp-open-bandit-sample"


@pytest.fixture(scope="module")
def logs():
    return read_log(shared(f"{OBP}/random/all/all.csv")), read_log(shared(f"{OBP}/bts/all/all.csv"))


def test_uniform_candidate_on_the_random_log_is_on_policy(logs):
    random, _ = logs
    e = evaluate_policy(random, "uniform", estimators=("ips",), ci="normal")["ips"]
    assert e.max_weight == pytest.approx(1.0) and e.value == pytest.approx(38 / 10_000)


def test_bernoulli_ts_from_random_logs_covers_its_own_click_rate(logs):
    random, bts = logs
    truth = bts.decisions["reward"].mean()
    assert truth == pytest.approx(42 / 10_000)
    assert evaluate_policy(bts, "logged", estimators=("ips",), ci="normal")["ips"].value == pytest.approx(truth)
    result = evaluate_policy(random, empirical_policy(bts), estimators=("ips", "snips", "dr"))
    for e in result.estimates:
        assert e.ci[0] <= truth <= e.ci[1], (e.estimator, e.value, e.ci)
        assert 1_000 < e.effective_sample_size < 10_000 and e.mean_weight == pytest.approx(1.0, abs=0.1)
