"""The machine line every benchmark prints: CPU, cores, memory, OS, Python and package versions."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def machine(*packages: str, load: bool = False) -> str:
    """``packages`` are distribution names whose versions belong in the line; ``load`` adds the
    1-minute load average (other work on a shared machine skews times)."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parts = [cpu, f"{os.cpu_count()} cores", f"{mem:.0f} GiB RAM", f"{platform.system()} {platform.release()}",
             f"Python {platform.python_version()}"]
    for name in packages:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    text = ", ".join(parts)
    return text + (f"; load average {os.getloadavg()[0]:.1f} at the start" if load else "")
