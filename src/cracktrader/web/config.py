"""Settings of the web server, from `CRACKTRADER_*` variables and the names the seeds use."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class WebSettings(BaseSettings):
    """Server settings; every one has a safe default (loopback, no CORS)."""

    model_config = SettingsConfigDict(env_prefix="CRACKTRADER_", extra="ignore", populate_by_name=True)

    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    workers: int = Field(1, ge=1, le=64)
    insecure: bool = False
    cors_origins: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("CORS_ORIGINS", "CRACKTRADER_CORS_ORIGINS")
    )
    # Extra Host header values to accept besides the bound host and localhost (e.g. behind a proxy).
    allowed_hosts: list[str] = Field(default_factory=list)
    status_throttle_ms: int = Field(250, ge=10, le=10_000)
    ws_heartbeat_s: float = Field(15.0, gt=0, le=3600)
    ws_queue_size: int = Field(256, ge=8, le=100_000)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    results_default_points: int = Field(2000, ge=10, le=200_000)
    results_default_limit: int = Field(1000, ge=1, le=50_000)
    # Authentication: "off" keeps the local single-operator model (loopback only); "on" needs JWT_SECRET_KEY.
    auth_mode: Literal["off", "on"] = "off"
    jwt_secret_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("JWT_SECRET_KEY", "CRACKTRADER_JWT_SECRET_KEY", "jwt_secret_key")
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field(
        "HS256", validation_alias=AliasChoices("JWT_ALGORITHM", "CRACKTRADER_JWT_ALGORITHM", "jwt_algorithm")
    )
    jwt_expiration_minutes: int = Field(
        30,
        ge=1,
        le=24 * 60,
        validation_alias=AliasChoices(
            "JWT_EXPIRATION_MINUTES", "CRACKTRADER_JWT_EXPIRATION_MINUTES", "jwt_expiration_minutes"
        ),
    )
    refresh_token_days: int = Field(14, ge=1, le=365)
    # Requests a minute per API key or user when auth is on (seed 001: 100); 0 turns the limit off. The auth-off
    # local operator is never limited: it is one person on loopback.
    rate_limit_per_minute: int = Field(100, ge=0, le=1_000_000)
    # How long a revocation made outside this process (the CLI) may take to reach it.
    auth_cache_ttl_s: float = Field(10.0, ge=0, le=3600)
    # How often the database is asked whether another process revoked a credential: the safety net behind the
    # notices (Redis or PostgreSQL) that carry revocations made by other servers at once.
    auth_revocation_poll_s: float = Field(0.5, gt=0, le=3600)
    # Redis shared by every server process for rate limits and revocation notices; unset: PostgreSQL when the
    # database is PostgreSQL, else this process alone (SQLite runs one process).
    redis_url: str | None = None
    # Prefix of every Redis key and channel, so several deployments (or test runs) can share one Redis.
    redis_prefix: str = Field("cracktrader:", max_length=200)
    # Every run event is numbered in the event log, so `/ws/status?run_id=` streams resume (`since`) and work from
    # any server process; off, those streams read this process's bus and carry no numbers.
    event_log: bool = True
    # Events of runs older than this are pruned when the server starts.
    event_log_days: int = Field(7, ge=1, le=3650)
    # With the run queue on, whether this server also executes queued runs (`serve --no-executor` turns it off,
    # leaving them to `cracktrader worker` processes).
    executor: bool = True

    @property
    def auth_enabled(self) -> bool:
        """Whether requests must carry credentials."""
        return self.auth_mode == "on"

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        # Accept JSON (seed 004 shows ["*"]) or a comma-separated list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_web_settings() -> WebSettings:
    """The cached web settings."""
    return WebSettings()
