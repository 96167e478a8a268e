"""`journeymap ope` as a user runs it: JSON estimates with intervals, one-line errors."""

from __future__ import annotations

import json

from journeymap.policy import write_log
from tests.policy.conftest import FOUR
from tests.test_cli import jm


def test_ope_prints_estimates_with_intervals_as_json(tmp_path):
    log = write_log(FOUR, tmp_path / "decisions.jsonl")
    done = jm("ope", "--log", str(log), "--policy", "action:a", "--estimators", "ips,snips", "--ci", "normal",
              "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["policy"] == "action:a" and result["log"]["decisions"] == 4
    assert [(e["estimator"], e["estimate"]) for e in result["estimates"]] == [("ips", 1.5), ("snips", 1.0)]
    assert len(result["estimates"][0]["ci"]) == 2 and result["estimates"][0]["max_weight"] == 4.0


def test_ope_bad_log_is_one_line_naming_file_and_line(tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_text(json.dumps(FOUR[0]) + "\n" + json.dumps(dict(FOUR[1], propensity=1.5)) + "\n")
    done = jm("ope", "--log", str(log), "--policy", "uniform")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{log}, line 2: field 'propensity' must be" in done.stderr.replace("\n", "")
