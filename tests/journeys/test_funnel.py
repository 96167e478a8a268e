"""Funnels on hand-built logs whose right answers are known by construction, the CLI, and the
simulated shop's planted mobile checkout loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from journeymap.config import Settings
from journeymap.exceptions import ConfigError, JourneymapError
from journeymap.journeys import Journeys
from journeymap.journeys._funnel import funnel
from tests.conftest import SECRET
from tests.journeys.conftest import make_store, pseudo

STEPS = ["product_view", "add_to_cart", "purchase"]


def at(minutes: float, day: int = 1) -> str:
    h, m = divmod(int(minutes), 60)
    return f"2024-03-{day:02d} {10 + h:02d}:{m:02d}:{int(minutes * 60) % 60:02d}"


def ev(user: str, minutes: float, event_type: str, day: int = 1, **extra) -> dict:
    return {"user_id": user, "ts": at(minutes, day), "event_type": event_type, **extra}


# u1: view, cart, buy in a row.           ordered 3, strict 3, any 3
# u2: view, page_view, cart, buy.         ordered 3, strict 1 (a page_view between), any 3
# u3: cart, view, buy.                    ordered 1 (cart before entry), strict 1, any 3
# u4: view only.                          1 everywhere
FOUR = [
    ev("u1", 0, "product_view", device="mobile"), ev("u1", 1, "add_to_cart", device="mobile"),
    ev("u1", 5, "purchase", device="mobile"),
    ev("u2", 0, "product_view", device="desktop"), ev("u2", 2, "page_view", device="desktop"),
    ev("u2", 3, "add_to_cart", device="desktop"), ev("u2", 9, "purchase", device="desktop"),
    ev("u3", 0, "add_to_cart", device="desktop"), ev("u3", 1, "product_view", device="desktop"),
    ev("u3", 2, "purchase", device="desktop"),
    ev("u4", 0, "product_view", device="desktop"),
]


@pytest.fixture
def four(tmp_path):
    with Journeys.open(make_store(tmp_path, FOUR), Settings(secret=SECRET)) as journeys:
        yield journeys


def run(tmp_path, rows, steps=STEPS, **kwargs):
    tmp_path.mkdir(exist_ok=True)
    with Journeys.open(make_store(tmp_path, rows), Settings(secret=SECRET)) as journeys:
        result = funnel(journeys, steps, **kwargs)
        result.entities  # fetched while the store is open, for the users() asserts below  # noqa: B018
        return result


def test_users_need_the_open_store(tmp_path):
    rows = [ev("a", 0, "product_view"), ev("a", 30, "purchase")]
    with Journeys.open(make_store(tmp_path, rows), Settings(secret=SECRET)) as journeys:
        result = funnel(journeys, ["product_view", "purchase"])
    assert result.converted == 1  # the figures are computed up front
    with pytest.raises(JourneymapError, match="store behind this funnel is closed"):
        result.users()


def counts(result) -> list[int]:
    return [s.count for s in result.steps]


def who(users) -> list[str]:
    return sorted(pseudo(u) for u in users)


@pytest.mark.parametrize("order, expected, buyers", [
    ("ordered", [4, 2, 2], ["u1", "u2"]),
    ("strict", [4, 1, 1], ["u1"]),
    ("any", [4, 3, 3], ["u1", "u2", "u3"]),
])
def test_order_modes_count_exactly_who_they_should(four, order, expected, buyers):
    result = funnel(four, STEPS, order=order)
    assert counts(result) == expected
    assert result.entered == 4 and result.converted == expected[-1]
    assert result.users("purchase") == who(buyers)
    assert result.users() == who(buyers)
    assert result.users(0) == who(["u1", "u2", "u3", "u4"])
    assert result.steps[1].rate_from_start == expected[1] / 4
    assert result.steps[2].rate_from_previous == expected[2] / expected[1]


def test_dropped_names_who_left_at_a_step(four):
    result = funnel(four, STEPS)
    assert result.dropped("add_to_cart") == who(["u3", "u4"])
    assert result.dropped("purchase") == []
    assert result.steps[1].dropped == 2


def test_exact_median_seconds_from_previous(four):
    # ordered: cart after view 60s (u1) and 180s (u2); buy after cart 240s and 360s.
    steps = funnel(four, STEPS).steps
    assert [s.median_seconds_from_previous for s in steps] == [None, 120.0, 300.0]
    # any: u3 completes view+cart at its view (0s later), buys 60s after.
    steps = funnel(four, STEPS, order="any").steps
    assert [s.median_seconds_from_previous for s in steps] == [None, 60.0, 240.0]


def test_window_cuts_off_a_late_purchase(tmp_path):
    rows = [ev("a", 0, "product_view"), ev("a", 120, "purchase"),  # 2h after entry
            ev("b", 0, "product_view"), ev("b", 30, "purchase")]
    steps = ["product_view", "purchase"]
    result = run(tmp_path, rows, steps, window="1h")
    assert counts(result) == [2, 1] and result.users() == who(["b"])
    assert result.to_dict()["window"] == "1h"
    assert counts(run(tmp_path / "x", rows, steps, window="3h")) == [2, 2]


def test_window_runs_from_the_first_entry(tmp_path):
    # The second product_view does not restart the clock.
    rows = [ev("a", 0, "product_view"), ev("a", 50, "product_view"), ev("a", 90, "purchase")]
    assert counts(run(tmp_path, rows, ["product_view", "purchase"], window="1h")) == [1, 0]


def test_step_window_caps_time_from_previous_step(tmp_path):
    rows = [ev("a", 0, "product_view"), ev("a", 1, "add_to_cart"), ev("a", 41, "purchase"),  # 40m after cart
            ev("b", 0, "product_view"), ev("b", 1, "add_to_cart"), ev("b", 21, "purchase")]
    result = run(tmp_path, rows, step_windows={"purchase": "30m"})
    assert counts(result) == [2, 2, 1] and result.users() == who(["b"])
    assert result.to_dict()["step_windows"] == {"purchase": "30m"}


def test_optional_step_can_be_skipped(tmp_path):
    rows = [ev("a", 0, "product_view"), ev("a", 1, "add_to_cart"), ev("a", 2, "purchase"),
            ev("b", 0, "product_view"), ev("b", 2, "purchase"),  # skips the cart
            ev("c", 0, "product_view"), ev("c", 1, "purchase"), ev("c", 2, "add_to_cart"),  # cart after buying
            ev("d", 0, "product_view")]
    result = run(tmp_path, rows, optional=["add_to_cart"])
    assert counts(result) == [4, 1, 3]
    assert result.users("add_to_cart") == who(["a"])
    assert result.users("purchase") == who(["a", "b", "c"])
    assert result.steps[2].previous == 0 and result.steps[2].rate_from_previous == 0.75
    # Without the optional step, the skippers are lost.
    assert counts(run(tmp_path / "x", rows)) == [4, 2, 1]


def test_optional_step_in_strict_mode(tmp_path):
    rows = [ev("a", 0, "product_view"), ev("a", 1, "add_to_cart"), ev("a", 2, "purchase"),
            ev("b", 0, "product_view"), ev("b", 2, "purchase"),
            ev("c", 0, "product_view"), ev("c", 1, "search"), ev("c", 2, "purchase")]
    result = run(tmp_path, rows, order="strict", optional=["add_to_cart"])
    assert counts(result) == [3, 1, 2] and result.users() == who(["a", "b"])


def test_excluded_event_between_entry_and_last_step_drops_the_user(tmp_path):
    rows = [ev("a", 0, "product_view"), ev("a", 1, "add_to_cart"), ev("a", 2, "remove_from_cart"),
            ev("a", 3, "purchase"),
            ev("b", 0, "product_view"), ev("b", 1, "add_to_cart"), ev("b", 2, "purchase"),
            ev("b", 3, "remove_from_cart"),  # after the last step: kept
            ev("c", 0, "remove_from_cart"), ev("c", 1, "product_view")]  # before entry: kept
    result = run(tmp_path, rows, exclude=["remove_from_cart"])
    assert result.entered == 2 and counts(result) == [2, 1, 1]
    assert result.users(0) == who(["b", "c"])
    assert result.to_dict()["exclude"] == ["remove_from_cart"]


def test_per_session_counts_sessions_not_users(tmp_path):
    # u1 views in one session and buys in the next: a converted user, no converted session.
    rows = [ev("u1", 0, "product_view", session_id="s1"), ev("u1", 90, "purchase", session_id="s2"),
            ev("u2", 0, "product_view", session_id="s3"), ev("u2", 1, "purchase", session_id="s3"),
            ev("u2", 60, "product_view", session_id="s4")]
    steps = ["product_view", "purchase"]
    by_user = run(tmp_path, rows, steps)
    assert counts(by_user) == [2, 2] and by_user.per == "user"
    by_session = run(tmp_path / "x", rows, steps, per="session")
    assert counts(by_session) == [3, 1] and by_session.to_dict()["per"] == "session"
    assert by_session.users() == [pseudo("u2") + ":s3"]
    assert by_session.users(owners=True) == [pseudo("u2")]
    assert by_session.dropped("purchase", owners=True) == who(["u1", "u2"])


def test_ties_in_time_do_not_break_conversions(tmp_path):
    rows = [ev(f"u{i}", 0, t) for i in range(5) for t in ("purchase", "add_to_cart", "product_view")]
    assert counts(run(tmp_path, rows)) == [5, 5, 5]
    assert counts(run(tmp_path / "x", rows, order="strict")) == [5, 5, 5]


def test_breakdown_counts_and_lift(four):
    result = funnel(four, STEPS, breakdown="device")
    values = {v.value: v for v in result.breakdown_values}
    assert set(values) == {"mobile", "desktop"}
    assert (values["mobile"].entered, values["mobile"].converted) == (1, 1)
    assert (values["desktop"].entered, values["desktop"].converted) == (3, 1)
    assert [s.count for s in values["desktop"].steps] == [3, 1, 1]
    assert values["mobile"].lift == pytest.approx(1.0 / 0.5)  # whole: 2 of 4
    assert values["desktop"].lift == pytest.approx((1 / 3) / 0.5)
    assert result.users("purchase", value="desktop") == who(["u2"])
    frame = result.to_frame()
    assert set(frame["value"]) == {"(all)", "mobile", "desktop"} and len(frame) == 9
    assert len(result.figure().data) == 3


def test_breakdown_by_property_of_the_entry_event(tmp_path):
    rows = [ev("a", 0, "product_view", properties={"coupon": "X"}), ev("a", 1, "purchase"),
            ev("b", 0, "product_view"), ev("b", 1, "purchase"), ev("c", 0, "product_view")]
    result = run(tmp_path, rows, ["product_view", "purchase"], breakdown="properties.coupon")
    values = {v.value: (v.entered, v.converted) for v in result.breakdown_values}
    assert values == {"X": (1, 1), "(none)": (2, 1)}


def test_conversion_over_time_by_day(tmp_path):
    rows = [ev("a", 0, "product_view", day=1), ev("a", 5, "purchase", day=1),
            ev("b", 0, "product_view", day=1),
            ev("c", 0, "product_view", day=2), ev("c", 5, "purchase", day=2),
            ev("d", 0, "product_view", day=3)]
    result = run(tmp_path, rows, ["product_view", "purchase"], over_time="day")
    assert result.to_dict()["over_time"] == {"period": "day", "rows": [
        {"period": "2024-03-01", "entered": 2, "converted": 1, "conversion_rate": 0.5},
        {"period": "2024-03-02", "entered": 1, "converted": 1, "conversion_rate": 1.0},
        {"period": "2024-03-03", "entered": 1, "converted": 0, "conversion_rate": 0.0}]}


def test_time_to_convert_distribution(tmp_path):
    rows = [r for i, minutes in enumerate((1, 2, 3, 4, 50))
            for r in (ev(f"u{i}", 0, "product_view"), ev(f"u{i}", minutes, "purchase"))]
    ttc = run(tmp_path, rows, ["product_view", "purchase"], window="1h").time_to_convert
    assert ttc["count"] == 5 and ttc["percentiles"]["p50"] == 180.0
    assert [(h["from_seconds"], h["to_seconds"], h["count"]) for h in ttc["histogram"]] == [
        (0, 60, 0), (60, 300, 4), (300, 900, 0), (900, 1800, 0), (1800, 3600, 1)]


def test_json_shape_carries_denominators(four):
    data = funnel(four, STEPS).to_dict()
    assert {"steps", "entered", "converted", "conversion_rate", "window", "order", "per"} <= set(data)
    assert data["steps"][1] | {} == {
        "index": 1, "name": "add_to_cart", "optional": False, "count": 2, "rate_from_start": 0.5,
        "rate_from_previous": 0.5, "median_seconds_from_previous": 120.0, "previous": 0, "dropped": 2}
    json.dumps(data)


def test_user_mistakes_get_clear_errors(four):
    with pytest.raises(JourneymapError, match=r"^Unknown event type 'buy' in the funnel's steps; expected one of "
                                              r"page_view, search, .*, purchase, refund, review\.$"):
        funnel(four, ["product_view", "buy"])
    with pytest.raises(JourneymapError, match=r"^A funnel needs at least 2 steps, like page_view,purchase\. Got 1\.$"):
        funnel(four, ["purchase"])
    with pytest.raises(ConfigError, match=r"^The 'window' parameter of funnel\(\) must be a positive duration like "
                                          r"'30m', '1h' or '7d'\. Got '-1h'\.$"):
        funnel(four, STEPS, window="-1h")
    with pytest.raises(JourneymapError, match="first and last steps of a funnel cannot be optional"):
        funnel(four, STEPS, optional=["purchase"])
    with pytest.raises(JourneymapError, match=r"^The 'order' parameter of funnel\(\) must be one of 'ordered', "
                                              r"'strict', 'any'\. Got 'loose'\.$"):
        funnel(four, STEPS, order="loose")
    with pytest.raises(JourneymapError, match="Cannot break a funnel down by 'colour'"):
        funnel(four, STEPS, breakdown="colour")
    with pytest.raises(JourneymapError, match="No funnel step 'refund'"):
        funnel(four, STEPS).users("refund")


def jm(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYMAP_")}
    env["JOURNEYMAP_SECRET"] = SECRET
    return subprocess.run([sys.executable, "-m", "journeymap.cli", "funnel", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_cli_json_and_segments(tmp_path):
    store = str(make_store(tmp_path, FOUR))
    done = jm("--store", store, "--steps", "product_view,add_to_cart,purchase", "--json", "--save-segment", "buyers")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [(s["name"], s["count"]) for s in data["steps"]] == [("product_view", 4), ("add_to_cart", 2), ("purchase", 2)]
    assert data["entered"] == 4 and data["window"] == "1d" and data["order"] == "ordered" and data["per"] == "user"
    assert data["segment"]["users"] == 2
    # The saved buyers, as a filter, enter and convert all.
    data = json.loads(jm("--store", store, "--steps", "product_view,purchase", "--segment", "buyers", "--json").stdout)
    assert (data["entered"], data["converted"]) == (2, 2)

    done = jm("--store", store, "--steps", "product_view,add_to_cart,purchase", "--order", "strict",
              "--breakdown", "device", "--window", "1h", "--json", "--save-segment", "lost", "--save-dropped-at", "add_to_cart")
    data = json.loads(done.stdout)
    assert {v["value"]: v["converted"] for v in data["breakdown"]["values"]} == {"mobile": 1, "desktop": 0}
    assert data["segment"] == {"name": "lost", "users": 3, "who": "dropped at add_to_cart"}

    table = jm("--store", store, "--steps", "product_view,purchase")
    assert table.returncode == 0 and "rate from start" in table.stdout and "product_view" in table.stdout

    bad = jm("--store", store, "--steps", "product_view,buy", "--json")
    assert bad.returncode == 1 and "Unknown event type 'buy'" in bad.stderr and "Traceback" not in bad.stderr


def test_simulated_mobile_checkout_loss(simulated_store):
    truth = simulated_store.truth["mobile_checkout_loss"]
    with Journeys.open(simulated_store.store, Settings(secret=SECRET)) as journeys:
        result = funnel(journeys, ["begin_checkout", "purchase"], per="session", breakdown="device")
    values = {v.value: v for v in result.breakdown_values}
    mobile = values["mobile"].steps[1].rate_from_previous
    others = [v for name, v in values.items() if name != "mobile"]
    other = sum(v.converted for v in others) / sum(v.entered for v in others)
    assert mobile == pytest.approx(truth["p_complete_mobile"], abs=0.05)
    assert other == pytest.approx(truth["p_complete_other"], abs=0.05)
    assert values["mobile"].lift < 0.8
    assert min(v.lift for v in others) > 1.2
