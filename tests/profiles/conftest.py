"""Stores for profile tests: hand-built users with known answers (``make_store``) and the simulated shop.

``profiled_sim`` is a copy of the session's simulated 20,000-user shop (tests/conftest.py) with
profiles built, so profile tests never write into the store the journey tests read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from journeymap.config import Settings
from tests.conftest import SECRET


@dataclass
class Profiled:
    store: Path
    truth: dict  # raw user id -> planted persona, and the rest of the simulator's truth
    frame: pd.DataFrame  # the profiles table, index user_id


def build(store: Path, **kwargs):
    """build_profiles with the test secret's settings."""
    from journeymap.profiles import build_profiles

    return build_profiles(store, settings=Settings(secret=SECRET), **kwargs)


@pytest.fixture(scope="session")
def profiled_sim(simulated_store, tmp_path_factory) -> Profiled:
    folder = tmp_path_factory.mktemp("profiled")
    store = folder / "shop.duckdb"
    shutil.copy(simulated_store.store, store)
    result = build(store)
    return Profiled(store, simulated_store.truth, result.to_frame())
