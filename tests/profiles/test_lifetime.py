"""The profile's CLV fields on the simulated shop agree with the CLV models run on rfm_summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from journeymap.profiles._clv import (
    BetaGeoModel,
    GammaGammaModel,
    customer_lifetime_value,
    rfm_summary,
)
from journeymap.store import Store


def test_clv_fields_match_the_models_fitted_on_rfm_summary(profiled_sim):
    frame = profiled_sim.frame
    with Store(profiled_sim.store, read_only=True) as st:
        tx = st.con.sql("""SELECT user_id, ts, price * coalesce(quantity, 1) AS amount FROM events
                           WHERE event_type = 'purchase'""").df()
        meta = json.loads(st.con.execute("SELECT value FROM meta WHERE key = 'profiles'").fetchall()[0][0])
    status = meta["clv"]
    # 28 days of a shop where few buy twice: the unpenalized BG/NBD runs off to a -> infinity, whose
    # predictions are not finite, so the fit is redone with the small penalizer.
    assert status["bgnbd"]["penalizer"] == 0.01 and status["gamma_gamma"] is not None
    rfm = rfm_summary(tx, as_of=meta["as_of"]).sort_index()
    buyers = frame[frame["purchases"] > 0].sort_index()
    assert list(rfm.index) == list(buyers.index) and status["buyers"] == len(rfm)
    assert (buyers["frequency"].to_numpy() == rfm["frequency"].to_numpy()).all()

    bg = BetaGeoModel(penalizer=0.01).fit(rfm["frequency"], rfm["recency"], rfm["T"])
    assert bg.params_ == pytest.approx({k: v for k, v in status["bgnbd"].items() if k != "penalizer"}, rel=1e-5)
    expected = bg.expected_purchases(90, rfm["frequency"], rfm["recency"], rfm["T"])
    assert buyers["expected_purchases_90d"].to_numpy(float) == pytest.approx(expected.to_numpy(), rel=1e-6)
    alive = bg.probability_alive(rfm["frequency"], rfm["recency"], rfm["T"])
    assert buyers["probability_alive"].to_numpy(float) == pytest.approx(alive.to_numpy(), rel=1e-6)

    repeat = rfm[rfm["frequency"] > 0]
    gg = GammaGammaModel().fit(repeat["frequency"], repeat["monetary_value"])
    clv = customer_lifetime_value(bg, gg, rfm["frequency"], rfm["recency"], rfm["T"], rfm["monetary_value"],
                                  horizon_days=365, monthly_discount=0.01)
    assert buyers["clv_1y"].to_numpy(float) == pytest.approx(clv.to_numpy(), rel=1e-6)
    assert buyers["clv_note"].isna().all()
    assert np.isfinite(buyers[["expected_purchases_90d", "probability_alive", "clv_1y"]].to_numpy(float)).all()
    assert (frame.loc[frame["purchases"] == 0, "clv_note"] == "no purchase yet").all()
