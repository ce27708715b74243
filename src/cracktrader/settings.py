"""Process-wide settings from `CRACKTRADER_*` environment variables; every setting has a safe default."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("cracktrader", appauthor=False))


class Settings(BaseSettings):
    """Core settings. The web server adds its own on top."""

    model_config = SettingsConfigDict(env_prefix="CRACKTRADER_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    strategy_dir: Path | None = None
    default_exchange: str = "binance"
    # Per-exchange overrides, e.g. {"binance": {"base_url": "http://127.0.0.1:9000", "options": {...}}}.
    exchange_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    default_fee_rate: float = 0.001
    default_lookback_bars: int = 1000
    # Retries (with exponential backoff from `ccxt_backoff_base` seconds) on network errors and rate limits.
    ccxt_max_retries: int = Field(5, ge=0, le=20)
    ccxt_backoff_base: float = Field(0.5, ge=0.0, le=60.0)

    @field_validator("exchange_options", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The cached settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return Settings()
