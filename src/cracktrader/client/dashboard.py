"""Typed responses of the dashboard's endpoints: a run's chart, round trips, breakdowns, data and logs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from cracktrader.client.models import _Model

__all__ = [
    "Breakdowns",
    "CandleColumns",
    "CandleSet",
    "CandleSetList",
    "DownloadJob",
    "DownloadProgress",
    "Gap",
    "IndicatorSeries",
    "LogLine",
    "LogTail",
    "Market",
    "MarketList",
    "MonthBreakdown",
    "RoundTrip",
    "RoundTripList",
    "RunCandles",
    "RunRange",
    "SessionCandles",
    "StoredCandles",
    "SymbolBreakdown",
]


class CandleColumns(_Model):
    """Candles as columns of equal length; `timestamp` is the open time in UTC milliseconds."""

    timestamp: list[int]
    open: list[float | None]
    high: list[float | None]
    low: list[float | None]
    close: list[float | None]
    volume: list[float | None]


class SessionCandles(_Model):
    """A session's latest closed candles of one symbol (`GET /runs/{id}/recent-candles`), warm-up included."""

    run_id: str
    symbol: str
    symbols: list[str]
    timeframe: str
    status: str
    bars: int
    truncated: bool
    candles: CandleColumns


class IndicatorSeries(_Model):
    """A series the strategy plots, one value per candle."""

    name: str
    values: list[float | None]


class RoundTrip(_Model):
    """A closed round trip (pnl is the engine's, net of fees; pnl_pct in percent)."""

    symbol: str
    side: Literal["long", "short"]
    entry_time: datetime
    exit_time: datetime
    entry_price: float | None
    exit_price: float | None
    size: float
    pnl: float | None
    pnl_pct: float | None
    duration_s: float
    fees: float
    stop_loss: float | None = None
    take_profit: float | None = None
    exit_reason: str = "signal"
    exit_order_id: int = 0


class RunRange(_Model):
    start: datetime | None
    end: datetime | None


class RunCandles(_Model):
    """`GET /runs/{id}/candles`: a run's candles (bucketed when `bucket_bars` > 1), markers and indicators."""

    run_id: str
    exchange: str
    symbol: str
    symbols: list[str]
    timeframe: str
    run_range: RunRange
    start: datetime | None
    end: datetime | None
    bars: int
    bucket_bars: int
    candles: CandleColumns
    indicators: list[IndicatorSeries]
    indicators_error: str | None = None
    markers: list[RoundTrip]
    markers_total: int
    markers_truncated: bool


class RoundTripList(_Model):
    """`GET /runs/{id}/roundtrips`: a sorted page."""

    items: list[RoundTrip]
    total: int
    limit: int
    offset: int
    sort: str
    order: Literal["asc", "desc"]


class SymbolBreakdown(_Model):
    symbol: str
    trades: int
    wins: int
    losses: int
    win_rate: float | None
    pnl: float
    fees: float
    return_pct: float | None


class MonthBreakdown(_Model):
    month: str
    start_value: float
    end_value: float
    return_pct: float | None


class Breakdowns(_Model):
    """`GET /runs/{id}/breakdowns`."""

    run_id: str
    initial_cash: float
    by_symbol: list[SymbolBreakdown]
    monthly: list[MonthBreakdown]


class StoredCandles(_Model):
    """`GET /candles`."""

    exchange: str
    symbol: str
    timeframe: str
    candles: CandleColumns
    count: int
    truncated: bool
    next_start: int | None = None


class Market(_Model):
    symbol: str
    base: str
    quote: str


class MarketList(_Model):
    """`GET /exchanges/{exchange}/markets`."""

    exchange: str
    items: list[Market]
    total: int
    limit: int
    any_symbol: bool


class Gap(_Model):
    start: datetime
    end: datetime
    missing_bars: int


class CandleSet(_Model):
    """One stored exchange/symbol/timeframe."""

    exchange: str
    symbol: str
    timeframe: str
    first: datetime | None
    last: datetime | None
    count: int
    size_bytes: int
    gaps: int
    missing_bars: int
    largest_gaps: list[Gap]


class CandleSetList(_Model):
    """`GET /data/sets`."""

    items: list[CandleSet]
    total: int
    limit: int
    offset: int


class DownloadProgress(_Model):
    done: int
    total: int
    fraction: float
    eta_s: float | None = None


class DownloadJob(_Model):
    """`/data/downloads/{id}`: a download job."""

    id: str
    status: Literal["queued", "running", "completed", "failed", "canceled"]
    exchange: str
    symbol: str
    timeframe: str
    start: datetime
    end: datetime
    created_at: datetime
    finished_at: datetime | None = None
    progress: DownloadProgress
    error: dict[str, str] | None = None
    dataset: CandleSet | None = None

    @property
    def finished(self) -> bool:
        """Whether the job has ended (completed, failed or canceled)."""
        return self.status in ("completed", "failed", "canceled")


class LogLine(_Model):
    time: datetime
    level: str
    logger: str
    run_id: str | None = None
    message: str


class LogTail(_Model):
    """`GET /logs`."""

    items: list[LogLine]
    total: int
    capacity: int
