"""The SR-GNN session protocol's files, so published numbers can be compared.

``TRAIN.txt``: one training session per line, item ids separated by spaces, in click order; every
prefix of a session is a training example (as SR-GNN's preprocessing makes them).
``TEST.tsv``: the header ``prefix<TAB>label``, then one test case per line: the prefix's item ids
separated by spaces, a tab, and the item that came next.

A file that breaks the format is refused with its name, line and what was expected; nothing is
skipped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from journeymap.exceptions import FormatError

TEST_HEADER = "prefix\tlabel"


@dataclass
class TestCases:
    """Next-item test cases: ``labels[i]`` followed ``prefixes[i]``.

    ``groups[i]`` numbers the session a case was cut from, where known (cases of one session are
    not independent); ``event_types`` are the prefixes' event types, where known.
    """

    __test__ = False  # not a pytest class

    prefixes: list[list]
    labels: list
    groups: list[int] | None = None
    event_types: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_sessions(cls, sessions: Sequence[Sequence], event_types: Sequence[Sequence[str]] | None = None) -> TestCases:
        """Every prefix of every session with its next item (SR-GNN's ``process_seqs``, in click order)."""
        prefixes, labels, groups, types = [], [], [], []
        for g, session in enumerate(sessions):
            for i in range(1, len(session)):
                prefixes.append(list(session[:i]))
                labels.append(session[i])
                groups.append(g)
                if event_types is not None:
                    types.append(list(event_types[g][:i]))
        return cls(prefixes, labels, groups, types if event_types is not None else None)


def _lines(path: Path, what: str) -> list[str]:
    if not path.exists():
        raise FormatError(f"No {what} file at {path}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path} is not UTF-8 text (byte {exc.start}); the {what} file must be plain text.") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    return [line.rstrip("\r") for line in lines]


def read_train_sessions(path: str | Path) -> list[list[str]]:
    """TRAIN.txt: one session per line, item ids (kept as text) separated by spaces."""
    path = Path(path)
    sessions = []
    for number, line in enumerate(_lines(path, "training"), start=1):
        if "\t" in line:
            hint = " (this looks like a TEST.tsv file)" if line == TEST_HEADER else ""
            raise FormatError(f"{path} line {number}: expected a training session, item ids separated by spaces; "
                              f"found a tab in {line[:60]!r}{hint}.")
        items = line.split()
        if not items:
            raise FormatError(f"{path} line {number}: expected a training session, item ids separated by spaces; "
                              "got an empty line.")
        sessions.append(items)
    if not sessions:
        raise FormatError(f"{path} holds no training sessions; expected one session per line, item ids separated by spaces.")
    return sessions


def read_test_cases(path: str | Path) -> TestCases:
    """TEST.tsv: the header ``prefix<TAB>label``, then ``prefix items<TAB>next item`` per line."""
    path = Path(path)
    lines = _lines(path, "test")
    if not lines:
        raise FormatError(f"{path} is empty; expected the header 'prefix<TAB>label' and one test case per line.")
    if lines[0].strip("\ufeff") != TEST_HEADER:
        raise FormatError(f"{path} line 1: expected the header 'prefix<TAB>label'; got {lines[0][:60]!r}.")
    expected = "'prefix<TAB>label' (prefix item ids separated by spaces, a tab, then the next item id)"
    prefixes, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        tabs = line.count("\t")
        if tabs != 1:
            found = "no tab" if tabs == 0 else f"{tabs} tabs"
            raise FormatError(f"{path} line {number}: expected {expected}; found {found} in {line[:60]!r}.")
        prefix_text, label_text = line.split("\t")
        prefix, label = prefix_text.split(), label_text.split()
        if not prefix:
            raise FormatError(f"{path} line {number}: the prefix (before the tab) is empty; a test case needs at "
                              "least one item before its label.")
        if len(label) != 1:
            got = "nothing" if not label else repr(label_text.strip()[:40])
            raise FormatError(f"{path} line {number}: the label (after the tab) must be one item id; got {got}.")
        prefixes.append(prefix)
        labels.append(label[0])
    if not labels:
        raise FormatError(f"{path} has the header but no test cases; expected one {expected} per line.")
    return TestCases(prefixes, labels)


def write_srgnn(folder: str | Path, train: Sequence[Sequence], test: TestCases) -> tuple[Path, Path]:
    """Write ``TRAIN.txt`` and ``TEST.tsv`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for session in [*train, *test.prefixes, test.labels]:
        _check_ids(session)
    train_path, test_path = folder / "TRAIN.txt", folder / "TEST.tsv"
    train_path.write_text("".join(" ".join(map(str, s)) + "\n" for s in train), encoding="utf-8")
    rows = [TEST_HEADER] + [" ".join(map(str, p)) + "\t" + str(lab) for p, lab in zip(test.prefixes, test.labels)]
    test_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return train_path, test_path


def _check_ids(session: Sequence) -> None:
    for item in session:
        text = str(item)
        if not text or any(c.isspace() for c in text):
            raise FormatError(f"Item id {text!r} cannot be written to TRAIN.txt/TEST.tsv: ids there are separated "
                              "by spaces and tabs, so an id must be non-empty and without whitespace.")
