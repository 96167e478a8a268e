"""The profile's lifetime-value fields: BG/NBD and Gamma-Gamma (``_clv``) fitted on every buyer.

Inputs are day-resolution purchase statistics computed in SQL the way ``rfm_summary`` computes them
(frequency = purchase days - 1, recency = last - first purchase day, T = as_of day - first purchase
day, monetary value = mean spend of the repeat days). A model that cannot be fitted (too few
buyers, no repeat buying, no prices) leaves its fields null and says why in ``clv_note``; it never
stops the profiles from building.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from journeymap.exceptions import JourneymapError

MIN_BUYERS = 20  # fewer buyers than this carry too little information for BG/NBD's four parameters
MIN_REPEAT_BUYERS = 5  # BG/NBD tells buying from leaving only through repeat purchases
MIN_SPEND_BUYERS = 5  # Gamma-Gamma's three parameters need a few repeat buyers with spend
# A purchase history shorter than three weeks shows almost no repeat buying; a model fitted on it
# extrapolates a few days' rate over a year (a week of Online Retail gave 1-year CLVs of 10x the spend).
MIN_HISTORY_DAYS = 21
HORIZON_DAYS = 90  # expected purchases: the next quarter
CLV_DAYS = 365  # lifetime value: the next year
MONTHLY_DISCOUNT = 0.01
PENALIZERS = (0.0, 0.01)  # tried in turn until BG/NBD gives finite predictions
NO_PURCHASE = "no purchase yet"
NO_PRICE = "purchases carry no prices"
OUTPUTS = ("expected_purchases_90d", "probability_alive", "clv_1y", "clv_note")


def clv_fields(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per user (rows of ``frame``: user_id, frequency, clv_recency, clv_t, clv_monetary) the CLV
    fields, and a status: whether each model was fitted, on how many buyers, its parameters or why not."""
    n = len(frame)
    expected = np.full(n, np.nan)
    alive = np.full(n, np.nan)
    clv = np.full(n, np.nan)
    buyer = frame["frequency"].notna().to_numpy()
    x = frame["frequency"].fillna(0).to_numpy(float)
    tx = frame["clv_recency"].fillna(0).to_numpy(float)
    T = frame["clv_t"].fillna(0).to_numpy(float)
    m = frame["clv_monetary"].to_numpy(float, na_value=np.nan)
    priced = buyer & np.isfinite(m)
    notes = np.where(buyer, None, NO_PURCHASE).astype(object)
    status: dict[str, Any] = {"buyers": int(buyer.sum()), "repeat_buyers": int((x[buyer] > 0).sum()),
                              "bgnbd": None, "gamma_gamma": None, "note": None}

    def fail(mask: np.ndarray, why: str) -> None:
        notes[mask & np.equal(notes, None)] = why  # the first reason a user gets is kept

    status["history_days"] = int(T[buyer].max()) if buyer.any() else 0
    reason = _bgnbd_blocker(status)
    bg = None
    if reason is None:
        # Unpenalized first; short histories with little repeat buying often send (a, b) off to
        # infinity, where predictions are not finite, and a small penalizer tames that.
        for penalizer in PENALIZERS:
            bg, reason = _fit_bgnbd(penalizer, x[buyer], tx[buyer], T[buyer])
            if bg is not None:
                expected[buyer], alive[buyer] = bg.predicted
                status["bgnbd"] = {**_params(bg), "penalizer": penalizer}
                break
    if reason is not None:
        status["note"] = reason
        fail(buyer, reason)
        return _frame(frame, expected, alive, clv, notes), status

    spend = priced & (x > 0) & (np.nan_to_num(m) > 0)
    fail(buyer & ~priced, NO_PRICE)
    gg_reason = None
    if spend.sum() < MIN_SPEND_BUYERS:
        gg_reason = (f"too few repeat buyers with a purchase value to fit Gamma-Gamma ({int(spend.sum())}; "
                     f"at least {MIN_SPEND_BUYERS} needed)")
    else:
        try:
            from journeymap.profiles._clv import (
                GammaGammaModel,
                customer_lifetime_value,
            )

            gg = GammaGammaModel().fit(x[spend], m[spend])
            status["gamma_gamma"] = _params(gg)
            # Buyers with no repeat spend get the population mean (Gamma-Gamma at frequency 0).
            usable = priced & ((x == 0) | spend)
            if gg.q_ <= 1:
                usable &= x > 0
                fail(priced & (x == 0), "one-time buyer: the fitted spend model has no finite population mean")
            mm = np.where(x > 0, m, 0.0)
            with np.errstate(all="ignore"):
                clv[usable] = customer_lifetime_value(bg, gg, x[usable], tx[usable], T[usable], mm[usable],
                                                      horizon_days=CLV_DAYS, monthly_discount=MONTHLY_DISCOUNT)
            fail(usable & ~np.isfinite(clv), "the lifetime value came out not finite")
            fail(priced & (x > 0) & ~spend, "repeat purchases carry no value")
        except (JourneymapError, ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
            gg_reason = f"the Gamma-Gamma fit failed: {_first_sentence(exc)}"
            clv[:] = np.nan
    if gg_reason is not None:
        status["note"] = gg_reason
        fail(priced, gg_reason)
    for values in (expected, alive, clv):
        values[~np.isfinite(values)] = np.nan
    return _frame(frame, expected, alive, clv, notes), status


def _fit_bgnbd(penalizer: float, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[Any, str | None]:
    """A fitted BG/NBD with ``predicted`` (expected purchases, P(alive)) set, or None and why not."""
    from journeymap.profiles._clv import BetaGeoModel

    try:
        with np.errstate(all="ignore"):
            bg = BetaGeoModel(penalizer=penalizer).fit(x, tx, T)
            expected = np.asarray(bg.expected_purchases(HORIZON_DAYS, x, tx, T), dtype=float)
            alive = np.asarray(bg.probability_alive(x, tx, T), dtype=float)
    except (JourneymapError, ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        return None, f"the BG/NBD fit failed: {_first_sentence(exc)}"
    if not (np.isfinite(expected).all() and np.isfinite(alive).all()):
        return None, ("the BG/NBD fit gave no finite predictions ("
                      + ", ".join(f"{k}={v:.3g}" for k, v in bg.params_.items()) + ")")
    bg.predicted = (expected, alive)
    return bg, None


def _bgnbd_blocker(status: dict[str, Any]) -> str | None:
    if status["buyers"] < MIN_BUYERS:
        return f"too few buyers to fit BG/NBD ({status['buyers']}; at least {MIN_BUYERS} needed)"
    if status["history_days"] < MIN_HISTORY_DAYS:
        return (f"too short a purchase history to fit BG/NBD ({status['history_days']} days from the first "
                f"purchase to as_of; at least {MIN_HISTORY_DAYS} needed)")
    if status["repeat_buyers"] < MIN_REPEAT_BUYERS:
        return (f"too few repeat buyers to fit BG/NBD ({status['repeat_buyers']} bought on more than one day; "
                f"at least {MIN_REPEAT_BUYERS} needed)")
    return None


def _params(model: Any) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in model.params_.items()}


def _first_sentence(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.split(". ")[0].rstrip(".")


def _frame(frame: pd.DataFrame, expected, alive, clv, notes) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": frame["user_id"].to_numpy(),
        "expected_purchases_90d": pd.array(np.where(np.isnan(expected), None, expected), dtype="Float64"),
        "probability_alive": pd.array(np.where(np.isnan(alive), None, alive), dtype="Float64"),
        "clv_1y": pd.array(np.where(np.isnan(clv), None, clv), dtype="Float64"),
        "clv_note": pd.array(notes, dtype="string"),
    })
