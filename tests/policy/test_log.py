"""Decision-log readers: journeymap's JSON lines and Parquet, the Open Bandit CSV, and bad rows
refused with file, line, field, expected and got."""

from __future__ import annotations

import json

import numpy as np
import pytest

from journeymap.exceptions import FormatError
from journeymap.policy import read_log, read_obp, write_log
from tests.conftest import shared
from tests.policy.conftest import FOUR

OBP = "obp-open-bandit-sample"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_written_log_reads_back(tmp_path, suffix):
    records = [dict(FOUR[0], user="u_1", context={"device": "mobile", "visits": 3}, position=2),
               dict(FOUR[1], actions=["a", {"id": "b", "features": {"discount": 0.1, "kind": "coupon"}}]),
               dict(FOUR[2], reward=None)]
    log = read_log(write_log(records, tmp_path / f"decisions{suffix}"))
    d = log.decisions
    assert list(d["decision_id"]) == ["1", "2", "3"] and list(d["action"]) == ["a", "b", "b"]
    assert list(d["propensity"]) == [0.5, 0.25, 0.5] and list(d["position"]) == [2, 0, 0]
    assert d["reward"].tolist()[:2] == [1.0, 0.0] and np.isnan(d["reward"].iloc[2])
    assert str(d["ts"].iloc[0]) == "2024-05-01 10:00:00+00:00" and d["user"].iloc[0] == "u_1"
    assert log.actions == ("a", "b") and log.available is None
    assert log.context["visits"].iloc[0] == 3.0 and log.context["device"].iloc[0] == "mobile"
    discount = log.decision_action_features["discount"]
    assert discount[1, 1] == 0.1 and np.isnan(discount[0, 1]) and log.decision_action_features["kind=coupon"][1, 1] == 1
    assert log.summary() | {"source": None} == {"source": None, "format": "journeymap", "decisions": 3,
                                                "rewarded": 2, "pending": 1, "actions": 2, "positions": [0, 2],
                                                "logged_value": 0.5}


def test_action_sets_may_differ_between_decisions(tmp_path):
    log = read_log(write_jsonl(tmp_path / "d.jsonl", [FOUR[0], dict(FOUR[1], actions=["b", "c"])]))
    assert log.actions == ("a", "b", "c")
    assert log.available.tolist() == [[True, True, False], [False, True, True]]


@pytest.mark.parametrize(("change", "message"), [
    ({"propensity": 1.5}, "line 2: field 'propensity' must be the chosen action's probability under the logging "
                          "policy, in (0, 1]. Got '1.5'."),
    ({"propensity": 0}, "line 2: field 'propensity' must be .* in (0, 1]. Got '0'."),
    ({"action": "z"}, "line 2: field 'action' must be one of the decision's actions (a, b). Got 'z'."),
    ({"reward": "yes"}, "line 2: field 'reward' must be a number (0/1 or real) or null while not joined yet. Got 'yes'."),
    ({"ts": "yesterday"}, "line 2: field 'ts' must be an ISO 8601 time like 2024-05-01T12:00:00Z. Got 'yesterday'."),
    ({"actions": []}, "line 2: field 'actions' must be a non-empty list"),
    ({"propensity": None}, "line 2: field 'propensity' is required"),
    ({"position": -1}, "line 2: field 'position' must be a slot number >= 0 or null. Got '-1'."),
    ({"context": ["x"]}, "line 2: field 'context' must be an object of feature: value. Got"),
    ({"decision_id": "1"}, "line 2: field 'decision_id' must be unique. Got '1' again (first at line 1)."),
])
def test_bad_rows_name_file_line_field_expected_and_got(tmp_path, change, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [FOUR[0], dict(FOUR[1], **change)])
    with pytest.raises(FormatError, match="^" + _escape(f"{path}, {message}")):
        read_log(path)


def _escape(text: str) -> str:
    import re

    return re.escape(text).replace(r"\.\*", ".*")


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(FOUR[0]) + "\n{not json\n")
    with pytest.raises(FormatError, match=r"bad.jsonl, line 2: not valid JSON .*one JSON object per line"):
        read_log(path)


def test_unknown_suffix_and_format_are_refused(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        read_log(tmp_path / "missing.jsonl")
    (tmp_path / "d.txt").write_text("")
    with pytest.raises(FormatError, match="A journeymap decision log is a .jsonl or .parquet file"):
        read_log(tmp_path / "d.txt")
    with pytest.raises(FormatError, match="format is one of journeymap, obp. Got 'csv'"):
        read_log(tmp_path / "d.txt", format="csv")


def test_obp_sample_maps_items_slots_clicks_and_propensities():
    folder = shared(f"{OBP}/random/all")
    log = read_log(folder / "all.csv")
    assert log.format == "obp" and len(log) == 10_000 and log.n_actions == 80
    assert log.actions[:3] == ("0", "1", "2") and log.available is None
    d = log.decisions
    assert sorted(d["position"].unique()) == [1, 2, 3]
    assert (d["propensity"] == 0.0125).all()  # the random policy: 1 / 80 per slot
    assert d["reward"].sum() == 38 and d["decision_id"].iloc[0] == "0" and d["line"].iloc[0] == "line 2"
    assert list(log.context.columns) == ["user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3"]
    assert list(log.action_features.columns) == ["item_feature_0", "item_feature_1", "item_feature_2",
                                                 "item_feature_3"]
    assert log.decision_action_features["user_item_affinity"].shape == (10_000, 80)
    assert read_obp(folder).summary() == log.summary()  # the campaign folder reads the same


def test_obp_bad_rows_name_file_line_field(tmp_path):
    header = ",timestamp,item_id,position,click,propensity_score,user_feature_0\n"
    good = "0,2019-11-24 00:00:34.762830+00:00,1,1,0,0.5,x\n"
    cases = [("1,2019-11-24 00:00:35+00:00,1,2,0,1.5,x\n", "line 3: field 'propensity_score' must be a probability "
                                                           "in (0, 1]. Got '1.5'."),
             ("1,2019-11-24 00:00:35+00:00,1,2,0,,x\n", "line 3: field 'propensity_score' must be a probability "
                                                        "in (0, 1]. Got ''."),
             ("1,2019-11-24 00:00:35+00:00,one,2,0,0.5,x\n", "line 3: field 'item_id' must be an item id"),
             ("1,2019-11-24 00:00:35+00:00,1,2,yes,0.5,x\n", "line 3: field 'click' must be a number (0/1 click). "
                                                             "Got 'yes'."),
             ("1,soon,1,2,0,0.5,x\n", "line 3: field 'timestamp' must be an ISO 8601 time")]
    for row, message in cases:
        path = tmp_path / "x.csv"
        path.write_text(header + good + row)
        with pytest.raises(FormatError, match=_escape(f"{path}, {message}")):
            read_log(path)
    path.write_text(",timestamp,item,click\n0,2019-11-24,1,0\n")
    with pytest.raises(FormatError, match=r"not in the Open Bandit layout: column\(s\) item_id, position, "
                                          r"propensity_score missing"):
        read_log(path)


def test_obp_item_outside_item_context_is_refused(tmp_path):
    (tmp_path / "item_context.csv").write_text(",item_id,item_feature_0\n0,0,0.5\n1,1,-0.5\n")
    path = tmp_path / "x.csv"
    path.write_text(",timestamp,item_id,position,click,propensity_score\n0,2019-11-24 00:00:00+00:00,7,1,0,0.5\n")
    with pytest.raises(FormatError, match=_escape(f"{path}, line 2: field 'item_id' must be an item of "
                                                  f"{tmp_path / 'item_context.csv'} (0..1). Got '7'.")):
        read_log(path)
