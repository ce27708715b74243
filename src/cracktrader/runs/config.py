"""Run configurations: the one shape of a backtest request for the CLI, the API and the SDK."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# The stored/served/echoed form of a config is built in one place; re-exported for existing imports.
from cracktrader.runs.sanitize import REDACTED, SECRET_KEYS, redact

__all__ = ["REDACTED", "SECRET_KEYS", "BacktestConfig", "LiveConfig", "clean_symbols", "record_fields", "redact"]


# Dates a run may name: candles exist from 1970 on, and later years overflow what the engine and databases store.
DATE_MIN = datetime(1970, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(2100, 1, 1, tzinfo=UTC)
DATE_RANGE = "between 1970-01-01 and 2100-01-01"
DATE_FORMATS = "ISO 8601 such as 2024-01-01 or 2024-01-01T00:00:00Z, or epoch milliseconds"
_EPOCH_MS = re.compile(r"-?[0-9]{1,20}")
_MS_RANGE = (int(DATE_MIN.timestamp() * 1000), int(DATE_MAX.timestamp() * 1000))


def check_date(value: str | None) -> str | None:
    """The date unchanged when it parses (as the run will parse it) and lies between 1970-01-01 and 2100-01-01."""
    if value is None:
        return None
    text = value.strip()
    if _EPOCH_MS.fullmatch(text):
        in_range = _MS_RANGE[0] <= int(text) <= _MS_RANGE[1]
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"cannot parse {value[:40]!r} as a date; use {DATE_FORMATS}, {DATE_RANGE}") from None
        in_range = in_date_range(parsed)
    if not in_range:
        raise ValueError(f"dates must be {DATE_RANGE} (got {value[:40]!r})")
    return value


def in_date_range(when: datetime) -> bool:
    """Whether a datetime (naive means UTC) lies between DATE_MIN and DATE_MAX."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    try:
        return DATE_MIN <= aware <= DATE_MAX
    except OverflowError:  # year 1 or 9999 with an offset cannot be converted to UTC
        return False


RunDate = Annotated[str | None, AfterValidator(check_date)]
Symbol = Annotated[str, Field(max_length=64)]


def clean_symbols(value: list[str]) -> list[str]:
    """Upper-cased symbols; blank or repeated ones are a validation error (both request models share this)."""
    cleaned = [s.strip().upper() for s in value]
    if any(not s for s in cleaned):
        raise ValueError("symbols must not be empty strings")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("symbols must not repeat")
    return cleaned


class BacktestConfig(BaseModel):
    """A backtest request (seed 003's `POST /run/backtest` body plus cost settings).

    Numbers and booleans are strict: `true` is not a number and `"yes"` is not a boolean (ints pass as floats).
    """

    model_config = ConfigDict(extra="forbid")

    strategy_name: str = Field(..., min_length=1, max_length=200, examples=["TestStrategy"])
    strategy_params: dict[str, Any] = Field(default_factory=dict, examples=[{"period": 20, "threshold": 0.02}])
    strategy_class: str | None = Field(
        None,
        max_length=200,
        description="Set by the server: the class run when strategy_name names a stored strategy (ignored if sent)",
        json_schema_extra={"readOnly": True},
    )
    symbols: list[Symbol] = Field(..., min_length=1, max_length=50, examples=[["BTC/USDT"]])
    timeframe: str = Field("1h", min_length=1, max_length=16, examples=["1h"])
    start_date: RunDate = Field(
        None, max_length=40, description=f"{DATE_FORMATS}; {DATE_RANGE}", examples=["2024-01-01T00:00:00Z"]
    )
    end_date: RunDate = Field(
        None, max_length=40, description=f"{DATE_FORMATS}; {DATE_RANGE}", examples=["2024-12-31T23:59:59Z"]
    )
    initial_cash: float = Field(10_000.0, gt=0, le=1e15, strict=True, allow_inf_nan=False)
    exchange: str = Field("binance", min_length=1, max_length=64)
    commission: float | None = Field(
        None,
        ge=0,
        le=0.1,
        description="Fee rate for maker and taker fills; default: the exchange's or 0.1%",
        strict=True,
        allow_inf_nan=False,
    )
    slippage_bps: float = Field(
        0.0, ge=0, le=1000, description="Slippage in basis points against each fill", strict=True, allow_inf_nan=False
    )
    latency_bars: int = Field(1, ge=1, le=1000, strict=True, description="Bars between a decision and its fill")
    allow_short: bool = Field(False, strict=True, description="Allow short positions (spot is long-only by default)")
    exchange_rules: bool = Field(
        False,
        strict=True,
        description="Simulate the exchange's rules: each market's fees, amount and price precision, minimum amount "
        "and notional, funds held by open orders (as paper trading does by default)",
    )

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
    symbols: list[Symbol] = Field(..., min_length=1, max_length=50)
    timeframe: str = Field("1h", min_length=1, max_length=16)
    exchange: str = Field("binance", min_length=1, max_length=64)
    exchange_config: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["paper", "live"] = "paper"

    _symbols = field_validator("symbols")(lambda cls, value: clean_symbols(value))


def record_fields(config: BacktestConfig | LiveConfig) -> dict[str, Any]:
    """What the run history keeps in columns of a request: strategy, symbols, timeframe and exchange."""
    return {
        "strategy_name": config.strategy_name,
        "symbols": config.symbols,
        "timeframe": config.timeframe,
        "exchange": config.exchange,
    }
