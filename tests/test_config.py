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


def test_policy_settings_come_from_the_config(tmp_path):
    (tmp_path / "journeymap.toml").write_text(
        '[policy]\nexploration = "epsilon"\nepsilon = 0.2\nlearning_rate = 0.05\nlog = "decisions/shop.jsonl"\n'
        '[policy.reward]\nevents = {purchase = 1.0, cart = 0.3}\nhorizon = "2h"\ndefault = -0.1\n'
        '[event_types.aliases]\ncart = "add_to_cart"\n'
    )
    policy = Settings.load(tmp_path / "journeymap.toml").policy
    assert (policy.exploration, policy.epsilon, policy.learning_rate) == ("epsilon", 0.2, 0.05)
    assert (policy.gamma_scale, policy.clip_p) == (5.0, 0.1)  # not given: the library's defaults
    assert policy.log == tmp_path / "decisions" / "shop.jsonl"  # relative to the config file, not the working folder
    # event types as the store keeps them (the alias resolved)
    assert policy.reward.values == {"purchase": 1.0, "add_to_cart": 0.3}
    assert (policy.reward.horizon, policy.reward.default) == (timedelta(hours=2), -0.1)
    (tmp_path / "journeymap.toml").write_text('secret = "s-0123456789abcdef"\n')
    assert Settings.load(tmp_path / "journeymap.toml").policy is None  # no table: the library's defaults


@pytest.mark.parametrize(("table", "message"), [
    ('[policy]\nepsilon = "lots"\n', r"policy\.epsilon in .*journeymap\.toml must be a number from 0 to 1, like 0\.1\. "
                                     r"Got 'lots'\."),
    ('[policy]\nepsilon = 1.5\n', r"policy\.epsilon in .* must be a number from 0 to 1, like 0\.1\. Got 1\.5\."),
    ('[policy]\nexploration = "greedy"\n', r"policy\.exploration in .* is one of epsilon, softmax, squarecb, bag\. "
                                           r"Got 'greedy'\."),
    ('[policy]\nexplore = "epsilon"\n', r"Unknown policy setting\(s\) explore in .*; known ones are bag, "),
    ('[policy]\nbag = 2.5\n', r"policy\.bag in .* must be an integer of at least 1, like 5\. Got 2\.5\."),
    ('[policy]\nlog = "decisions.csv"\n', r"policy\.log in .* must be the decision log's path, a \.jsonl file"),
    ('[policy.reward]\nhorizon = "0s"\n', r"The policy\.reward\.horizon in .* must be a positive duration like "
                                          r"'30m'\. Got '0s'\."),
    ('[policy.reward]\nevents = {purchse = 1.0}\n', r"policy\.reward\.events\.purchse in .* names event type "
                                                    r"'purchse', which is not a known event type; use one of page_view"),
    ('[policy.reward]\nevents = {purchase = "yes"}\n', r"policy\.reward\.events\.purchase in .* must be a number, "
                                                       r"like 1\. Got 'yes'\."),
    ('[policy.reward]\nvalue = "revenue"\n', r"policy\.reward\.value in .* is 'one' \(the event type's reward\) or "
                                             r"'amount'"),
    ('[policy.reward]\nwindow = "30m"\n', r"Unknown reward setting\(s\) window in .*; known ones are default, "
                                          r"event_type, events, horizon, value\."),
])
def test_policy_config_errors_name_the_key_what_it_takes_and_what_arrived(tmp_path, table, message):
    (tmp_path / "journeymap.toml").write_text(table)
    with pytest.raises(ConfigError, match=message):
        Settings.load(tmp_path / "journeymap.toml")
