"""Summaries say only what the profile's numbers say: each one is parsed back and checked."""

from __future__ import annotations

import math
import re

from journeymap.profiles import category_label, summarize
from journeymap.profiles._summary import LATEST_SESSION

WHO = re.compile(r"^(?:(?P<device>\w+) shopper|Shopper)(?:, (?P<mostly>mostly|most interested in) (?P<category>[^;]+?))?"
                 r"(?:, top brands (?P<brands>[^;]*))?; ")
RECENT = re.compile(r"; (?P<recent>[\d,]+) sessions? in the last 7 days \((?P<all>[\d,]+) in all\)")
QUIET = re.compile(r"; last seen (?P<days>\d+) days? ago \((?P<all>[\d,]+) sessions? in all\)")
VIEWED = re.compile(r", (?P<viewed>[\d,]+) products? viewed, (?P<carted>[\d,]+) carted, ")
BOUGHT = re.compile(r"carted, (?P<n>[\d,]+) purchases?(?: worth (?P<spend>[\d,]+\.\d\d))?, the last (?P<days>\d+) days? ago;")
BAND = re.compile(r"; price band: (\w+);")
SEARCHES = re.compile(r'; searches for ((?:"[^"]*"(?:, )?)+);')
REVIEWS = re.compile(r"; (?P<n>[\d,]+) reviews?(?:, mean rating (?P<mean>\d+\.\d))?;")
STATUS = re.compile(r"; status: (?P<stage>[a-z ]+?)(?:, (?P<session>latest session [a-z ]+))?\.$")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _null(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def check(p: dict) -> list[str]:
    """Every statement of p's summary that its numbers contradict (empty: all true)."""
    s, wrong = p["summary"], []

    def claim(ok: bool, what: str) -> None:
        if not ok:
            wrong.append(what)

    who = WHO.match(s)
    claim(who is not None, "opening clause")
    if who is None:
        return wrong
    device = None if _null(p["preferred_device"]) else p["preferred_device"]
    claim(who["device"] == (device.capitalize() if device else None), "device")
    cats = list(p["top_categories"] if p["top_categories"] is not None else [])
    claim((who["category"] is None) == (len(cats) == 0), "whether a category is named")
    if cats and who["category"]:
        claim(who["category"] == category_label(cats[0]["name"]), "top category")
        claim((who["mostly"] == "mostly") == (cats[0]["share"] >= 0.5), "'mostly' only with half the interest")
    brands = [b["name"] for b in (p["top_brands"] if p["top_brands"] is not None else [])][:2]
    claim((who["brands"] or "") == ", ".join(brands), "brands")

    recent, quiet = RECENT.search(s), QUIET.search(s)
    claim((recent is None) != (quiet is None), "one activity clause")
    if recent:
        claim(_int(recent["recent"]) == p["sessions_7d"] > 0, "sessions in the last 7 days")
        claim(_int(recent["all"]) == p["sessions"], "sessions in all")
    if quiet:
        claim(p["sessions_7d"] == 0, "no session in the last 7 days")
        claim(int(quiet["days"]) == math.floor(p["recency_days"] + 1e-9), "days since last seen")
        claim(_int(quiet["all"]) == p["sessions"], "sessions in all")
    viewed = VIEWED.search(s)
    claim(viewed is not None and _int(viewed["viewed"]) == p["products_viewed"]
          and _int(viewed["carted"]) == p["products_carted"], "products viewed and carted")
    bought = BOUGHT.search(s)
    claim(("no purchase yet" in s) == (p["purchases"] == 0), "'no purchase yet' exactly when none")
    claim((bought is not None) == (p["purchases"] > 0), "purchases stated when any")
    if bought:
        claim(_int(bought["n"]) == p["purchases"], "purchase count")
        spend = None if _null(p["monetary"]) else round(p["monetary"], 2)
        claim((bought["spend"] is None and spend is None) or
              (bought["spend"] is not None and float(bought["spend"].replace(",", "")) == spend), "spend")
        claim(int(bought["days"]) == math.floor(p["days_since_purchase"] + 1e-9), "days since purchase")
    band = BAND.search(s)
    claim((band[1] if band else None) == (None if _null(p["price_band"]) else p["price_band"]), "price band")
    searches = SEARCHES.search(s)
    queries = [q["query"] for q in (p["top_searches"] if p["top_searches"] is not None else [])][:2]
    claim((re.findall(r'"([^"]*)"', searches[1]) if searches else []) == queries, "top searches")
    reviews = REVIEWS.search(s)
    claim((_int(reviews["n"]) if reviews else 0) == p["reviews"], "reviews")
    if reviews:
        mean = None if _null(p["mean_rating"]) else f"{p['mean_rating']:.1f}"
        claim(reviews["mean"] == mean, "mean rating")
    status = STATUS.search(s)
    claim(status is not None and status["stage"] == p["lifecycle"].replace("_", " ")
          and status["session"] == LATEST_SESSION[p["funnel_stage"]], "lifecycle and latest session")
    return wrong


def test_every_simulated_summary_is_true_to_its_numbers(profiled_sim):
    frame = profiled_sim.frame
    wrong = {}
    for p in frame.to_dict("records"):
        problems = check(p)
        if problems:
            wrong[p["summary"]] = problems
    assert not wrong, list(wrong.items())[:5]
    # The checks bite: the clauses they parse occur throughout.
    summaries = frame["summary"]
    assert summaries.str.contains("purchases? worth").sum() == (frame["purchases"] > 0).sum() > 1000
    assert summaries.str.contains("searches for").sum() > 1000
    assert summaries.str.contains("review").sum() > 100
    assert summaries.str.contains("mostly").sum() > 5000 and summaries.str.contains("price band: high").sum() > 1000


def test_a_changed_number_is_caught():
    p = {"summary": "", "preferred_device": "mobile", "top_categories": [{"name": "apparel.shoes.running",
                                                                           "share": 0.7, "weight": 3.0}],
         "top_brands": [{"name": "Nike", "share": 0.6, "weight": 2.0}, {"name": "Asics", "share": 0.4, "weight": 1.0}],
         "sessions": 5, "sessions_7d": 3, "recency_days": 1.2, "products_viewed": 14, "products_carted": 2,
         "purchases": 0, "monetary": None, "days_since_purchase": None, "price_band": "mid", "top_searches": [],
         "reviews": 0, "mean_rating": None, "lifecycle": "active", "funnel_stage": "carted"}
    p["summary"] = summarize(p)
    assert p["summary"] == ("Mobile shopper, mostly apparel > shoes > running, top brands Nike, Asics; 3 sessions in the last "
                            "7 days (5 in all), 14 products viewed, 2 carted, no purchase yet; price band: mid; "
                            "status: active, latest session ended with items in the cart.")
    assert check(p) == []
    assert check({**p, "products_carted": 3}) == ["products viewed and carted"]
    assert check({**p, "purchases": 1, "days_since_purchase": 2.0}) == [
        "'no purchase yet' exactly when none", "purchases stated when any"]
    assert check({**p, "top_categories": [{**p["top_categories"][0], "share": 0.4}]}) == [
        "'mostly' only with half the interest"]
    assert check({**p, "preferred_device": None}) == ["device"]
    bare = {**p, "preferred_device": None, "top_categories": [], "top_brands": []}
    bare["summary"] = summarize(bare)
    assert bare["summary"].startswith("Shopper; 3 sessions") and check(bare) == []
