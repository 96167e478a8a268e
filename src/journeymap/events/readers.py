"""Stream raw rows out of CSV/TSV, Parquet and JSON-lines files, with their line numbers.

Readers know containers, not meanings: every column comes out as text, each row with the line
(or Parquet row) it came from, and rows that cannot even be split into columns come out as
structural rejects. Adapters give the columns their meaning afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from journeymap.exceptions import FormatError

LINE = "__line"
# Measured: 8 MB blocks parse faster than 32 MB ones (cache), and a single row must fit in one.
CSV_BLOCK_BYTES = 8 << 20
JSONL_BATCH_ROWS = 50_000
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")


@dataclass
class Reject:
    """A row that could not be split into the file's columns, or whose bytes are not UTF-8."""

    line: int
    field: str
    reason: str
    # dict (column -> value) when the columns are known, else the list of split fields or the text
    content: dict[str, str | None] | list[str] | str


@dataclass
class RawBatch:
    """Rows of one file: every column as text, plus the line number column ``__line``."""

    path: Path
    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class Dialect:
    """How to split a file: its container, delimiter and column names."""

    container: str  # "csv", "parquet" or "jsonl"
    delimiter: str = ","
    header: bool = True
    columns: tuple[str, ...] = ()


def container_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in PARQUET_SUFFIXES:
        return "parquet"
    if last in JSONL_SUFFIXES:
        return "jsonl"
    return "csv"


def _open(path: Path) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="detect")


def peek(path: Path, max_bytes: int = 1 << 16) -> tuple[str, Dialect, list[str], list[list[str]]]:
    """Look at the start of a file: its container, a guessed dialect, header fields, first rows.

    For headerless CSVs the "header" is simply the first row; adapters decide what it is.
    """
    container = container_of(path)
    if container == "parquet":
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise FormatError(f"{path} is not a readable Parquet file: {exc}.") from None
        return container, Dialect("parquet", columns=tuple(schema.names)), list(schema.names), []
    with _open(path) as stream:
        head = stream.read(max_bytes)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(head) == max_bytes and lines and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line was cut by max_bytes
    if not lines:
        return container, Dialect(container), [], []
    if container == "jsonl":
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path} line 1 is not a JSON object: {exc.msg}.") from None
        if not isinstance(first, dict):
            raise FormatError(f"{path} line 1 is a JSON {type(first).__name__}, expected an object.")
        rows = []
        for line in lines[1:6]:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                rows.append([_text(obj.get(k)) for k in first])
        return container, Dialect("jsonl", columns=tuple(first)), list(first), rows
    delimiter = _sniff_delimiter(lines[:20])
    split = [_split(line, delimiter) for line in lines[:20]]
    # An unnamed column (a pandas index, say) gets DuckDB's name for it.
    header = [name.strip() or f"column{i}" for i, name in enumerate(split[0])]
    return container, Dialect("csv", delimiter=delimiter, columns=tuple(header)), header, split[1:]


def _sniff_delimiter(lines: list[str]) -> str:
    best, best_score = ",", 0
    for delimiter in (",", "\t", ";", "|"):
        counts = [len(_split(line, delimiter)) for line in lines]
        if min(counts) < 2:
            continue
        # A delimiter that splits every line into the same number of fields wins.
        score = min(counts) * (2 if len(set(counts)) == 1 else 1)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _split(line: str, delimiter: str) -> list[str]:
    import csv

    return next(csv.reader([line], delimiter=delimiter), [])


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def read_batches(path: Path, dialect: Dialect) -> Iterator[RawBatch]:
    """Stream a file as batches of text columns; never loads the whole file."""
    if dialect.container == "parquet":
        yield from _read_parquet(path)
    elif dialect.container == "jsonl":
        yield from _read_jsonl(path)
    else:
        yield from _read_csv(path, dialect)


def _read_csv(path: Path, dialect: Dialect) -> Iterator[RawBatch]:
    names = list(dialect.columns)
    invalid: list[tuple[int, Reject]] = []
    n_columns = len(names)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        text = row.text or ""
        fields = _split(text, dialect.delimiter) if text else []
        if row.actual_columns < n_columns:
            reason = (
                f"row has {row.actual_columns} of the {n_columns} columns "
                f"(truncated line or missing delimiter)"
            )
        else:
            reason = f"row has {row.actual_columns} columns, expected {n_columns}"
        invalid.append((row.number, Reject(0, "row", reason, fields)))
        return "skip"

    header_lines = 1 if dialect.header else 0
    try:
        reader = pacsv.open_csv(
            _open(path),
            read_options=pacsv.ReadOptions(
                use_threads=False,  # with threads, pyarrow cannot number invalid rows
                block_size=CSV_BLOCK_BYTES,
                column_names=names,
                skip_rows=header_lines,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=dialect.delimiter,
                invalid_row_handler=on_invalid,
                newlines_in_values=True,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.binary() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise FormatError(f"{path} cannot be read as {_describe(dialect)}: {exc}.") from None
    # pyarrow numbers records from 1, the skipped header included; a row's line is its record
    # number plus the newlines inside quoted values seen before it.
    next_record = 1 + header_lines
    extra_lines = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            raise FormatError(
                f"{path} cannot be read past line {next_record + extra_lines}: {exc}. "
                "A single row may not exceed 8 MB."
            ) from None
        n = batch.num_rows
        invalid.sort(key=lambda pair: pair[0])
        pending = np.fromiter((num for num, _ in invalid), dtype=np.int64, count=len(invalid))
        candidates = np.arange(next_record, next_record + n + len(pending), dtype=np.int64)
        records = candidates[~np.isin(candidates, pending)][:n]
        last_record = int(records[-1]) if n else next_record - 1
        done = [(num, rej) for num, rej in invalid if num <= last_record]
        invalid = [(num, rej) for num, rej in invalid if num > last_record]
        rejects = []
        for num, rej in done:
            rej.line = num + extra_lines
            rejects.append(rej)
        table = pa.Table.from_batches([batch])
        newline_rows = _newline_counts(table)
        lines = records + extra_lines
        if newline_rows is not None:
            # Rows after a multi-line value start later in the file.
            lines = lines + np.concatenate(([0], np.cumsum(newline_rows)[:-1]))
            extra_lines += int(newline_rows.sum())
        next_record = last_record + 1
        table, utf8_rejects = _to_text(table, lines)
        rejects.extend(utf8_rejects)
        yield RawBatch(path, table, rejects)
    if invalid:
        rejects = []
        for num, rej in sorted(invalid, key=lambda pair: pair[0]):
            rej.line = num + extra_lines
            rejects.append(rej)
        yield RawBatch(path, _empty_table(names), rejects)


def _describe(dialect: Dialect) -> str:
    delimiter = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}.get(dialect.delimiter)
    return f"{delimiter}-separated CSV"


def _empty_table(names: list[str]) -> pa.Table:
    schema = pa.schema([(n, pa.string()) for n in names] + [(LINE, pa.int64())])
    return schema.empty_table()


def _newline_counts(table: pa.Table) -> np.ndarray | None:
    """Per-row count of newlines inside values, or None when there are none (the usual case)."""
    total = None
    for column in table.columns:
        for chunk in column.chunks:
            if not _has_newline(chunk):
                continue
            counts = pc.count_substring(column, "\n").to_numpy(zero_copy_only=False).astype(np.int64)
            total = counts if total is None else total + counts
            break
    return total


def _has_newline(chunk: pa.Array) -> bool:
    # bytes.count scans at memory speed; a per-value substring kernel is ~5x slower.
    _, offsets, data = chunk.buffers()[:3]
    if data is None or len(chunk) == 0:
        return False
    bounds = np.frombuffer(offsets, dtype=np.int32)
    view = memoryview(data)[bounds[chunk.offset]:bounds[chunk.offset + len(chunk)]]
    return view.tobytes().count(b"\n") > 0


def _to_text(table: pa.Table, lines: np.ndarray) -> tuple[pa.Table, list[Reject]]:
    """Cast binary columns to UTF-8 text; rows with invalid bytes become rejects."""
    bad_rows = np.zeros(table.num_rows, dtype=bool)
    bad_field: dict[int, str] = {}
    columns = []
    for name, column in zip(table.column_names, table.columns):
        try:
            columns.append(column.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        # Slow path, only for a column that holds invalid bytes somewhere.
        values = column.to_pylist()
        fixed = []
        for i, value in enumerate(values):
            try:
                fixed.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                fixed.append(value.decode("utf-8", errors="backslashreplace"))
                bad_rows[i] = True
                bad_field.setdefault(i, name)
        columns.append(pa.chunked_array([pa.array(fixed, pa.string())]))
    text = pa.Table.from_arrays(columns, names=table.column_names)
    text = text.append_column(LINE, pa.array(lines, pa.int64()))
    if not bad_rows.any():
        return text, []
    rejects = []
    for i in np.flatnonzero(bad_rows):
        row = {name: text.column(name)[int(i)].as_py() for name in table.column_names}
        field_name = bad_field[int(i)]
        rejects.append(
            Reject(int(lines[i]), field_name, f"field '{field_name}' is not valid UTF-8 text", row)
        )
    return text.filter(pa.array(~bad_rows)), rejects


def _read_parquet(path: Path) -> Iterator[RawBatch]:
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FormatError(f"{path} is not a readable Parquet file: {exc}.") from None
    row = 1
    for batch in file.iter_batches(batch_size=256_000):
        columns = []
        for column in batch.columns:
            if pa.types.is_timestamp(column.type):
                # ISO text keeps the instant; a zone-aware column is converted to UTC first.
                if column.type.tz is not None:
                    column = column.cast(pa.timestamp(column.type.unit))
                column = pc.strftime(column, format="%Y-%m-%d %H:%M:%S")  # %S carries the fraction
            elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                column = column.cast(pa.string())
            elif pa.types.is_nested(column.type):
                column = pa.array([_text(v) for v in column.to_pylist()], pa.string())
            else:
                column = column.cast(pa.string())
            columns.append(column)
        n = batch.num_rows
        table = pa.Table.from_arrays(columns, names=batch.schema.names)
        table = table.append_column(LINE, pa.array(np.arange(row, row + n), pa.int64()))
        row += n
        yield RawBatch(path, table)


def _read_jsonl(path: Path) -> Iterator[RawBatch]:
    rows: list[dict] = []
    lines: list[int] = []
    rejects: list[Reject] = []
    names: dict[str, None] = {}
    with _open(path) as stream:
        for number, raw in enumerate(_iter_lines(stream), start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                rejects.append(
                    Reject(number, "row", "line is not valid UTF-8 text",
                           raw.decode("utf-8", errors="backslashreplace"))
                )
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                rejects.append(Reject(number, "row", f"line is not valid JSON ({exc.msg})", text))
                continue
            if not isinstance(obj, dict):
                rejects.append(
                    Reject(number, "row", f"line is a JSON {type(obj).__name__}, expected an object", text)
                )
                continue
            for key in obj:
                names.setdefault(key, None)
            rows.append(obj)
            lines.append(number)
            if len(rows) >= JSONL_BATCH_ROWS:
                yield _jsonl_batch(path, rows, lines, list(names), rejects)
                rows, lines, rejects = [], [], []
    if rows or rejects:
        yield _jsonl_batch(path, rows, lines, list(names), rejects)


def _iter_lines(stream: pa.NativeFile) -> Iterator[bytes]:
    rest = b""
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _jsonl_batch(
    path: Path, rows: list[dict], lines: list[int], names: list[str], rejects: list[Reject]
) -> RawBatch:
    data = {name: pa.array([_text(row.get(name)) for row in rows], pa.string()) for name in names}
    data[LINE] = pa.array(lines, pa.int64())
    return RawBatch(path, pa.table(data), rejects)
