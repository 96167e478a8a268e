"""Shared fixtures: a secret, a store in tmp_path, the real data samples beside the repo, and one
simulated shop per test run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from journeymap.config import Settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SECRET = "test-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Tests must not pick up a developer's secret or config file.
    monkeypatch.delenv("JOURNEYMAP_SECRET", raising=False)
    monkeypatch.delenv("JOURNEYMAP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings() -> Settings:
    return Settings(secret=SECRET)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store.duckdb"


def shared(relative: str) -> Path:
    """A path in ../shared/data, skipping the test when the samples are not beside the repo."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data sample {relative} not found in {SHARED_DATA} (see shared/data/README.md)")
    return path


@dataclass
class Simulated:
    store: Path
    truth: dict


@pytest.fixture(scope="session")
def simulated_store(tmp_path_factory) -> Simulated:
    """One 20,000-user, 28-day simulated shop per test run, with its ground truth (planted
    effects, user -> persona) in ``.truth``; journey and profile tests share it."""
    from journeymap.events import ingest
    from journeymap.simulator import simulate

    folder = tmp_path_factory.mktemp("simulated")
    result = simulate(users=20_000, days=28, seed=7, out=folder / "shop.csv")
    store = folder / "shop.duckdb"
    ingest(result.path, store, settings=Settings(secret=SECRET))
    return Simulated(store, result.truth)
