"""Who shops in the simulated store and how: personas, traffic seasonality and the planted effects.

Every behavioural number of the simulator lives here, so the ground truth written beside the
output and the engine that produces the events read the same constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEVICES = ("desktop", "mobile", "tablet")
CHANNELS = ("direct", "organic_search", "paid_search", "social", "email")
EMAIL = CHANNELS.index("email")

# Every persona gets the same email share, so email's higher conversion cannot be explained by
# which personas read email: the channel effect is unconfounded by construction. At 20% of
# sessions (a retention-heavy shop) its 2.5x conversion also makes it the channel behind the most
# purchases, so attribution should rank it first on credit, not only on credit per session.
EMAIL_SHARE = 0.20

# Planted effect 1: checkout completion is much worse on mobile, for every persona.
P_COMPLETE = {"desktop": 0.70, "mobile": 0.35, "tablet": 0.70}
# Planted effect 2: email sessions carry this multiplier on their cart and checkout propensity.
EMAIL_MULTIPLIER = 2.5
# Planted effect 4: a coupon banner shown in a random share of sessions, independent of all else;
# its persona-specific uplift on the purchase probability is in Persona.coupon_uplift.
COUPON_RATE = 0.20
COUPON_CODE = "coupon10"

# Session starts per weekday relative to an average day: peaks on the weekend and on Monday.
WEEKLY_SEASONALITY = {
    "monday": 1.20,
    "tuesday": 0.95,
    "wednesday": 0.90,
    "thursday": 0.88,
    "friday": 0.92,
    "saturday": 1.05,
    "sunday": 1.10,
}
# Share of session starts by hour of day (UTC): quiet nights, a lunch bump, an evening peak.
HOURLY_PROFILE = (
    0.013, 0.007, 0.005, 0.004, 0.004, 0.006, 0.015, 0.027, 0.040, 0.048, 0.053, 0.057,
    0.061, 0.058, 0.053, 0.051, 0.053, 0.059, 0.067, 0.076, 0.080, 0.074, 0.055, 0.034,
)


@dataclass(frozen=True)
class Persona:
    """One kind of shopper; each number is a per-user or per-session probability or mean."""

    name: str
    description: str
    share: float  # fraction of users
    p_return: float  # chance of at least one visit after the first
    extra_visits_mean: float  # mean number of further visits for those who return
    return_gap_days: float  # mean days between two visits
    p_bounce: float  # leaves after the landing page without viewing a product
    views_mean: float  # mean product views in a session that does not bounce
    p_search: float  # chance a session uses the search box
    device_mix: tuple[float, float, float]  # desktop, mobile, tablet
    channel_mix: tuple[float, float, float, float]  # direct, organic, paid, social (email apart)
    affinity: dict[str, float]  # weight of top categories above the default 1.0
    price_sensitivity: float  # exponent a in P(product) ~ popularity * price**-a
    p_checkout: tuple[float, float, float]  # P(session reaches checkout) on visit 1, 2, 3+
    p_cart_only: tuple[float, float, float]  # P(session carts but does not check out), visit 1, 2, 3+
    p_review: float  # chance a purchase is reviewed in the buyer's next session
    coupon_uplift: float  # absolute rise of the session purchase probability under the coupon

    @property
    def channel_probs(self) -> tuple[float, ...]:
        return (*(c * (1.0 - EMAIL_SHARE) for c in self.channel_mix), EMAIL_SHARE)


PERSONAS: tuple[Persona, ...] = (
    Persona(
        name="window_shopper",
        description="Browses a view or two of fashion on a phone or desktop, rarely returns, almost never buys.",
        share=0.40, p_return=0.15, extra_visits_mean=1.3, return_gap_days=9.0,
        p_bounce=0.55, views_mean=1.6, p_search=0.02,
        device_mix=(0.60, 0.35, 0.05), channel_mix=(0.05, 0.50, 0.40, 0.05),
        affinity={"apparel": 100.0},
        price_sensitivity=0.0,
        p_checkout=(0.004, 0.004, 0.004), p_cart_only=(0.008, 0.008, 0.008),
        p_review=0.02, coupon_uplift=0.02,
    ),
    Persona(
        name="mission_buyer",
        description="Knows what they want: searches, mostly on a desktop, views few tech products and buys fast.",
        share=0.15, p_return=0.10, extra_visits_mean=1.2, return_gap_days=14.0,
        p_bounce=0.02, views_mean=1.5, p_search=0.90,
        device_mix=(0.65, 0.30, 0.05), channel_mix=(0.05, 0.15, 0.80, 0.0),
        affinity={"electronics": 100.0, "computers": 100.0},
        price_sensitivity=-0.3,
        p_checkout=(0.09, 0.09, 0.09), p_cart_only=(0.02, 0.02, 0.02),
        p_review=0.10, coupon_uplift=0.0,
    ),
    Persona(
        name="mobile_impulse_buyer",
        description="Arrives from social on a phone, browses beauty and accessories, sometimes buys on a whim.",
        share=0.20, p_return=0.30, extra_visits_mean=1.6, return_gap_days=4.0,
        p_bounce=0.25, views_mean=3.0, p_search=0.03,
        device_mix=(0.03, 0.94, 0.03), channel_mix=(0.03, 0.03, 0.04, 0.90),
        affinity={"beauty": 100.0, "accessories": 100.0},
        price_sensitivity=0.5,
        p_checkout=(0.03, 0.03, 0.03), p_cart_only=(0.025, 0.025, 0.025),
        p_review=0.05, coupon_uplift=0.08,
    ),
    Persona(
        name="bargain_hunter",
        description="Compares many cheap sports and appliance items, carts on the first visit and buys on the second.",
        share=0.15, p_return=0.90, extra_visits_mean=1.5, return_gap_days=2.0,
        p_bounce=0.02, views_mean=8.0, p_search=0.25,
        device_mix=(0.55, 0.40, 0.05), channel_mix=(0.15, 0.65, 0.15, 0.05),
        affinity={"sports": 100.0, "appliances": 100.0},
        price_sensitivity=3.0,
        p_checkout=(0.0, 0.45, 0.05), p_cart_only=(0.25, 0.08, 0.04),
        p_review=0.08, coupon_uplift=0.15,
    ),
    Persona(
        name="loyal_repeat_buyer",
        description="Returns every few days on a tablet to favourite home and kids brands, buys regularly, reviews.",
        share=0.10, p_return=1.0, extra_visits_mean=6.0, return_gap_days=4.0,
        p_bounce=0.10, views_mean=3.5, p_search=0.08,
        device_mix=(0.15, 0.30, 0.55), channel_mix=(0.90, 0.04, 0.03, 0.03),
        affinity={"home": 100.0, "kids": 100.0},
        price_sensitivity=-0.5,
        p_checkout=(0.08, 0.08, 0.08), p_cart_only=(0.03, 0.03, 0.03),
        p_review=0.35, coupon_uplift=0.01,
    ),
)
PERSONA_INDEX = {p.name: i for i, p in enumerate(PERSONAS)}


def stage_probabilities(
    persona: np.ndarray, visit: np.ndarray, device: np.ndarray, channel: np.ndarray, coupon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """P(reach checkout) and P(cart without checkout) per session, with effects 2-4 applied.

    The coupon adds uplift / P(complete | device) to the checkout probability, so that after
    the device-specific completion step the purchase probability rises by exactly the uplift
    (unless capped at 1). Sessions where a persona cannot buy at all (bargain_hunter's first
    visit) get no coupon uplift, which keeps that persona's first-visit purchases at zero.
    """
    v = np.minimum(visit, 3) - 1
    base_checkout = np.array([p.p_checkout for p in PERSONAS])[persona, v]
    base_cart = np.array([p.p_cart_only for p in PERSONAS])[persona, v]
    multiplier = np.where(channel == EMAIL, EMAIL_MULTIPLIER, 1.0)
    complete = np.array([P_COMPLETE[d] for d in DEVICES])[device]
    uplift = np.array([p.coupon_uplift for p in PERSONAS])[persona]
    checkout = base_checkout * multiplier + np.where(coupon & (base_checkout > 0), uplift / complete, 0.0)
    checkout = np.minimum(checkout, 1.0)
    cart = np.minimum(base_cart * multiplier, 1.0 - checkout)
    return checkout, cart


def expected_purchase_rate(persona: str, visit: int) -> float:
    """P(a session contains a purchase) for one persona and visit number, averaged over its mix.

    This is what an analyst measures as the persona's purchase rate on that visit: the average
    over the persona's device and channel mix and the random coupon assignment.
    """
    p = PERSONAS[PERSONA_INDEX[persona]]
    total = 0.0
    for d, p_d in enumerate(p.device_mix):
        for c, p_c in enumerate(p.channel_probs):
            for coupon, p_k in ((True, COUPON_RATE), (False, 1.0 - COUPON_RATE)):
                checkout, _ = stage_probabilities(
                    np.array([PERSONA_INDEX[persona]]), np.array([visit]), np.array([d]),
                    np.array([c]), np.array([coupon]),
                )
                total += p_d * p_c * p_k * float(checkout[0]) * P_COMPLETE[DEVICES[d]]
    return total
