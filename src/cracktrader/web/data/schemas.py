"""Request and response models of the data endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cracktrader.web.analysis.schemas import CandleColumns

JobStatus = Literal["queued", "running", "completed", "failed", "canceled"]


class StoredCandles(BaseModel):
    """Candles of the store (generated, for `synthetic`) for one exchange, symbol and timeframe."""

    exchange: str
    symbol: str
    timeframe: str
    candles: CandleColumns
    count: int
    truncated: bool = Field(description="More candles follow in the range: ask again from `next_start`")
    next_start: int | None = Field(description="Open time (ms) of the next candle when truncated")


class Market(BaseModel):
    symbol: str
    base: str
    quote: str


class MarketList(BaseModel):
    """An exchange's markets matching the search."""

    exchange: str
    items: list[Market]
    total: int = Field(description="Markets matching the search (before `limit`)")
    limit: int
    any_symbol: bool = Field(description="True when any well-formed BASE/QUOTE works (synthetic)")


class Gap(BaseModel):
    start: str
    end: str
    missing_bars: int


class CandleSet(BaseModel):
    """One stored exchange/symbol/timeframe."""

    exchange: str
    symbol: str
    timeframe: str
    first: str | None
    last: str | None
    count: int
    size_bytes: int
    gaps: int = Field(description="Runs of missing bars between the first and the last")
    missing_bars: int
    largest_gaps: list[Gap] = Field(description="The widest gaps, widest first (at most 5)")


class CandleSetList(BaseModel):
    items: list[CandleSet]
    total: int
    limit: int
    offset: int


class DownloadRequest(BaseModel):
    """What to download into the store: the missing parts of [start, end)."""

    model_config = ConfigDict(extra="forbid")

    exchange: str = Field(..., min_length=1, max_length=64, examples=["synthetic"])
    symbol: str = Field(..., min_length=1, max_length=64, examples=["BTC/USDT"])
    timeframe: str = Field("1h", min_length=1, max_length=16, examples=["1h"])
    start: str = Field(..., min_length=1, max_length=40, description="ISO 8601 or epoch ms", examples=["2024-01-01"])
    end: str | None = Field(
        None, max_length=40, description="ISO 8601 or epoch ms, exclusive; default now", examples=["2024-02-01"]
    )


class DownloadProgress(BaseModel):
    done: int = Field(description="Bars fetched or found stored")
    total: int
    fraction: float
    eta_s: float | None = Field(description="Seconds left at the rate so far (null until it can tell)")


class DownloadJob(BaseModel):
    """A download job and where it is."""

    id: str
    status: JobStatus
    exchange: str
    symbol: str
    timeframe: str
    start: str
    end: str
    created_at: str
    finished_at: str | None
    progress: DownloadProgress
    error: dict[str, str] | None = Field(description="`code` and `message` when it failed")
    dataset: CandleSet | None = Field(description="The stored set when it completed")
