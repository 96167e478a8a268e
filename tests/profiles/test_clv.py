"""BG/NBD, Gamma-Gamma and CLV against the papers' formulas, published numbers and simulations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad

from journeymap.exceptions import JourneymapError
from journeymap.profiles._clv import (
    BetaGeoModel,
    GammaGammaModel,
    _bgnbd_ll_and_grad,
    _gg_ll_and_grad,
    bgnbd_log_likelihood,
    customer_lifetime_value,
    gamma_gamma_log_likelihood,
    rfm_summary,
    simulate_bgnbd,
    simulate_gamma_gamma,
)

# Published CDNOW estimates (time in weeks), as lifetimes reports them.
CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
CDNOW_GG = {"p": 6.25, "q": 3.74, "v": 15.44}
# A day-scale population: ~7 purchases a year on average, half leave within a few purchases.
TRUE = {"r": 0.75, "alpha": 40.0, "a": 0.8, "b": 2.5}


def hyp2f1_series(a: float, b: float, c: float, z: float) -> float:
    """Gauss's series, summed until the terms vanish (|z| < 1), independent of scipy."""
    term, total, n = 1.0, 1.0, 0
    while abs(term) > 1e-17 * abs(total):
        term *= (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        total += term
        n += 1
    return total


def bgnbd_likelihood_direct(r, alpha, a, b, x, tx, T) -> float:
    """FHL 2005 eq. 6 written out with Gamma and Beta functions, no logs."""
    def beta(u: float, v: float) -> float:
        return math.gamma(u) * math.gamma(v) / math.gamma(u + v)

    nbd = math.gamma(r + x) * alpha**r / math.gamma(r)
    out = beta(a, b + x) / beta(a, b) * nbd / (alpha + T) ** (r + x)
    if x > 0:
        out += beta(a + 1, b + x - 1) / beta(a, b) * nbd / (alpha + tx) ** (r + x)
    return out


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    ages = np.random.default_rng(100).uniform(180, 720, 20_000)
    return simulate_bgnbd(20_000, **TRUE, T=ages, seed=0)


# ---------------------------------------------------------------------------------------------
# BG/NBD


def test_simulator_mean_frequency_is_eq9() -> None:
    sim = simulate_bgnbd(20_000, **TRUE, T=365.0, seed=1)
    assert (sim["recency"] <= sim["T"]).all()
    assert (sim.loc[sim["frequency"] == 0, "recency"] == 0).all()
    assert (sim.loc[sim["frequency"] > 0, "recency"] > 0).all()
    expected = BetaGeoModel.from_params(**TRUE).expected_purchases_new(365.0)
    se = sim["frequency"].std() / math.sqrt(len(sim))
    assert abs(sim["frequency"].mean() - expected) < 4 * se


def test_fit_recovers_simulated_parameters(population: pd.DataFrame) -> None:
    model = BetaGeoModel().fit(population["frequency"], population["recency"], population["T"])
    assert model.params_ == {"r": model.r_, "alpha": model.alpha_, "a": model.a_, "b": model.b_}
    assert model.n_customers_ == 20_000
    # Tolerance: 4 standard errors from the observed information. Over 40 simulated populations
    # like this one, the spread of the estimates was at or below these SEs (r 0.0096, alpha 0.64,
    # a 0.022, b 0.10 against SEs 0.0096, 0.73, 0.026, 0.11) and the largest |error|/SE was 3.3.
    for name, true in TRUE.items():
        se = model.standard_errors_[name]
        assert se < 0.06 * true, name  # so that 4 SE is still a tight check
        assert abs(model.params_[name] - true) < 4 * se, name
    assert model.log_likelihood_ == pytest.approx(
        bgnbd_log_likelihood(*model.params_.values(), population["frequency"], population["recency"],
                             population["T"]).sum())


def test_cdnow_conditional_expectation_is_the_papers_1_226() -> None:
    model = BetaGeoModel.from_params(**CDNOW)
    r, alpha, a, b = CDNOW.values()
    x, tx, T, t = 2, 30.43, 38.86, 39.0
    # FHL 2005, eq. 10, by hand.
    z = t / (alpha + T + t)
    ever = (a + b + x - 1) / (a - 1) * (
        1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1_series(r + x, b + x, a + b + x - 1, z))
    alive = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))
    assert model.expected_purchases(t, x, tx, T) == pytest.approx(ever * alive, rel=1e-10)
    assert model.expected_purchases(t, x, tx, T) == pytest.approx(1.226, abs=5e-4)  # the paper's figure
    assert model.probability_alive(x, tx, T) == pytest.approx(alive, rel=1e-12)
    assert model.probability_alive(x, tx, T) == pytest.approx(0.7266, abs=1e-4)
    assert model.probability_alive(0, 0, T) == 1.0


def test_unconditional_expectation_is_eq9() -> None:
    model = BetaGeoModel.from_params(**CDNOW)
    r, alpha, a, b = CDNOW.values()
    for t in (1.0, 39.0, 78.0):
        hand = (a + b - 1) / (a - 1) * (
            1 - (alpha / (alpha + t)) ** r * hyp2f1_series(r, b, a + b - 1, t / (alpha + t)))
        assert model.expected_purchases_new(t) == pytest.approx(hand, rel=1e-10)
    assert model.expected_purchases_new(0.0) == 0.0


def test_heavy_buyers_stay_finite() -> None:
    # The direct form of eq. 10 is 0 * inf here; the Euler-transformed one is not.
    model = BetaGeoModel.from_params(**TRUE)
    r, alpha, a, b = TRUE.values()
    x, tx, T, t = 150, 360.0, 365.0, 30.0
    z = t / (alpha + T + t)
    hand = (a + b + x - 1) / (a - 1) * (
        1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1_series(r + x, b + x, a + b + x - 1, z))
    hand /= 1 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x)
    assert model.expected_purchases(t, x, tx, T) == pytest.approx(hand, rel=1e-9)
    far = model.expected_purchases(3650.0, [150, 400], [360.0, 364.0], [365.0, 365.0])
    assert np.all(np.isfinite(far)) and far[1] > far[0] > 100


def test_log_likelihood_is_eq6_on_a_tiny_set() -> None:
    customers = [(0, 0.0, 38.0), (2, 30.43, 38.86), (1, 5.0, 10.0), (5, 20.0, 25.0)]
    x, tx, T = (np.array(c, dtype=float) for c in zip(*customers))
    got = bgnbd_log_likelihood(*CDNOW.values(), x, tx, T)
    want = [math.log(bgnbd_likelihood_direct(*CDNOW.values(), *c)) for c in customers]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_likelihood_gradients_are_exact() -> None:
    x, tx, T = np.array([0.0, 1, 2, 7]), np.array([0.0, 5, 30.43, 20]), np.array([38.0, 10, 38.86, 25])

    def f(params):
        return _bgnbd_ll_and_grad(*params, x, tx, T)[0].sum()

    def g(params):
        return _bgnbd_ll_and_grad(*params, x, tx, T)[1].sum(axis=1)

    assert check_grad(f, g, np.array(list(CDNOW.values()))) < 1e-5
    freq, m = np.array([1.0, 2, 6]), np.array([20.0, 35, 12])

    def fg(params):
        return _gg_ll_and_grad(*params, freq, m)[0].sum()

    def gg(params):
        return _gg_ll_and_grad(*params, freq, m)[1].sum(axis=1)

    assert check_grad(fg, gg, np.array(list(CDNOW_GG.values()))) < 1e-5


def test_predictions_match_the_simulated_future(population: pd.DataFrame) -> None:
    # With the true parameters, the mean prediction equals the mean of what the process does next.
    model = BetaGeoModel.from_params(**TRUE)
    sim = population
    alive = model.probability_alive(sim["frequency"], sim["recency"], sim["T"])
    assert isinstance(alive, pd.Series) and alive.index.equals(sim.index)
    se = math.sqrt(alive.mean() * (1 - alive.mean()) / len(sim))
    assert abs(alive.mean() - sim["alive"].mean()) < 4 * se
    # Memorylessness: an alive customer's future is min(Geometric(p), Poisson(lambda t)).
    rng = np.random.default_rng(7)
    t = 180.0
    future = np.where(sim["alive"], np.minimum(rng.geometric(sim["p"]), rng.poisson(sim["lambda"] * t)), 0)
    predicted = model.expected_purchases(t, sim["frequency"], sim["recency"], sim["T"])
    assert abs(predicted.mean() - future.mean()) < 4 * future.std() / math.sqrt(len(sim))


def test_fit_without_a_finite_estimate_says_so() -> None:
    # Everyone bought again at exactly "now": nobody ever seems to leave.
    n = 500
    with pytest.raises(JourneymapError, match=r"The BG/NBD fit did not converge: .* -> (0|infinity).*"
                                              r"penalizer=0\.01"):
        BetaGeoModel().fit(np.full(n, 3.0), np.full(n, 100.0), np.full(n, 100.0))
    with pytest.raises(JourneymapError, match=r"all 3 have frequency 0\. Use a longer history\."):
        BetaGeoModel().fit([0, 0, 0], [0, 0, 0], [5, 6, 7])


def test_penalizer_keeps_estimates_finite_in_any_time_unit() -> None:
    n = 500
    stuck = BetaGeoModel(penalizer=0.01).fit(np.full(n, 3.0), np.full(n, 100.0), np.full(n, 100.0))
    assert all(np.isfinite(v) and 1e-3 < v < 1e4 for v in stuck.params_.values())
    sim = simulate_bgnbd(300, **TRUE, T=365.0, seed=3)
    days = BetaGeoModel(penalizer=0.01).fit(sim["frequency"], sim["recency"], sim["T"])
    weeks = BetaGeoModel(penalizer=0.01).fit(sim["frequency"], sim["recency"] / 7, sim["T"] / 7)
    for name in ("r", "a", "b"):
        assert weeks.params_[name] == pytest.approx(days.params_[name], rel=1e-4)
    assert weeks.alpha_ == pytest.approx(days.alpha_ / 7, rel=1e-4)


@pytest.mark.parametrize(("frequency", "recency", "T", "message"), [
    ([1, -1], [2, 0], [5, 5], (r"frequency must be a whole number of repeat purchases \(0 or more\)\. "
                               r"Got frequency=-1, recency=0, T=5 for position 1\.")),
    ([1.5], [2], [5], r"whole number .* Got frequency=1\.5"),
    ([1], [6], [5], (r"recency \(first to last purchase\) cannot exceed T \(first purchase to now\)\. "
                     r"Got frequency=1, recency=6, T=5 for position 0\.")),
    ([2, 2], [0, 0], [5, 5], (r"frequency > 0 bought again .* so recency must be > 0 .* Got frequency=2, "
                              r"recency=0, T=5 for position 0 \(and 1 more\)\.")),
    ([0], [3], [5], r"frequency 0 has no repeat purchase, so recency must be 0\."),
    ([1], [np.nan], [5], r"must be finite numbers"),
    ([1, 2], [1], [5, 5, 5], r"one value per customer.* got frequency: 2, recency: 1, T: 3\."),
])
def test_invalid_customers_are_refused(frequency, recency, T, message) -> None:
    with pytest.raises(JourneymapError, match=message):
        BetaGeoModel().fit(frequency, recency, T)


def test_invalid_customer_is_named_by_index() -> None:
    model = BetaGeoModel.from_params(**CDNOW)
    idx = ["u1", "u2"]
    with pytest.raises(JourneymapError, match=r"Got frequency=1, recency=9, T=5 for customer 'u2'\."):
        model.probability_alive(pd.Series([1, 1], idx), pd.Series([2, 9], idx), pd.Series([5, 5], idx))


def test_not_fitted() -> None:
    with pytest.raises(JourneymapError, match=r"This BetaGeoModel is not fitted yet: call fit\(\.\.\.\) first"):
        BetaGeoModel().expected_purchases(10, 1, 2, 3)
    with pytest.raises(JourneymapError, match=r"This GammaGammaModel is not fitted yet"):
        GammaGammaModel().expected_average_value(1, 10)
    with pytest.raises(JourneymapError, match=r"BG/NBD parameters must all be numbers > 0; got b=0\."):
        BetaGeoModel.from_params(1, 1, 1, 0)


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma


def test_gamma_gamma_recovers_simulated_parameters() -> None:
    frequency = 1 + np.random.default_rng(1000).poisson(3, 20_000)
    spend = simulate_gamma_gamma(frequency, **CDNOW_GG, seed=0)
    model = GammaGammaModel().fit(np.r_[0, frequency], np.r_[0.0, spend])  # frequency 0 is skipped
    assert model.n_customers_ == 20_000
    # 4 observed-information SEs: over 100 simulated sets like this one the estimates spread a little
    # less than these SEs (p 0.39, q 0.056, v 1.18 against 0.46, 0.057, 1.33); largest |error|/SE 3.1.
    for name, true in CDNOW_GG.items():
        se = model.standard_errors_[name]
        assert se < 0.1 * true, name
        assert abs(model.params_[name] - true) < 4 * se, name


def test_gamma_gamma_expected_value_by_hand() -> None:
    model = GammaGammaModel.from_params(**CDNOW_GG)
    # (v + x m) p / (p x + q - 1) with x = 2, m = 30: (15.44 + 60) * 6.25 / (12.5 + 2.74)
    assert model.expected_average_value(2, 30.0) == pytest.approx(471.5 / 15.24, rel=1e-12)
    # No repeat purchases: the population mean p v / (q - 1) = 6.25 * 15.44 / 2.74
    assert model.expected_average_value(0, 0.0) == pytest.approx(96.5 / 2.74, rel=1e-12)
    with pytest.raises(JourneymapError, match=r"monetary_value .* must be > 0 where frequency > 0\. "
                                              r"Got frequency=2, monetary_value=0"):
        model.expected_average_value(2, 0.0)


def test_gamma_gamma_log_likelihood_by_hand() -> None:
    p, q, v = CDNOW_GG.values()
    x, m = 3, 25.0
    # Density of the mean of x spends: G(px+q)/(G(px) G(q)) v^q m^(px-1) x^(px) / (v + x m)^(px+q)
    hand = (math.gamma(p * x + q) / (math.gamma(p * x) * math.gamma(q)) * v**q * m ** (p * x - 1)
            * x ** (p * x) / (v + x * m) ** (p * x + q))
    assert gamma_gamma_log_likelihood(p, q, v, [x], [m])[0] == pytest.approx(math.log(hand), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Lifetime value


def test_clv_by_hand_for_one_customer() -> None:
    # CDNOW in days: lambda per day = lambda per week / 7, so alpha is 7 times larger.
    bg = BetaGeoModel.from_params(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
    gg = GammaGammaModel.from_params(**CDNOW_GG)
    x, tx, T, m = 2, 213.0, 272.0, 30.0
    value = gg.expected_average_value(x, m)
    e30, e60, e75 = (bg.expected_purchases(d, x, tx, T) for d in (30.0, 60.0, 75.0))
    hand = value * (e30 / 1.01 + (e60 - e30) / 1.01**2 + (e75 - e60) / 1.01**2.5)
    assert customer_lifetime_value(bg, gg, x, tx, T, m, horizon_days=75) == pytest.approx(hand, rel=1e-12)
    # Whole months: exactly lifetimes' month-by-month sum.
    months = sum(value * (bg.expected_purchases(30.0 * k, x, tx, T) - bg.expected_purchases(30.0 * (k - 1), x, tx, T))
                 / 1.01**k for k in range(1, 13))
    assert customer_lifetime_value(bg, gg, x, tx, T, m, horizon_days=360) == pytest.approx(months, rel=1e-12)


def test_clv_grows_with_frequency_and_spend() -> None:
    bg = BetaGeoModel.from_params(**TRUE)
    gg = GammaGammaModel.from_params(**CDNOW_GG)
    frequency = pd.Series([0.0, 1, 3, 10], index=list("abcd"))
    recency = pd.Series([0.0, 200, 200, 200], index=list("abcd"))  # the repeat buyers bought recently
    T = pd.Series(200.0, index=list("abcd"))
    clv = customer_lifetime_value(bg, gg, frequency, recency, T, pd.Series([0.0, 40, 40, 40], index=list("abcd")))
    assert isinstance(clv, pd.Series) and list(clv.index) == list("abcd")
    assert (clv > 0).all() and clv.is_monotonic_increasing and clv.is_unique
    spend = customer_lifetime_value(bg, gg, [3, 3, 3], [200, 200, 200], [200, 200, 200], [20.0, 40.0, 80.0])
    assert np.all(spend > 0) and np.all(np.diff(spend) > 0)
    with pytest.raises(JourneymapError, match=r"horizon_days must be a number of days > 0; got 0\."):
        customer_lifetime_value(bg, gg, 1, 5, 10, 20.0, horizon_days=0)


# ---------------------------------------------------------------------------------------------
# RFM summary


@pytest.fixture
def transactions() -> pd.DataFrame:
    rows = [
        ("c", "2024-01-20 09:00", 8.0),
        ("a", "2024-01-01 10:00", 10.0),
        ("a", "2024-01-01 18:00", 5.0),  # same day as the one before: one purchase of 15
        ("b", "2024-01-10 12:00", 12.0),
        ("a", "2024-01-05 08:00", 20.0),
        ("c", "2024-01-20 23:59", 2.0),  # same day
        ("a", "2024-01-11 20:00", 30.0),
        ("c", "2024-01-31 08:00", 40.0),  # the last transaction: the default as_of
    ]
    return pd.DataFrame(rows, columns=["user_id", "ts", "amount"]).assign(ts=lambda d: pd.to_datetime(d["ts"]))


def test_rfm_summary_exact(transactions: pd.DataFrame) -> None:
    got = rfm_summary(transactions)
    want = pd.DataFrame(
        {"frequency": [2.0, 0.0, 1.0], "recency": [10.0, 0.0, 11.0], "T": [30.0, 21.0, 11.0],
         "monetary_value": [25.0, 0.0, 40.0]},  # a: days 1 (15), 5 (20), 11 (30): mean of 20 and 30
        index=pd.Index(["a", "b", "c"], name="user_id"))
    pd.testing.assert_frame_equal(got, want)
    utc = rfm_summary(transactions.assign(ts=transactions["ts"].dt.tz_localize("UTC")))
    pd.testing.assert_frame_equal(utc, want)


def test_rfm_summary_as_of_drops_later_transactions(transactions: pd.DataFrame) -> None:
    got = rfm_summary(transactions, as_of="2024-01-25")
    assert got.loc["c"].tolist() == [0.0, 0.0, 5.0, 0.0]
    assert got.loc["a"].tolist() == [2.0, 10.0, 24.0, 25.0]
    assert got.loc["b", "T"] == 15.0


def test_rfm_summary_refuses_missing_columns(transactions: pd.DataFrame) -> None:
    with pytest.raises(JourneymapError, match=r"needs a table with columns user_id, ts, amount; amount missing "
                                              r"from \['user_id', 'ts'\]\."):
        rfm_summary(transactions.drop(columns="amount"))


def test_rfm_summary_feeds_the_models(transactions: pd.DataFrame) -> None:
    rfm = rfm_summary(transactions)
    bg = BetaGeoModel.from_params(**TRUE)
    gg = GammaGammaModel.from_params(**CDNOW_GG)
    clv = customer_lifetime_value(bg, gg, rfm["frequency"], rfm["recency"], rfm["T"], rfm["monetary_value"])
    assert list(clv.index) == ["a", "b", "c"] and (clv > 0).all()
