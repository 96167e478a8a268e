from datetime import timedelta

import pytest

from journeymap.config import Settings, parse_duration
from journeymap.exceptions import ConfigError


def test_missing_secret_says_how_to_set_one():
    with pytest.raises(ConfigError, match=r"No pseudonymization secret is set\. Set one with: export JOURNEYMAP_SECRET="):
        Settings().require_secret()


def test_short_secret_is_refused():
    with pytest.raises(ConfigError, match="is 5 characters; use at least 16"):
        Settings(secret="short").require_secret()


def test_environment_secret_wins_over_the_file(tmp_path, monkeypatch):
    (tmp_path / "journeymap.toml").write_text('secret = "from-the-file-0123456789"\nsession_gap = "45m"\n')
    assert Settings.load().secret == "from-the-file-0123456789"
    assert Settings.load().session_gap == timedelta(minutes=45)
    monkeypatch.setenv("JOURNEYMAP_SECRET", "from-the-env-0123456789")
    assert Settings.load().secret == "from-the-env-0123456789"


def test_stages_and_aliases_come_from_the_config(tmp_path):
    (tmp_path / "journeymap.toml").write_text(
        '[event_types]\ncustom = ["wishlist_share"]\n[event_types.aliases]\nclick = "product_view"\n'
        '[stages]\nretain = ["wishlist_share"]\n'
    )
    vocabulary = Settings.load().vocabulary
    assert vocabulary.canonical("click") == "product_view"
    assert vocabulary.stage_of["wishlist_share"] == "retain"
    assert vocabulary.stage_of["purchase"] == "convert"
    assert vocabulary.canonical("nope") is None


def test_config_errors_name_the_problem(tmp_path):
    (tmp_path / "journeymap.toml").write_text('[stages]\nbuy = ["purchase"]\n')
    with pytest.raises(ConfigError, match="Unknown stage 'buy'"):
        Settings.load()
    (tmp_path / "journeymap.toml").write_text('colour = "blue"\n')
    with pytest.raises(ConfigError, match="Unknown setting"):
        Settings.load()
    with pytest.raises(ConfigError, match="must be a positive duration like '30m', '1h' or '7d'. Got '-1h'"):
        parse_duration("-1h", "window")


def test_a_bad_memory_limit_is_named(tmp_path):
    from journeymap.events import ingest

    path = tmp_path / "x.csv"
    path.write_text("user_id,ts,event_type\nu,2024-01-01,page_view\n")
    with pytest.raises(ConfigError, match="ingest_memory_limit must be a size like '1GB' or '512MB'. Got 'lots'"):
        ingest(path, tmp_path / "s.duckdb", settings=Settings(secret="s" * 20, ingest_memory_limit="lots"))
    assert not (tmp_path / "s.duckdb").exists()


def test_the_stage_table_reaches_the_store(tmp_path):
    from journeymap.events import ingest
    from journeymap.store import Store

    (tmp_path / "journeymap.toml").write_text('secret = "s-0123456789abcdef"\n[event_types]\ncustom = ["wishlist_share"]\n'
                                             '[stages]\nretain = ["wishlist_share"]\n')
    path = tmp_path / "x.csv"
    path.write_text("user_id,ts,event_type\nu,2024-01-01,wishlist_share\nu,2024-01-02,purchase\n")
    assert ingest(path, tmp_path / "s.duckdb", settings=Settings.load()).stored == 2
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        got = st.con.execute("SELECT e.event_type, s.stage, s.stage_order FROM events e JOIN stages s USING (event_type) "
                             "ORDER BY ts").fetchall()
    assert got == [("wishlist_share", "retain", 5), ("purchase", "convert", 4)]


def test_service_api_keys_come_from_the_config(tmp_path, monkeypatch):
    from journeymap.serve._auth import load_api_keys

    shop, ops = "shop-ingest-key-0001", "operations-key-00002"
    (tmp_path / "journeymap.toml").write_text(f'[api_keys]\n{shop} = "ingest+read"\n{ops} = "admin"\n')
    settings = Settings.load(tmp_path / "journeymap.toml")
    assert settings.api_keys == {shop: "ingest+read", ops: "admin"}
    keys = load_api_keys(None, settings.api_keys)
    assert keys[shop] == frozenset({"ingest", "read"})
    monkeypatch.setenv("JOURNEYMAP_API_KEYS", "decide-only-key-0003:decide")  # the environment wins
    assert load_api_keys(None, settings.api_keys) == {"decide-only-key-0003": frozenset({"decide"})}
