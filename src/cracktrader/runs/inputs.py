"""What determines a run: effective parameters, strategy source hash, version, costs and candle fingerprints.

Recorded in the results document's `config.inputs`, so two runs can be compared field by field (a rerun does).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cracktrader.data.candles import COLUMNS, Candles, ms_to_iso
from cracktrader.engine.strategy import Strategy
from cracktrader.strategies.pinning import source_file

__all__ = [
    "CostInputs",
    "DataFingerprint",
    "RunInputs",
    "StrategyInputs",
    "candles_sha256",
    "fingerprint",
    "strategy_source_sha256",
]


class StrategyInputs(BaseModel):
    """Which strategy ran and a hash of its code."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str = Field(description="strategy_name as requested (a class, or a stored strategy)")
    class_name: str = Field(alias="class", description="The strategy class that ran")
    origin: str = Field(description="builtin, the strategy file's path, or `entry point NAME`")
    source_sha256: str | None = Field(description="SHA-256 of the source file of the class's module")


class CostInputs(BaseModel):
    """The simulator settings the run used (fees as resolved from the request, the exchange or the default)."""

    model_config = ConfigDict(frozen=True)

    maker_fee: float
    taker_fee: float
    slippage: float = Field(description="Fraction of the price against each fill (slippage_bps / 10,000)")
    latency: int = Field(description="Bars between a decision and its fill")
    allow_short: bool
    initial_cash: float


class DataFingerprint(BaseModel):
    """The candles one symbol ran on."""

    model_config = ConfigDict(frozen=True)

    exchange: str
    timeframe: str
    first: str | None = Field(description="Open time of the first bar (ISO 8601)")
    last: str | None = Field(description="Open time of the last bar (ISO 8601)")
    count: int
    sha256: str = Field(description="SHA-256 of the timestamp and OHLCV arrays (little-endian int64 / float64)")
    resampled_from: str | None = Field(None, description="The stored timeframe these candles were built from")


class RunInputs(BaseModel):
    """Everything that determines a backtest's result."""

    model_config = ConfigDict(frozen=True)

    effective_params: dict[str, Any] = Field(description="Strategy parameters after defaults")
    strategy: StrategyInputs
    cracktrader_version: str
    costs: CostInputs
    start: str = Field(description="Start of the range as resolved (ISO 8601, inclusive)")
    end: str = Field(description="End of the range as resolved (ISO 8601, exclusive)")
    data: dict[str, DataFingerprint]

    def document(self) -> dict[str, Any]:
        """The JSON form recorded in the results' config."""
        return self.model_dump(mode="json", by_alias=True)


def candles_sha256(candles: Candles) -> str:
    """SHA-256 over the timestamp then each OHLCV column, as little-endian int64 and float64 bytes."""
    digest = hashlib.sha256()
    for name in COLUMNS:
        dtype = "<i8" if name == "timestamp" else "<f8"
        digest.update(np.ascontiguousarray(getattr(candles, name), dtype=dtype).tobytes())
    return digest.hexdigest()


def fingerprint(
    candles: Candles, *, exchange: str, timeframe: str, resampled_from: str | None = None
) -> DataFingerprint:
    """The fingerprint of one symbol's candles."""
    n = len(candles)
    return DataFingerprint(
        exchange=exchange,
        timeframe=timeframe,
        first=ms_to_iso(int(candles.timestamp[0])) if n else None,
        last=ms_to_iso(int(candles.timestamp[-1])) if n else None,
        count=n,
        sha256=candles_sha256(candles),
        resampled_from=resampled_from,
    )


def strategy_source_sha256(cls: type[Strategy]) -> str | None:
    """SHA-256 of the file that defines the class's module; None when it has no readable source file."""
    path = source_file(cls)
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
