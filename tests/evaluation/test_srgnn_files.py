"""TRAIN.txt / TEST.tsv: what they hold, and the exact error for each way a file can be wrong."""

from __future__ import annotations

import pytest

from journeymap.evaluation import (
    TestCases,
    read_test_cases,
    read_train_sessions,
    write_srgnn,
)
from journeymap.exceptions import FormatError


def test_round_trip_through_the_files(tmp_path):
    cases = TestCases.from_sessions([["7", "8", "9"]])
    assert cases.prefixes == [["7"], ["7", "8"]] and cases.labels == ["8", "9"] and cases.groups == [0, 0]
    train_path, test_path = write_srgnn(tmp_path, [["1", "2", "3"], ["4"]], cases)
    assert train_path.read_text() == "1 2 3\n4\n"
    assert test_path.read_text() == "prefix\tlabel\n7\t8\n7 8\t9\n"
    assert read_train_sessions(train_path) == [["1", "2", "3"], ["4"]]
    back = read_test_cases(test_path)
    assert back.prefixes == cases.prefixes and back.labels == cases.labels


def test_windows_line_ends_and_repeated_spaces_are_read(tmp_path):
    (tmp_path / "TRAIN.txt").write_text("1  2 3\r\n4 5\r\n")
    (tmp_path / "TEST.tsv").write_text("prefix\tlabel\r\n1 2\t3\r\n")
    assert read_train_sessions(tmp_path / "TRAIN.txt") == [["1", "2", "3"], ["4", "5"]]
    assert read_test_cases(tmp_path / "TEST.tsv").labels == ["3"]


@pytest.mark.parametrize(("text", "message"), [
    ("1 2\n\n3 4\n", r"TRAIN.txt line 2: expected a training session, item ids separated by spaces; got an empty line"),
    ("prefix\tlabel\n1\t2\n", r"TRAIN.txt line 1: .*found a tab in 'prefix\\tlabel' \(this looks like a TEST.tsv file\)"),
    ("", r"TRAIN.txt holds no training sessions"),
])
def test_train_file_errors_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "TRAIN.txt"
    path.write_text(text)
    with pytest.raises(FormatError, match=message):
        read_train_sessions(path)


@pytest.mark.parametrize(("text", "message"), [
    ("prefix\tlabel\n1 2\t3\n1 2 3 4\n",
     r"TEST.tsv line 3: expected 'prefix<TAB>label' \(prefix item ids separated by spaces, a tab, then the next "
     r"item id\); found no tab in '1 2 3 4'"),
    ("prefix\tlabel\n1\t2\t3\n", r"TEST.tsv line 2: .*found 2 tabs"),
    ("prefix label\n1\t2\n", r"TEST.tsv line 1: expected the header 'prefix<TAB>label'; got 'prefix label'"),
    ("1 2\t3\n", r"TEST.tsv line 1: expected the header"),
    ("prefix\tlabel\n\t3\n", r"TEST.tsv line 2: the prefix \(before the tab\) is empty"),
    ("prefix\tlabel\n1 2\t3 4\n", r"TEST.tsv line 2: the label \(after the tab\) must be one item id; got '3 4'"),
    ("prefix\tlabel\n1 2\t\n", r"TEST.tsv line 2: the label .* must be one item id; got nothing"),
    ("prefix\tlabel\n", r"TEST.tsv has the header but no test cases"),
    ("", r"TEST.tsv is empty"),
])
def test_test_file_errors_name_the_file_line_and_expectation(tmp_path, text, message):
    path = tmp_path / "TEST.tsv"
    path.write_text(text)
    with pytest.raises(FormatError, match=message):
        read_test_cases(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FormatError, match="No training file at"):
        read_train_sessions(tmp_path / "nope.txt")
    (tmp_path / "bin.tsv").write_bytes(b"prefix\tlabel\n\xff\xfe\t1\n")
    with pytest.raises(FormatError, match="is not UTF-8 text"):
        read_test_cases(tmp_path / "bin.tsv")


def test_ids_with_whitespace_cannot_be_written(tmp_path):
    with pytest.raises(FormatError, match="Item id 'a b' cannot be written"):
        write_srgnn(tmp_path, [["a b"]], TestCases([["x"]], ["y"]))
