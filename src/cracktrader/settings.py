"""Process-wide settings from `CRACKTRADER_*` environment variables; every setting has a safe default."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("cracktrader", appauthor=False))


def _default_sweep_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("cracktrader", appauthor=False)) / "sweeps"


def normalize_database_url(url: str) -> str:
    """The URL with an async driver: `postgres(ql)://` -> `postgresql+asyncpg://`, `sqlite://` -> `sqlite+aiosqlite://`."""
    url = url.strip()
    # Hosting platforms hand out driverless URLs (Heroku still uses `postgres://`); the app only speaks async drivers.
    for prefix, replacement in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def default_database_url(data_dir: Path) -> str:
    """The SQLite database inside the data folder."""
    return f"sqlite+aiosqlite:///{data_dir.expanduser().as_posix()}/cracktrader.db"


class Settings(BaseSettings):
    """Core settings. The web server adds its own on top."""

    model_config = SettingsConfigDict(env_prefix="CRACKTRADER_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    strategy_dir: Path | None = None
    # Where a sweep keeps its completed chunks so an interrupted one resumes (default: the user cache dir).
    sweep_cache_dir: Path = Field(default_factory=_default_sweep_cache_dir)
    # The Dask scheduler the server's sweeps and walk-forward sweeps run on (tcp://host:8786); None: its worker process.
    dask_scheduler: str | None = Field(default=None, pattern=r"^tcp://[^\s/]+:\d+$")
    default_exchange: str = "binance"
    # Per-exchange overrides, e.g. {"binance": {"base_url": "http://127.0.0.1:9000", "options": {...}}}.
    exchange_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    default_fee_rate: float = 0.001
    default_lookback_bars: int = 1000
    # Retries (with exponential backoff from `ccxt_backoff_base` seconds) on network errors and rate limits.
    ccxt_max_retries: int = Field(5, ge=0, le=20)
    ccxt_backoff_base: float = Field(0.5, ge=0.0, le=60.0)
    # Admission limits of one run, checked before it starts: bars x symbols, and the memory that needs.
    max_run_bars: int = Field(20_000_000, ge=1)
    max_run_memory_mb: int = Field(4096, ge=1)
    # Bars x symbols of a paper session's replay: it loads them into the server process itself, not a worker.
    max_replay_bars: int = Field(1_000_000, ge=1)
    # Paper and live sessions a server runs at once; one more is refused (409 SESSION_LIMIT), never queued.
    max_live_sessions: int = Field(10, ge=1, le=10_000)
    # A live session does not start when the exchange's clock is further than this from ours (median of samples).
    max_clock_skew_ms: int = Field(1_000, ge=1, le=600_000)
    # Real money (live sessions off the exchange's sandbox) only when the server's operator says so.
    live_trading: Literal["disabled", "enabled"] = "disabled"
    # A live session on a venue without a dead man's switch, down longer than this, cancels its resting orders
    # before its strategy runs again.
    max_offline_s: float = Field(300.0, gt=0, le=86_400 * 7)
    # Backtests (and sweeps) run in this many worker processes at once; more wait in a queue, in order.
    max_concurrent_backtests: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    # Backtests that may wait for a worker; one more is refused (409 QUEUE_FULL): each waiting run holds memory.
    max_queued_backtests: int = Field(100, ge=0, le=100_000)
    # How much lower than the server's the workers' OS priority is (os.nice), so the API stays responsive.
    backtest_niceness: int = Field(10, ge=0, le=19)
    # Combinations a sweep on the server may have (CRACKTRADER_MAX_SWEEP_COMBINATIONS); more answer 422.
    max_sweep_combinations: int = Field(10_000, ge=1, le=1_000_000)
    # Bars per symbol a synchronous `check` (CLI or POST /strategies/{name}/check) covers.
    max_check_bars: int = Field(200_000, ge=1)
    # Run history retention: 0 keeps everything. Live-trading records are never deleted.
    run_retention_days: int = Field(0, ge=0)
    run_retention_count: int = Field(0, ge=0)
    # Server leases: a run whose server has not renewed its lease for `server_lease_ttl_s` was cut short.
    server_heartbeat_s: float = Field(5.0, gt=0, le=3600)
    server_lease_ttl_s: float = Field(30.0, gt=0, le=86_400)
    # Run queue: an executor's lease on a claimed run, its heartbeat, what happens to a backtest whose lease
    # lapsed (fail by default: no silent re-execution) and how many runs a user may have queued plus running.
    run_lease_ttl_s: float = Field(30.0, gt=0, le=86_400)
    run_heartbeat_s: float = Field(5.0, gt=0, le=3600)
    expired_backtest_policy: Literal["requeue", "fail"] = "fail"
    max_runs_per_user: int = Field(50, ge=1, le=100_000)
    # Backtests started by id (POST /runs) go into the queue for any executor (`cracktrader worker`, or serve's
    # own) instead of this process's pool; executors look for work this often.
    run_queue: bool = False
    executor_poll_s: float = Field(0.2, gt=0, le=60)
    # How long a stopping executor lets its runs finish before it hands them back to the queue.
    executor_drain_s: float = Field(10.0, ge=0, le=3600)
    # Alerts are also POSTed (JSON) to this URL when set, retried with exponential backoff from
    # `alert_webhook_backoff_s` up to `alert_webhook_attempts` times; it is never logged with its credentials.
    alert_webhook: SecretStr | None = None
    alert_webhook_attempts: int = Field(5, ge=1, le=20)
    alert_webhook_backoff_s: float = Field(1.0, ge=0.0, le=600.0)
    # Run history and (later) users. Unprefixed DATABASE_URL is the conventional name hosting platforms set;
    # CRACKTRADER_DATABASE_URL wins when both are set. Empty means SQLite in data_dir (filled in below).
    database_url: str = Field(
        "", validation_alias=AliasChoices("CRACKTRADER_DATABASE_URL", "DATABASE_URL", "database_url")
    )
    # Encrypts stored exchange credentials (any string of at least 32 characters). Empty: a key generated once
    # into data_dir/secret.key, readable only by its owner. Losing it makes stored credentials unreadable.
    secret_key: SecretStr | None = None
    sqlalchemy_echo: bool = Field(
        False, validation_alias=AliasChoices("CRACKTRADER_SQLALCHEMY_ECHO", "SQLALCHEMY_ECHO", "sqlalchemy_echo")
    )

    @field_validator("exchange_options", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @model_validator(mode="after")
    def _database_url(self) -> Settings:
        # Computed after validation because the default depends on data_dir.
        self.database_url = (
            normalize_database_url(self.database_url)
            if self.database_url.strip()
            else default_database_url(self.data_dir)
        )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The cached settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return Settings()
