"""Fixtures for the service: a small simulated shop (built once), a copy of it per test, API keys
for each scope, and a running app over the copy (``TestClient``, lifespan included)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from journeymap.config import Settings
from tests.conftest import SECRET

KEYS = {
    "admin": "admin-key-0123456789",
    "ingest": "ingest-key-0123456789",
    "read": "read-key-01234567890",
    "decide": "decide-key-0123456789",
    "ingest+read": "ingest-read-key-012345",
}
SETTINGS = Settings(secret=SECRET)


def auth(scope: str = "admin") -> dict[str, str]:
    """Headers with the key of ``scope``."""
    return {"Authorization": f"Bearer {KEYS[scope]}"}


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNEYMAP_API_KEYS", raising=False)


@dataclass
class Shop:
    store: Path
    log: pd.DataFrame  # the simulated REES46 log, every column as text
    users: list[str]  # raw user ids, most active first


@pytest.fixture(scope="session")
def shop(tmp_path_factory) -> Shop:
    """A 150-user, 7-day simulated shop: about a thousand events, ingested in well under a second."""
    from journeymap.events import ingest
    from journeymap.simulator import simulate

    folder = tmp_path_factory.mktemp("serve-shop")
    sim = simulate(users=150, days=7, seed=11, out=folder / "shop.csv")
    store = folder / "shop.duckdb"
    ingest(sim.path, store, settings=SETTINGS)
    log = pd.read_csv(sim.path, dtype=str, keep_default_na=False)
    return Shop(store, log, log["user_id"].value_counts().index.tolist())


@pytest.fixture
def store(shop: Shop, tmp_path: Path) -> Path:
    """A private copy of the shop's store (tests write to it)."""
    path = tmp_path / "live.duckdb"
    shutil.copy(shop.store, path)
    return path


def make_app(store: Path, **kwargs):
    from journeymap.serve import create_app

    kwargs.setdefault("api_keys", {key: scope for scope, key in KEYS.items()})
    kwargs.setdefault("profile_refresh_seconds", 0.5)  # tests wait for background updates
    return create_app(store, kwargs.pop("settings", SETTINGS), **kwargs)


@pytest.fixture
def client(store: Path):
    from fastapi.testclient import TestClient

    with TestClient(make_app(store)) as c:
        yield c
