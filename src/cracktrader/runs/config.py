"""Run configurations: the one shape of a backtest request for the CLI, the API and the SDK."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The stored/served/echoed form of a config is built in one place; re-exported for existing imports.
from cracktrader.runs.sanitize import REDACTED, SECRET_KEYS, redact

__all__ = ["REDACTED", "SECRET_KEYS", "BacktestConfig", "LiveConfig", "clean_symbols", "redact"]


def clean_symbols(value: list[str]) -> list[str]:
    """Upper-cased symbols; blank or repeated ones are a validation error (both request models share this)."""
    cleaned = [s.strip().upper() for s in value]
    if any(not s for s in cleaned):
        raise ValueError("symbols must not be empty strings")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("symbols must not repeat")
    return cleaned


class BacktestConfig(BaseModel):
    """A backtest request (seed 003's `POST /run/backtest` body plus cost settings)."""

    model_config = ConfigDict(extra="forbid")

    strategy_name: str = Field(..., min_length=1, max_length=200, examples=["TestStrategy"])
    strategy_params: dict[str, Any] = Field(default_factory=dict, examples=[{"period": 20, "threshold": 0.02}])
    strategy_class: str | None = Field(
        None,
        max_length=200,
        description="Set by the server: the class run when strategy_name names a stored strategy (ignored if sent)",
        json_schema_extra={"readOnly": True},
    )
    symbols: list[str] = Field(..., min_length=1, max_length=50, examples=[["BTC/USDT"]])
    timeframe: str = Field("1h", examples=["1h"])
    start_date: str | None = Field(None, examples=["2024-01-01T00:00:00Z"])
    end_date: str | None = Field(None, examples=["2024-12-31T23:59:59Z"])
    initial_cash: float = Field(10_000.0, gt=0, le=1e15)
    exchange: str = Field("binance", min_length=1, max_length=64)
    commission: float | None = Field(
        None, ge=0, le=0.1, description="Fee rate for maker and taker fills; default: the exchange's or 0.1%"
    )
    slippage_bps: float = Field(0.0, ge=0, le=1000, description="Slippage in basis points against each fill")
    latency_bars: int = Field(1, ge=1, le=1000, description="Bars between a decision and its fill")
    allow_short: bool = Field(False, description="Allow short positions (spot is long-only by default)")

    _symbols = field_validator("symbols")(lambda cls, value: clean_symbols(value))


class LiveConfig(BaseModel):
    """A paper or live trading request (seed 003's `POST /run/live` body)."""

    model_config = ConfigDict(extra="forbid")

    strategy_name: str = Field(..., min_length=1, max_length=200)
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    strategy_class: str | None = Field(
        None,
        max_length=200,
        description="Set by the server: the class run when strategy_name names a stored strategy (ignored if sent)",
        json_schema_extra={"readOnly": True},
    )
    symbols: list[str] = Field(..., min_length=1, max_length=50)
    timeframe: str = "1h"
    exchange: str = Field("binance", min_length=1, max_length=64)
    exchange_config: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["paper", "live"] = "paper"

    _symbols = field_validator("symbols")(lambda cls, value: clean_symbols(value))
