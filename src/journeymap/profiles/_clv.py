"""Customer lifetime value: BG/NBD purchase counts, Gamma-Gamma spend, discounted CLV.

Written from the papers, since the ``lifetimes`` library that carried these models is archived:
Fader, Hardie & Lee (2005) "Counting your customers the easy way: an alternative to the Pareto/NBD
model", Marketing Science 24(2) 275-284; Fader & Hardie (2013) "The Gamma-Gamma model of monetary
value". The models take time in whatever unit recency and T are in; ``rfm_summary`` gives days, and
``customer_lifetime_value`` expects a BG/NBD model fitted in days.

Example::

    rfm = rfm_summary(transactions)                      # user_id, ts, amount -> one row per user
    bg = BetaGeoModel().fit(rfm["frequency"], rfm["recency"], rfm["T"])   # not rfm.T: transpose
    gg = GammaGammaModel().fit(rfm["frequency"], rfm["monetary_value"])
    clv = customer_lifetime_value(bg, gg, rfm["frequency"], rfm["recency"], rfm["T"],
                                  rfm["monetary_value"])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

from journeymap.exceptions import JourneymapError

__all__ = [
    "BetaGeoModel",
    "GammaGammaModel",
    "bgnbd_log_likelihood",
    "customer_lifetime_value",
    "gamma_gamma_log_likelihood",
    "rfm_summary",
    "simulate_bgnbd",
    "simulate_gamma_gamma",
]

# Log-parameters may move this far (a factor of 1e6) from their starting values; an estimate that
# reaches the edge is running off to 0 or infinity, i.e. the maximum likelihood does not exist.
_SPAN = np.log(1e6)
# L-BFGS-B sometimes stops on a line-search failure right at the optimum; a gradient of the mean
# log-likelihood this small is a converged fit all the same.
_GTOL = 1e-5
_DAYS_PER_MONTH = 30  # lifetimes' month in customer_lifetime_value(freq="D")


# ---------------------------------------------------------------------------------------------
# Input checks shared by fit and predict


def _array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise JourneymapError(f"{name} must be numbers; got {type(value).__name__} {value!r:.80}.") from None
    if arr.ndim > 1:
        raise JourneymapError(f"{name} must be a number or a 1-D sequence, one value per customer; "
                              f"got an array of shape {arr.shape}.")
    return arr


def _index_of(*values: Any) -> pd.Index | None:
    for v in values:
        if isinstance(v, pd.Series):
            return v.index
    return None


def _broadcast(named: dict[str, Any]) -> list[np.ndarray]:
    arrays = [_array(v, k) for k, v in named.items()]
    try:
        return list(np.broadcast_arrays(*arrays))
    except ValueError:
        sizes = ", ".join(f"{k}: {a.size}" for k, a in zip(named, arrays))
        raise JourneymapError(f"{', '.join(named)} must have one value per customer, the same number each; "
                              f"got {sizes}.") from None


def _check(ok: np.ndarray, message: str, index: pd.Index | None, **columns: np.ndarray) -> None:
    """Raise ``message`` naming the first customer where ``ok`` is False and what its values were."""
    bad = np.flatnonzero(~np.asarray(ok, dtype=bool).ravel())
    if not bad.size:
        return
    i = int(bad[0])
    who = f"customer {index[i]!r}" if index is not None and len(index) > i else f"position {i}"
    shown = ", ".join(f"{k}={np.ravel(v)[i]:g}" for k, v in columns.items())
    more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
    raise JourneymapError(f"{message} Got {shown} for {who}{more}.")


def _check_customers(x: np.ndarray, tx: np.ndarray, T: np.ndarray, index: pd.Index | None) -> None:
    cols = {"frequency": x, "recency": tx, "T": T}
    _check(np.isfinite(x) & np.isfinite(tx) & np.isfinite(T),
           "frequency, recency and T must be finite numbers.", index, **cols)
    _check((x >= 0) & (x == np.round(x)),
           "frequency must be a whole number of repeat purchases (0 or more).", index, **cols)
    _check((tx >= 0) & (T >= 0), "recency and T must be durations of 0 or more.", index, **cols)
    _check(tx <= T, "recency (first to last purchase) cannot exceed T (first purchase to now).",
           index, **cols)
    _check((x > 0) | (tx == 0),
           "A customer with frequency 0 has no repeat purchase, so recency must be 0.", index, **cols)
    _check((x == 0) | (tx > 0),
           "A customer with frequency > 0 bought again after the first purchase, so recency must be "
           "> 0 (recency counts from the first purchase; rfm_summary builds these columns).", index, **cols)


def _check_spend(x: np.ndarray, m: np.ndarray, index: pd.Index | None) -> None:
    cols = {"frequency": x, "monetary_value": m}
    _check(np.isfinite(x) & np.isfinite(m), "frequency and monetary_value must be finite numbers.",
           index, **cols)
    _check((x >= 0) & (x == np.round(x)),
           "frequency must be a whole number of repeat purchases (0 or more).", index, **cols)
    _check((x == 0) | (m > 0),
           "The Gamma-Gamma model describes positive spends: monetary_value (the mean value of the "
           "repeat purchases) must be > 0 where frequency > 0.", index, **cols)


def _result(values: np.ndarray, index: pd.Index | None, name: str) -> Any:
    """A Series when the inputs were Series, a float for scalars, else an array."""
    if index is not None and values.ndim == 1 and len(index) == values.size:
        return pd.Series(values, index=index, name=name)
    if values.ndim == 0:
        return float(values)
    return values


# ---------------------------------------------------------------------------------------------
# Maximum likelihood on log-parameters, shared by both models


def _fit_log_params(mean_nll: Callable[[np.ndarray], tuple[float, np.ndarray]], start: dict[str, float],
                    penalizer: Any, model: str, hint: str) -> tuple[dict[str, float], dict[str, float]]:
    """Minimise ``mean_nll`` (mean negative log-likelihood and its gradient in log-parameters) plus
    ``penalizer * |log(params / start)|^2``.

    The penalty is a ridge on log-parameters around the neutral start: unlike lifetimes' penalty on
    the squared parameters it does not depend on the time or money unit, and it keeps a parameter
    from running off to 0 as well as to infinity. Returns the estimates and their standard errors
    (from the inverse observed information of the mean objective; the caller scales them by 1/sqrt(n)).
    """
    if not (isinstance(penalizer, (int, float)) and np.isfinite(penalizer) and penalizer >= 0):
        raise JourneymapError(f"penalizer must be a number >= 0 such as 0.01; got {penalizer!r}.")
    names = list(start)
    theta0 = np.log(np.array([start[k] for k in names]))
    bounds = list(zip(theta0 - _SPAN, theta0 + _SPAN))

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = mean_nll(theta)
        return value + penalizer * np.sum((theta - theta0) ** 2), grad + 2 * penalizer * (theta - theta0)

    with np.errstate(all="ignore"):
        res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9})
    theta = res.x
    if not (np.all(np.isfinite(theta)) and np.isfinite(res.fun)):
        raise JourneymapError(f"The {model} fit did not converge: the likelihood became undefined "
                              f"({res.message}). {hint}")
    edge = [f"{k} -> {'0' if t - lo < 1e-6 else 'infinity'}"
            for k, t, (lo, hi) in zip(names, theta, bounds) if t - lo < 1e-6 or hi - t < 1e-6]
    if edge:
        raise JourneymapError(f"The {model} fit did not converge: {', '.join(edge)}, so the data have no "
                              f"finite best estimate. {hint}")
    if not res.success and np.max(np.abs(res.jac)) > _GTOL:
        raise JourneymapError(f"The {model} fit did not converge after {res.nit} iterations "
                              f"({res.message}). {hint}")
    params = dict(zip(names, np.exp(theta).tolist()))
    return params, _standard_errors(objective, theta, names)


def _standard_errors(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], theta: np.ndarray,
                     names: list[str]) -> dict[str, float]:
    """Delta-method standard errors, per customer, from a central-difference Hessian in log space."""
    h = 1e-5
    k = theta.size
    H = np.empty((k, k))
    for j in range(k):
        step = np.zeros(k)
        step[j] = h
        H[:, j] = (objective(theta + step)[1] - objective(theta - step)[1]) / (2 * h)
    H = (H + H.T) / 2
    try:
        cov = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return dict.fromkeys(names, float("nan"))
    var = np.diag(cov)
    se = np.where(var > 0, np.exp(theta) * np.sqrt(np.abs(var)), np.nan)
    return dict(zip(names, se.tolist()))


def _unique_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Collapse identical customers (common with day-resolution data) into weighted rows."""
    rows, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return [rows[:, j] for j in range(rows.shape[1])], counts.astype(float)


def _positive(model: str, given: dict[str, Any]) -> dict[str, float]:
    params = {k: float(v) for k, v in given.items()}
    bad = [f"{k}={v:g}" for k, v in params.items() if not (np.isfinite(v) and v > 0)]
    if bad:
        raise JourneymapError(f"{model} parameters must all be numbers > 0; got {', '.join(bad)}.")
    return params


def _not_fitted(model: Any) -> None:
    if not hasattr(model, "params_"):
        name = type(model).__name__
        raise JourneymapError(f"This {name} is not fitted yet: call fit(...) first, or build one from "
                              f"known parameters with {name}.from_params(...).")


# ---------------------------------------------------------------------------------------------
# BG/NBD


def _bgnbd_ll_and_grad(r: float, alpha: float, a: float, b: float, x: np.ndarray, tx: np.ndarray,
                       T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer log-likelihood (FHL 2005 eq. 6) and its gradient in (r, alpha, a, b), shape (4, n).

    L = B(a, b+x)/B(a, b) * G(r+x) a^r / (G(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))
    written as exp(A1 + A2) * (exp(A3) + [x > 0] exp(A4)), using B(a+1, b+x-1)/B(a, b+x) = a/(b+x-1).
    """
    rep = x > 0
    bx1 = np.where(rep, b + x - 1, 1.0)  # only used where x > 0, where it is >= b > 0
    A1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    A2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    A3 = -(r + x) * np.log(alpha + T)
    A4 = np.where(rep, np.log(a) - np.log(bx1) - (r + x) * np.log(alpha + tx), -np.inf)
    tail = np.logaddexp(A3, A4)
    w = np.exp(A4 - tail)  # share of the "dropped out right after t_x" term; 0 when x = 0
    grad = np.stack([
        digamma(r + x) - digamma(r) + np.log(alpha) - (1 - w) * np.log(alpha + T) - w * np.log(alpha + tx),
        r / alpha - (r + x) * ((1 - w) / (alpha + T) + w / (alpha + tx)),
        digamma(a + b) - digamma(a + b + x) + w / a,
        digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x) - w / bx1,
    ])
    return A1 + A2 + tail, grad


def bgnbd_log_likelihood(r: float, alpha: float, a: float, b: float, frequency: Any, recency: Any,
                         T: Any) -> Any:
    """Per-customer BG/NBD log-likelihood at (r, alpha, a, b) (Fader, Hardie & Lee 2005, eq. 6)."""
    index = _index_of(frequency, recency, T)
    x, tx, TT = _broadcast({"frequency": frequency, "recency": recency, "T": T})
    _check_customers(x, tx, TT, index)
    ll, _ = _bgnbd_ll_and_grad(r, alpha, a, b, x, tx, TT)
    return _result(ll, index, "log_likelihood")


class BetaGeoModel:
    """BG/NBD: how many purchases a customer will make, and whether they are still a customer.

    While alive, a customer buys at rate lambda ~ Gamma(shape r, rate alpha); after each repeat
    purchase they leave for good with probability p ~ Beta(a, b). Fit on per-customer frequency
    (repeat purchases), recency (first to last purchase) and T (first purchase to now).

    penalizer: adds ``penalizer * (log(r)^2 + log(alpha / mean T)^2 + log(a)^2 + log(b)^2)`` to the
    mean negative log-likelihood; 0.01 or so tames an estimate that runs off to 0 or infinity on
    sparse data. (lifetimes penalizes r^2 + alpha^2 + ..., which depends on the time unit.)
    """

    _names = ("r", "alpha", "a", "b")

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def __repr__(self) -> str:
        return f"BetaGeoModel(penalizer={self.penalizer!r})"

    @classmethod
    def from_params(cls, r: float, alpha: float, a: float, b: float) -> BetaGeoModel:
        """A model with known parameters (e.g. published ones), ready to predict without fitting."""
        model = cls()
        model._set(_positive("BG/NBD", {"r": r, "alpha": alpha, "a": a, "b": b}))
        return model

    def _set(self, params: dict[str, float]) -> None:
        self.params_ = params
        self.r_, self.alpha_, self.a_, self.b_ = (params[k] for k in self._names)

    def fit(self, frequency: Any, recency: Any, T: Any) -> BetaGeoModel:
        """Maximum-likelihood estimates of (r, alpha, a, b); returns self.

        Sets ``params_`` (dict), ``r_``, ``alpha_``, ``a_``, ``b_``, ``standard_errors_`` (dict, from
        the observed information), ``log_likelihood_`` (summed over customers) and ``n_customers_``.
        """
        index = _index_of(frequency, recency, T)
        x, tx, TT = (np.ravel(v) for v in _broadcast({"frequency": frequency, "recency": recency, "T": T}))
        if x.size == 0:
            raise JourneymapError("BetaGeoModel.fit() got no customers; it needs frequency, recency and T "
                                  "for at least a few hundred.")
        _check_customers(x, tx, TT, index)
        if not np.any(x > 0):
            raise JourneymapError(f"BetaGeoModel.fit() needs some customers with repeat purchases to tell "
                                  f"buying from leaving; all {x.size} have frequency 0. Use a longer history.")
        (ux, utx, uT), weight = _unique_rows(x, tx, TT)
        total = weight.sum()

        def mean_nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
            params = np.exp(theta)
            ll, grad = _bgnbd_ll_and_grad(*params, ux, utx, uT)
            # d/d log(theta) = theta * d/d theta
            return float(-(weight @ ll) / total), -params * (grad @ weight) / total

        start = {"r": 1.0, "alpha": max(float(np.mean(TT)), 1e-6), "a": 1.0, "b": 1.0}
        hint = ("This happens with few customers or little repeat buying; try a longer history or "
                "BetaGeoModel(penalizer=0.01).")
        params, se = _fit_log_params(mean_nll, start, self.penalizer, "BG/NBD", hint)
        self._set(params)
        self.standard_errors_ = {k: float(v / np.sqrt(x.size)) for k, v in se.items()}
        self.log_likelihood_ = float(weight @ _bgnbd_ll_and_grad(*params.values(), ux, utx, uT)[0])
        self.n_customers_ = int(x.size)
        return self

    def _inputs(self, frequency: Any, recency: Any, T: Any,
                **extra: Any) -> tuple[list[np.ndarray], pd.Index | None]:
        _not_fitted(self)
        index = _index_of(frequency, recency, T, *extra.values())
        arrays = _broadcast({"frequency": frequency, "recency": recency, "T": T} | extra)
        _check_customers(*arrays[:3], index)
        return arrays, index

    def probability_alive(self, frequency: Any, recency: Any, T: Any) -> Any:
        """P(still a customer at T | x, t_x, T) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))."""
        (x, tx, TT), index = self._inputs(frequency, recency, T)
        return _result(self._alive(x, tx, TT), index, "probability_alive")

    def _alive(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        rep = x > 0
        log_odds = np.log(a) - np.log(np.where(rep, b + x - 1, 1.0)) + (r + x) * (
            np.log(alpha + T) - np.log(alpha + tx))
        return np.where(rep, expit(-log_odds), 1.0)

    def expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> Any:
        """E[purchases in (T, T+t] | x, t_x, T], FHL 2005 eq. 10.

        (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]
        times P(alive). The formula holds for a < 1 too (as with CDNOW, a = 0.79); a = 1 exactly is
        a removable 0/0.
        """
        (x, tx, TT, tt), index = self._inputs(frequency, recency, T, t=t)
        _check(np.isfinite(tt) & (tt >= 0), "t (the horizon) must be a duration of 0 or more.", index, t=tt)
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        z = tt / (alpha + TT + tt)
        ever = (a + b + x - 1) / (a - 1) * (1 - _decayed_hyp2f1(r + x, b + x, a + b + x - 1, z))
        return _result(ever * self._alive(x, tx, TT), index, "expected_purchases")

    def expected_purchases_new(self, t: Any) -> Any:
        """E[X(t)] for a customer just acquired, FHL 2005 eq. 9:
        (a+b-1)/(a-1) * [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))]."""
        _not_fitted(self)
        index = _index_of(t)
        tt = _array(t, "t")
        _check(np.isfinite(tt) & (tt >= 0), "t (the horizon) must be a duration of 0 or more.", index, t=tt)
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        out = (a + b - 1) / (a - 1) * (1 - _decayed_hyp2f1(r, b, a + b - 1, tt / (alpha + tt)))
        return _result(out, index, "expected_purchases")


def _decayed_hyp2f1(A: Any, B: Any, C: Any, z: np.ndarray) -> np.ndarray:
    """(1-z)^A 2F1(A, B; C; z), the bracketed term of eqs. 9 and 10.

    Computed through Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z)
    (Abramowitz & Stegun 15.3.3): the direct product is 0 * inf = nan for heavy buyers (x in the
    hundreds) over long horizons, while C-A and C-B stay small. The two agree to 1e-12 elsewhere.
    """
    with np.errstate(divide="ignore"):
        log1mz = np.log1p(-z)
    return np.exp((C - B) * log1mz) * hyp2f1(C - A, C - B, C, z)


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma


def _gg_ll_and_grad(p: float, q: float, v: float, x: np.ndarray,
                    m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-density of the mean m of x spends (Fader & Hardie 2013 eq. 5) and its gradient in (p, q, v).

    Spends z ~ Gamma(shape p, rate nu), nu ~ Gamma(shape q, rate v) across customers.
    """
    px = p * x
    log_vxm = np.log(v + x * m)
    ll = (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + (px - 1) * np.log(m)
          + px * np.log(x) - (px + q) * log_vxm)
    grad = np.stack([
        x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - log_vxm),
        digamma(px + q) - digamma(q) + np.log(v) - log_vxm,
        q / v - (px + q) / (v + x * m),
    ])
    return ll, grad


def gamma_gamma_log_likelihood(p: float, q: float, v: float, frequency: Any, monetary_value: Any) -> Any:
    """Per-customer Gamma-Gamma log-likelihood; customers need frequency > 0."""
    index = _index_of(frequency, monetary_value)
    x, m = _broadcast({"frequency": frequency, "monetary_value": monetary_value})
    _check_spend(x, m, index)
    _check(x > 0, "The Gamma-Gamma likelihood needs frequency > 0 (a mean of repeat spends).", index,
           frequency=x, monetary_value=m)
    ll, _ = _gg_ll_and_grad(p, q, v, x, m)
    return _result(ll, index, "log_likelihood")


class GammaGammaModel:
    """Gamma-Gamma: what a customer's purchases are worth on average.

    Each customer's spends are Gamma(shape p, rate nu) with nu ~ Gamma(shape q, rate v) across
    customers, so the population mean spend is p v / (q - 1). Assumes spend does not depend on
    purchase frequency; check that the two are not strongly correlated in your data.

    penalizer: adds ``penalizer * (log(p)^2 + log(q / 2)^2 + log(v / mean spend)^2)`` to the mean
    negative log-likelihood (a ridge around a population mean spend equal to the observed one).
    """

    _names = ("p", "q", "v")

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def __repr__(self) -> str:
        return f"GammaGammaModel(penalizer={self.penalizer!r})"

    @classmethod
    def from_params(cls, p: float, q: float, v: float) -> GammaGammaModel:
        """A model with known parameters (e.g. published ones), ready to predict without fitting."""
        model = cls()
        model._set(_positive("Gamma-Gamma", {"p": p, "q": q, "v": v}))
        return model

    def _set(self, params: dict[str, float]) -> None:
        self.params_ = params
        self.p_, self.q_, self.v_ = (params[k] for k in self._names)

    def fit(self, frequency: Any, monetary_value: Any) -> GammaGammaModel:
        """Maximum-likelihood (p, q, v) from customers with frequency > 0 (others are skipped).

        monetary_value is the mean value of a customer's repeat purchases, as in ``rfm_summary``.
        Sets ``params_``, ``p_``, ``q_``, ``v_``, ``standard_errors_``, ``log_likelihood_`` and
        ``n_customers_`` (the customers used).
        """
        index = _index_of(frequency, monetary_value)
        x, m = (np.ravel(v) for v in _broadcast({"frequency": frequency, "monetary_value": monetary_value}))
        _check_spend(x, m, index)
        used = x > 0
        if used.sum() < 2:
            raise JourneymapError(f"GammaGammaModel.fit() needs customers with repeat purchases (frequency > 0); "
                                  f"got {int(used.sum())} of {x.size}.")
        (ux, um), weight = _unique_rows(x[used], m[used])
        total = weight.sum()

        def mean_nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
            params = np.exp(theta)
            ll, grad = _gg_ll_and_grad(*params, ux, um)
            return float(-(weight @ ll) / total), -params * (grad @ weight) / total

        start = {"p": 1.0, "q": 2.0, "v": float(np.mean(m[used]))}  # population mean p v/(q-1) = mean spend
        hint = ("This happens when spends barely differ between customers or too few customers repeat; "
                "try GammaGammaModel(penalizer=0.01).")
        params, se = _fit_log_params(mean_nll, start, self.penalizer, "Gamma-Gamma", hint)
        self._set(params)
        self.standard_errors_ = {k: float(val / np.sqrt(total)) for k, val in se.items()}
        self.log_likelihood_ = float(weight @ _gg_ll_and_grad(*params.values(), ux, um)[0])
        self.n_customers_ = int(total)
        return self

    def expected_average_value(self, frequency: Any, monetary_value: Any) -> Any:
        """E[mean spend | x, m_x] = (v + x m_x) p / (p x + q - 1): a weighted average of the
        population mean p v/(q-1) and the customer's own mean m_x, trusting m_x more as x grows.
        Customers with frequency 0 get the population mean."""
        _not_fitted(self)
        index = _index_of(frequency, monetary_value)
        x, m = _broadcast({"frequency": frequency, "monetary_value": monetary_value})
        _check_spend(x, m, index)
        p, q, v = self.p_, self.q_, self.v_
        if q <= 1 and np.any(x == 0):
            raise JourneymapError(f"With q = {q:g} <= 1 the population mean spend p v/(q-1) is infinite, so "
                                  f"customers with frequency 0 have no expected value; predict only for "
                                  f"frequency > 0 or refit with a penalizer.")
        out = (v + x * np.where(x > 0, m, 0.0)) * p / (p * x + q - 1)
        return _result(out, index, "expected_average_value")


# ---------------------------------------------------------------------------------------------
# Lifetime value


def customer_lifetime_value(bgnbd: BetaGeoModel, gamma_gamma: GammaGammaModel, frequency: Any, recency: Any,
                            T: Any, monetary_value: Any, horizon_days: float = 365,
                            monthly_discount: float = 0.01) -> Any:
    """Discounted expected value of each customer's purchases over the next ``horizon_days``.

    As lifetimes' ``customer_lifetime_value`` (freq="D"): for each 30-day step ending at day d,
    (E[X(d)] - E[X(d-30)]) * expected average value / (1 + monthly_discount)^(d/30), summed. A
    horizon that is not a multiple of 30 ends with a shorter step, discounted at its end day, so
    360 days gives exactly lifetimes' 12 months. ``bgnbd`` must be fitted with time in days.
    """
    _not_fitted(bgnbd)
    _not_fitted(gamma_gamma)
    if not (np.isfinite(horizon_days) and horizon_days > 0):
        raise JourneymapError(f"horizon_days must be a number of days > 0; got {horizon_days!r}.")
    if not (np.isfinite(monthly_discount) and monthly_discount > -1):
        raise JourneymapError(f"monthly_discount must be a rate > -1 such as 0.01 for 1% a month; "
                              f"got {monthly_discount!r}.")
    index = _index_of(frequency, recency, T, monetary_value)
    x, tx, TT, m = _broadcast({"frequency": frequency, "recency": recency, "T": T,
                               "monetary_value": monetary_value})
    _check_customers(x, tx, TT, index)
    value = np.asarray(gamma_gamma.expected_average_value(x, m), dtype=float)
    ends = np.arange(_DAYS_PER_MONTH, horizon_days, _DAYS_PER_MONTH, dtype=float)
    ends = np.append(ends, float(horizon_days))
    clv = np.zeros_like(value)
    before = np.zeros_like(value)
    for day in ends:
        upto = np.asarray(bgnbd.expected_purchases(day, x, tx, TT), dtype=float)
        clv = clv + value * (upto - before) / (1 + monthly_discount) ** (day / _DAYS_PER_MONTH)
        before = upto
    return _result(clv, index, "clv")


# ---------------------------------------------------------------------------------------------
# Per-customer summary of a transaction log


def rfm_summary(transactions: pd.DataFrame, as_of: Any = None) -> pd.DataFrame:
    """Frequency, recency, T and monetary value per user, in days, as lifetimes'
    ``summary_data_from_transaction_data(freq="D")``.

    transactions: columns user_id, ts, amount. Purchases on the same calendar day (UTC for
    timezone-aware ts) count as one, their amounts added. frequency = purchase days - 1; recency =
    last - first purchase day; T = ``as_of`` day (default: the last ts) - first purchase day;
    monetary_value = mean value of the repeat days (0 when frequency is 0). Later transactions are
    ignored. Returns one row per user, indexed by user_id, all columns float.
    """
    columns = ["frequency", "recency", "T", "monetary_value"]
    missing = [c for c in ("user_id", "ts", "amount") if c not in transactions.columns]
    if missing:
        raise JourneymapError(f"rfm_summary() needs a table with columns user_id, ts, amount; "
                              f"{', '.join(missing)} missing from {list(transactions.columns)}.")
    frame = transactions[["user_id", "ts", "amount"]]
    nulls = frame.isna().sum()
    if nulls.any():
        where = ", ".join(f"{n} in {c}" for c, n in nulls.items() if n)
        raise JourneymapError(f"rfm_summary() needs user_id, ts and amount on every transaction; "
                              f"missing values: {where}. Drop or fill those rows first.")
    try:
        ts = _naive_utc(pd.to_datetime(frame["ts"]))
        amount = pd.to_numeric(frame["amount"])
    except (TypeError, ValueError) as exc:
        raise JourneymapError(f"rfm_summary() needs ts as timestamps and amount as numbers: {exc}") from None
    if frame.empty:
        return pd.DataFrame(columns=columns, dtype=float, index=pd.Index([], name="user_id"))
    end = ts.max() if as_of is None else _naive_utc(pd.Series([pd.Timestamp(as_of)])).iloc[0]
    day = ts.dt.floor("D")
    end_day = end.floor("D")
    keep = (day <= end_day).to_numpy()
    daily = (pd.DataFrame({"user_id": frame["user_id"].to_numpy()[keep], "day": day.to_numpy()[keep],
                           "amount": amount.to_numpy(dtype=float)[keep]})
             .groupby(["user_id", "day"], sort=True)["amount"].sum().reset_index())
    users = daily.groupby("user_id", sort=True)
    first, last = users["day"].min(), users["day"].max()
    days = users.size()
    first_value = daily.drop_duplicates("user_id").set_index("user_id")["amount"]  # rows are sorted by day
    frequency = (days - 1).astype(float)
    repeat_total = users["amount"].sum() - first_value
    out = pd.DataFrame({
        "frequency": frequency,
        "recency": (last - first).dt.days.astype(float),
        "T": (end_day - first).dt.days.astype(float),
        "monetary_value": np.where(frequency > 0, repeat_total / frequency.where(frequency > 0, 1.0), 0.0),
    })
    out.index.name = "user_id"
    return out[columns]


def _naive_utc(ts: pd.Series) -> pd.Series:
    return ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz is not None else ts


# ---------------------------------------------------------------------------------------------
# Simulators of the generative processes (for tests and sanity checks)


def simulate_bgnbd(n: int, r: float, alpha: float, a: float, b: float, T: Any, seed: int | None = None
                   ) -> pd.DataFrame:
    """Draw n customers from the BG/NBD process, observed for T (a number, or one per customer).

    Each customer buys at rate lambda ~ Gamma(r, rate alpha) and leaves after each repeat purchase
    with probability p ~ Beta(a, b). Returns frequency, recency and T as the model sees them, plus the
    hidden truth: lambda, p, and alive (still a customer at T).
    """
    if n < 0 or not all(np.isfinite(v) and v > 0 for v in (r, alpha, a, b)):
        raise JourneymapError(f"simulate_bgnbd() needs n >= 0 and r, alpha, a, b > 0; got n={n}, r={r}, "
                              f"alpha={alpha}, a={a}, b={b}.")
    ages = np.broadcast_to(_array(T, "T"), (n,)).astype(float)
    _check(np.isfinite(ages) & (ages >= 0), "T must be durations of 0 or more.", None, T=ages)
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = np.clip(rng.beta(a, b, n), 1e-12, 1.0)
    lifetime = rng.geometric(p)  # repeat purchases until (and including) the one after which they leave
    bought = rng.poisson(lam * ages)  # repeat purchases by T were they never to leave
    x = np.minimum(lifetime, bought)
    # Given `bought` arrivals of a Poisson process on (0, T], the x-th is T times the x-th order
    # statistic of `bought` uniforms, a Beta(x, bought - x + 1).
    tx = np.where(x > 0, ages * rng.beta(np.maximum(x, 1), bought - x + 1), 0.0)
    return pd.DataFrame({"frequency": x.astype(float), "recency": tx, "T": ages, "lambda": lam, "p": p,
                         "alive": lifetime > bought})


def simulate_gamma_gamma(frequency: Any, p: float, q: float, v: float, seed: int | None = None) -> np.ndarray:
    """Mean of each customer's ``frequency`` spends under the Gamma-Gamma model (0 where frequency is 0)."""
    if not all(np.isfinite(val) and val > 0 for val in (p, q, v)):
        raise JourneymapError(f"simulate_gamma_gamma() needs p, q, v > 0; got p={p}, q={q}, v={v}.")
    x = np.ravel(_array(frequency, "frequency"))
    _check((x >= 0) & (x == np.round(x)), "frequency must be whole numbers (0 or more).", None, frequency=x)
    rng = np.random.default_rng(seed)
    nu = rng.gamma(q, 1 / v, x.size)
    # The sum of x Gamma(p, rate nu) spends is Gamma(p x, rate nu).
    total = rng.gamma(np.where(x > 0, p * x, 1.0), 1 / nu)
    return np.where(x > 0, total / np.maximum(x, 1), 0.0)
