"""Settings as validated models read from environment variables.

Each field's alias is the environment variable's name, so a missing or malformed setting fails at
start-up with a message naming the variable, not with a KeyError deep inside a call. Settings are split
by concern so that each function requires only what it uses (the publisher needs no Klarna credentials).
"""

import os
from collections.abc import Mapping
from typing import Self

from botocore.config import Config
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError


class ConfigurationError(RuntimeError):
    """The function's environment is wrong; the message names every offending variable."""


class EnvironmentSettings(BaseModel):
    # defer_build: a settings class is built when it is first validated, so the layers of mixins that
    # no function loads as they are (AwsCallSettings, TableSettings, ...) cost nothing at cold start.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, defer_build=True)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Self:
        try:
            return cls.model_validate(dict(os.environ if environ is None else environ))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ConfigurationError(f"invalid environment: {problems}") from None


class AwsCallSettings(EnvironmentSettings):
    """How long one DynamoDB or Secrets Manager call may take: botocore's connect and read timeouts and
    its attempts (standard retries). The defaults suit a caller who can wait a few seconds (the sessions
    API, the poller: docs/configuration.md, "Time budgets"); the template gives the callback tighter
    ones, with their arithmetic."""

    aws_call_connect_timeout_seconds: float = Field(
        alias="AWS_CALL_CONNECT_TIMEOUT_SECONDS", default=0.5, gt=0, le=10
    )
    aws_call_read_timeout_seconds: float = Field(
        alias="AWS_CALL_READ_TIMEOUT_SECONDS", default=1.0, gt=0, le=30
    )
    aws_call_attempts: int = Field(alias="AWS_CALL_ATTEMPTS", default=3, ge=1, le=5)

    @property
    def aws_call_seconds(self) -> float:
        """The longest one call can take: every attempt at its timeouts, and between them the longest
        backoff botocore makes (a throttled call: 1 s, then 2 s, ...; 25 ms otherwise)."""
        attempts = self.aws_call_attempts
        timeouts = self.aws_call_connect_timeout_seconds + self.aws_call_read_timeout_seconds
        return attempts * timeouts + ((1 << (attempts - 1)) - 1)

    def aws_call_config(self) -> Config:
        return Config(
            connect_timeout=self.aws_call_connect_timeout_seconds,
            read_timeout=self.aws_call_read_timeout_seconds,
            retries={"mode": "standard", "total_max_attempts": self.aws_call_attempts},
        )


class TableSettings(AwsCallSettings):
    table_name: str = Field(alias="TABLE_NAME", min_length=3, max_length=255)
    # Days a session's row is kept after its expires_at (DynamoDB TTL); 0 keeps rows forever.
    session_retention_days: int = Field(alias="SESSION_RETENTION_DAYS", default=90, ge=0)
    # Non-final sessions are spread over this many poller index shards (see lifecycle.poll_shard).
    poll_shards: int = Field(alias="POLL_SHARDS", default=8, ge=1, le=100)
    first_poll_delay_seconds: int = Field(alias="FIRST_POLL_DELAY_SECONDS", default=60, ge=1)


class StateSettings(AwsCallSettings):
    """The table of tracker state that is not a session (counters, caches, the poller's own state)."""

    state_table_name: str = Field(alias="STATE_TABLE_NAME", min_length=3, max_length=255)


class KlarnaSettings(AwsCallSettings):
    klarna_api_url: AnyHttpUrl = Field(alias="KLARNA_API_URL")
    klarna_credentials_secret_arn: str = Field(alias="KLARNA_CREDENTIALS_SECRET_ARN", min_length=1)
    # Klarna gives a callback 3 seconds; a Read Session made while answering one must leave room.
    klarna_timeout_seconds: float = Field(alias="KLARNA_TIMEOUT_SECONDS", default=1.5, gt=0, le=30)
    credentials_cache_seconds: int = Field(alias="CREDENTIALS_CACHE_SECONDS", default=300, ge=0)

    @property
    def klarna_base_url(self) -> str:
        return str(self.klarna_api_url).rstrip("/")


class Settings(TableSettings, KlarnaSettings):
    """What a function that records statuses read from Klarna needs (callback, sessions, poller)."""


_loaded: dict[type[EnvironmentSettings], EnvironmentSettings] = {}


def load_settings[T: EnvironmentSettings](kind: type[T]) -> T:
    """A function's settings, validated once per process (at cold start, when its module imports it)."""
    settings = _loaded.get(kind)
    if not isinstance(settings, kind):
        settings = _loaded[kind] = kind.from_environment()
    return settings


def clear_settings_cache() -> None:
    """Forget loaded settings (tests that import a function again under another environment)."""
    _loaded.clear()


def get_settings() -> Settings:
    return load_settings(Settings)
