"""One settings object for the whole library, read from ``journeymap.toml`` and the environment.

It refuses unsafe defaults: there is no built-in pseudonymization secret outside the demo.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from journeymap.events.vocabulary import Vocabulary
from journeymap.exceptions import ConfigError

if TYPE_CHECKING:  # the policy package imports this module; it is loaded only for a [policy] table
    from journeymap.policy._rewards import PolicyConfig

SECRET_ENV = "JOURNEYMAP_SECRET"
CONFIG_ENV = "JOURNEYMAP_CONFIG"
CONFIG_FILE = "journeymap.toml"
MIN_SECRET_CHARS = 16
# Used only by `journeymap demo` on simulated users; a store made with it says so in its metadata.
DEMO_SECRET = "journeymap-demo-secret--simulated-users-only"

_HOW_TO_SET_SECRET = (
    f"Set one with: export {SECRET_ENV}=$(python -c 'import secrets; print(secrets.token_hex(32))') "
    f"(or `secret = \"...\"` in {CONFIG_FILE}), and keep it: the same secret must be used for every "
    "ingest into a store."
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float, what: str = "duration") -> timedelta:
    """Parse '30m', '1h', '7d' (or a number of seconds) into a positive timedelta."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ConfigError(
                f"The {what} must be a positive duration like '30m', '1h' or '7d'. Got '{text}'."
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"The {what} must be a positive duration like '30m'. Got '{text}'.")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Limits:
    """What a valid event looks like; rows outside these go to quarantine with the reason."""

    earliest: datetime = datetime(1990, 1, 1)
    max_future: timedelta = timedelta(days=1)
    max_price: float = 10_000_000.0
    max_quantity: int = 1_000_000
    rating_min: float = 0.0
    rating_max: float = 5.0
    max_field_bytes: int = 65_536

    def latest(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None, microsecond=0) + self.max_future


@dataclass(frozen=True)
class Settings:
    """Everything configurable; build with :meth:`load` or directly in code and tests."""

    secret: str | None = None
    session_gap: timedelta = timedelta(minutes=30)
    # DuckDB's memory cap while ingesting: without it, committing 10M events peaked at 3.2 GB
    # RSS; with 1GB it peaked at 1.7 GB in the same time (benchmarks/README.md).
    ingest_memory_limit: str = "1GB"
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    limits: Limits = field(default_factory=Limits)
    source: Path | None = None
    # The service's API keys: "key1:ingest+read,key2:admin" or a table {key = "ingest+read"};
    # JOURNEYMAP_API_KEYS wins (see journeymap.serve).
    api_keys: str | dict[str, str] | None = None
    # The decisions' bandit, reward and log ([policy] and [policy.reward]); None: PolicyConfig()'s
    # defaults. The service's own policy_config, where given, overrides it key by key.
    policy: PolicyConfig | None = None

    def require_secret(self) -> str:
        """The pseudonymization secret, or a ConfigError that says how to set one."""
        if not self.secret:
            raise ConfigError(f"No pseudonymization secret is set. {_HOW_TO_SET_SECRET}")
        if len(self.secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"The pseudonymization secret is {len(self.secret)} characters; use at least "
                f"{MIN_SECRET_CHARS}. {_HOW_TO_SET_SECRET}"
            )
        return self.secret

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        """Read the config file (explicit path, $JOURNEYMAP_CONFIG, or ./journeymap.toml if present).

        The environment's JOURNEYMAP_SECRET wins over the file's secret.
        """
        explicit = path or os.environ.get(CONFIG_ENV)
        data: dict[str, Any] = {}
        source: Path | None = None
        if explicit:
            source = Path(explicit)
            if not source.is_file():
                raise ConfigError(f"Config file {source} does not exist.")
        elif Path(CONFIG_FILE).is_file():
            source = Path(CONFIG_FILE)
        if source is not None:
            try:
                data = tomllib.loads(source.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"Config file {source} is not valid TOML: {exc}.") from None
        settings = cls._from_dict(data, source)
        env_secret = os.environ.get(SECRET_ENV)
        if env_secret:
            settings = _replace(settings, secret=env_secret)
        return _replace(settings, **overrides) if overrides else settings

    @classmethod
    def _from_dict(cls, data: dict[str, Any], source: Path | None) -> Settings:
        where = f" in {source}" if source else ""
        known = {"secret", "session_gap", "ingest_memory_limit", "event_types", "stages", "limits", "api_keys",
                 "policy"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"Unknown setting(s) {', '.join(sorted(unknown))}{where}; "
                f"known ones are {', '.join(sorted(known))}."
            )
        types = data.get("event_types", {})
        vocabulary = Vocabulary.from_config(
            custom=types.get("custom", ()),
            aliases=types.get("aliases", {}),
            stages=data.get("stages"),
        )
        limits_data = dict(data.get("limits", {}))
        limits = Limits()
        kwargs: dict[str, Any] = {}
        if "earliest" in limits_data:
            try:
                kwargs["earliest"] = datetime.fromisoformat(str(limits_data.pop("earliest")))
            except ValueError as exc:
                raise ConfigError(f"limits.earliest{where} must be a date like 1990-01-01: {exc}.") from None
        if "max_future" in limits_data:
            kwargs["max_future"] = parse_duration(limits_data.pop("max_future"), "limits.max_future")
        if "rating" in limits_data:
            low, high = limits_data.pop("rating")
            kwargs["rating_min"], kwargs["rating_max"] = float(low), float(high)
        for name in ("max_price", "max_quantity", "max_field_bytes"):
            if name in limits_data:
                kwargs[name] = type(getattr(limits, name))(limits_data.pop(name))
        if limits_data:
            raise ConfigError(f"Unknown limit(s) {', '.join(sorted(limits_data))}{where}.")
        policy = None
        if "policy" in data:
            from journeymap.policy._rewards import PolicyConfig

            policy = PolicyConfig.from_mapping(data["policy"], where, vocabulary,
                                               base_dir=source.parent if source is not None else None)
        return cls(
            secret=data.get("secret"),
            session_gap=parse_duration(data.get("session_gap", "30m"), "session_gap"),
            ingest_memory_limit=str(data.get("ingest_memory_limit", "1GB")),
            vocabulary=vocabulary,
            limits=Limits(**kwargs),
            source=source,
            api_keys=data.get("api_keys"),
            policy=policy,
        )


def _replace(settings: Settings, **changes: Any) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)
