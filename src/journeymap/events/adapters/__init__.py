"""Source formats, one small module each, and detection of a file's format from its header."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from journeymap.events.adapters._base import Adapter, Role
from journeymap.events.adapters.diginetica import Diginetica
from journeymap.events.adapters.ga4 import GA4
from journeymap.events.adapters.generic import Generic, Mapping_
from journeymap.events.adapters.instacart import Instacart
from journeymap.events.adapters.online_retail import OnlineRetail
from journeymap.events.adapters.rees46 import Rees46
from journeymap.events.adapters.retailrocket import RetailRocket
from journeymap.events.adapters.taobao import Taobao
from journeymap.events.adapters.yoochoose import YooChoose
from journeymap.events.readers import Dialect, peek
from journeymap.exceptions import FormatError

__all__ = ["Adapter", "FORMATS", "Planned", "Role", "get_adapter", "plan"]

# name -> factory; the generic adapter also takes a mapping.
FORMATS: dict[str, type[Adapter]] = {
    "rees46": Rees46,
    "taobao": Taobao,
    "diginetica": Diginetica,
    "yoochoose": YooChoose,
    "retailrocket": RetailRocket,
    "online_retail": OnlineRetail,
    "instacart": Instacart,
    "ga4": GA4,
    "generic": Generic,
}


def get_adapter(name: str, mapping: Mapping_ | None = None) -> Adapter:
    if name not in FORMATS:
        raise FormatError(f"Unknown format '{name}'; known formats are {', '.join(FORMATS)}.")
    if name == "generic":
        return Generic(mapping)
    if mapping is not None and (mapping.columns or mapping.event_types or mapping.ts_format or mapping.ts_unit):
        raise FormatError(
            f"A column mapping applies to --format generic only; format '{name}' knows its columns."
        )
    return FORMATS[name]()


@dataclass
class Planned:
    """What an ingest will read: one adapter and each file with its role and dialect."""

    adapter: Adapter
    files: list[tuple[Path, Role, Dialect]]
    empty: list[Path]


READABLE = (".csv", ".tsv", ".txt", ".dat", ".parquet", ".pq", ".jsonl", ".ndjson")


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """Files to read: each path, or the data files of each directory (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file() and _readable(p)))
        elif path.is_file():
            out.append(path)
        else:
            raise FormatError(f"{path} does not exist.")
    if not out:
        raise FormatError("No input files were given (directories hold no .csv/.parquet/.jsonl files).")
    return out


def _readable(path: Path) -> bool:
    names = [s.lower() for s in path.suffixes]
    while names and names[-1] in (".gz", ".bz2", ".zst", ".lz4"):
        names.pop()
    return bool(names) and names[-1] in READABLE and not path.name.startswith(".")


def plan(paths: Sequence[str | Path], format: str | None = None, mapping: Mapping_ | None = None) -> Planned:
    """Pick the adapter (given or detected from headers) and each file's role and dialect."""
    files = expand(paths)
    peeked = {}
    empty = []
    for path in files:
        container, dialect, header, rows = peek(path)
        if not header:
            empty.append(path)
        else:
            peeked[path] = (dialect, header, rows)
    if format is None and mapping is not None:
        format = "generic"
    if format is not None:
        adapter = get_adapter(format, mapping)
        planned = []
        for path, (dialect, header, rows) in peeked.items():
            if isinstance(adapter, Generic):
                adapter.resolve(header, path)
                role = adapter.roles[0]
            else:
                role = adapter.sniff(header, rows)
                if role is None:
                    guess = _candidates(header, rows)
                    hint = f" It looks like {', '.join(guess)}." if guess else ""
                    raise FormatError(
                        f"{path} is not in {format} format: expected columns "
                        f"{_expected(adapter)}, found {', '.join(header[:12])}.{hint}"
                    )
            planned.append((path, role, adapter.dialect(dialect, role)))
        return Planned(adapter, planned, empty)
    chosen: Adapter | None = None
    planned = []
    for path, (dialect, header, rows) in peeked.items():
        names = _candidates(header, rows)
        if not names:
            raise FormatError(
                f"Cannot tell the format of {path} from its header ({', '.join(header[:12])}). "
                f"Give --format (one of {', '.join(FORMATS)}), or map its columns with "
                "--map user_id=COL --map ts=COL --map event_type=COL or --mapping FILE.toml."
            )
        if len(names) > 1:
            raise FormatError(
                f"The format of {path} is ambiguous: it matches {', '.join(names)}. Pass --format NAME."
            )
        adapter = get_adapter(names[0])
        if chosen is not None and chosen.name != adapter.name:
            raise FormatError(
                f"The files are in different formats ({chosen.name} and {adapter.name}, from "
                f"{path}); ingest one format per command."
            )
        chosen = chosen or adapter
        role = chosen.sniff(header, rows)
        assert role is not None
        planned.append((path, role, chosen.dialect(dialect, role)))
    if chosen is None:
        raise FormatError(
            "Every input file is empty, so their format cannot be detected; pass --format to "
            "ingest them anyway."
        ) if empty else FormatError("No input files were given.")
    return Planned(chosen, planned, empty)


def _candidates(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    names = []
    for name, factory in FORMATS.items():
        if factory().sniff(header, rows) is not None:
            names.append(name)
    # A file in canonical layout also satisfies REES46-like detectors only if it has their
    # columns; prefer the specific format over the generic identity mapping.
    if len(names) > 1 and "generic" in names:
        names.remove("generic")
    return names


def _expected(adapter: Adapter) -> str:
    return " or ".join("(" + ", ".join(sorted(role.required)) + ")" for role in adapter.roles)
