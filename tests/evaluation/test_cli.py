"""`journeymap evaluate`, `train` and `predict` as a user runs them: JSON shapes and one-line errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from journeymap.evaluation import TestCases, write_srgnn
from tests.journeys.conftest import make_store
from tests.test_cli import jm

CYCLE = ["11", "12", "13", "14", "15"]


def srgnn_files(tmp_path):
    train = [[CYCLE[(s + i) % 5] for i in range(6)] for s in range(5)]
    return write_srgnn(tmp_path, train, TestCases.from_sessions([CYCLE, CYCLE[2:]]))


def test_evaluate_srgnn_prints_the_metrics_in_percent(tmp_path):
    train, test = srgnn_files(tmp_path)
    done = jm("evaluate", "--protocol", "srgnn", "--train", str(train), "--test", str(test), "--model", "markov",
              "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ("P@20", "MRR@20", "HR@10", "NDCG@10", "test_cases")} == {
        "P@20": 100.0, "MRR@20": 100.0, "HR@10": 100.0, "NDCG@10": 100.0, "test_cases": 6}
    assert result["ci"]["P@20"] == [100.0, 100.0]


def test_evaluate_table_and_model_parameters(tmp_path):
    train, test = srgnn_files(tmp_path)
    done = jm("evaluate", "--train", str(train), "--test", str(test), "--model", "sknn", "--param", "neighbors=5",
              "--param", "similarity=vec", "--bootstrap", "0")
    assert done.returncode == 0, done.stderr
    assert "sknn under the srgnn protocol: 6 test cases" in done.stdout and "P@20" in done.stdout


def test_evaluate_errors_are_one_line_naming_file_and_line(tmp_path):
    train, test = srgnn_files(tmp_path)
    test.write_text("prefix\tlabel\n11 12\t13\n11 12 13\n")
    done = jm("evaluate", "--protocol", "srgnn", "--train", str(train), "--test", str(test), "--model", "pop")
    assert done.returncode == 1
    assert "TEST.tsv line 3: expected 'prefix<TAB>label'" in done.stderr and "found no tab" in done.stderr
    assert "Traceback" not in done.stderr
    missing = jm("evaluate", "--protocol", "srgnn", "--train", str(train), "--model", "pop")
    assert "--protocol srgnn needs both --train TRAIN.txt and --test TEST.tsv" in missing.stderr
    unknown = jm("evaluate", "--train", str(train), "--test", str(test), "--model", "gru")
    assert "Unknown model 'gru'; models are pop, markov, sknn, iknn" in unknown.stderr


def cyclic_store(tmp_path):
    """Ten days, one user and session a day: four clicks along the cycle, starting one further each day."""
    t0 = datetime(2024, 3, 1)
    rows = [{"user_id": f"u{d}", "session_id": f"s{d}", "event_type": "product_view",
             "ts": (t0 + timedelta(days=d, minutes=i)).isoformat(sep=" "), "item_id": CYCLE[(d + i) % 5]}
            for d in range(10) for i in range(4)]
    return make_store(tmp_path, rows)


def test_evaluate_on_a_store(tmp_path):
    store = cyclic_store(tmp_path)
    done = jm("evaluate", "--store", str(store), "--model", "markov", "--split", "temporal", "--test-days", "3",
              "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["P@20"] == 100.0 and result["protocol"] == "temporal" and result["test_cases"] == 9
    last = json.loads(jm("evaluate", "--store", str(store), "--model", "pop", "--split", "leave-last", "--json").stdout)
    assert last["test_cases"] == 10 and last["protocol"] == "leave-last"
    bad = jm("evaluate", "--store", str(store), "--model", "pop", "--split", "random")
    assert "--split takes temporal or leave-last. Got 'random'." in bad.stderr


def test_train_then_predict_for_a_user(tmp_path):
    store = cyclic_store(tmp_path)
    model = tmp_path / "markov.npz"
    trained = jm("train", "--store", str(store), "--model", "markov", "--out", str(model), "--json")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["sessions"] == 10
    predicted = jm("predict", "--model", str(model), "--store", str(store), "--user", "u0", "--k", "2", "--json")
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["last_items"][-1] == CYCLE[3] and answer["next_items"][0] == {"item": CYCLE[4], "score": 1.0}
