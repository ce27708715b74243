"""Response models of a run's chart, round trips and breakdowns."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CandleColumns(BaseModel):
    """Candles as columns (one list per field, same length): compact for tens of thousands of bars."""

    timestamp: list[int] = Field(description="Bar (or bucket) open time, UTC milliseconds")
    open: list[float | None]
    high: list[float | None]
    low: list[float | None]
    close: list[float | None]
    volume: list[float | None]


class IndicatorSeries(BaseModel):
    """One series the strategy declares to plot (`Strategy.plot`), one value per candle (null in warm-up)."""

    name: str
    values: list[float | None]


class RoundTrip(BaseModel):
    """A closed round trip: the part of a position one closing fill closed, with the engine's pnl."""

    symbol: str
    side: str = Field(description="long or short")
    entry_time: str
    exit_time: str
    entry_price: float | None = Field(description="Average entry price of the position")
    exit_price: float | None
    size: float
    pnl: float | None = Field(description="Realised pnl net of entry and exit fees (the fill's `pnl` in trades)")
    pnl_pct: float | None = Field(description="pnl / entry cost, in percent (100 x the fill's `return_pct`)")
    duration_s: float
    fees: float = Field(description="Exit fee plus the closed part of the entry fees")
    stop_loss: float | None = Field(description="Stop-loss level (the filled stop's trigger, else from params)")
    take_profit: float | None = Field(description="Take-profit level (the filled limit's, else from params)")
    exit_reason: str
    exit_order_id: int


class RunRange(BaseModel):
    start: str | None
    end: str | None


class RunCandles(BaseModel):
    """A run's candles for one symbol with its round trips as markers and the strategy's plotted indicators."""

    run_id: str
    exchange: str
    symbol: str
    symbols: list[str]
    timeframe: str
    run_range: RunRange = Field(description="The run's whole range")
    start: str | None = Field(description="Open time of the first returned bar")
    end: str | None = Field(description="End (exclusive) of the returned range")
    bars: int = Field(description="Bars of the run in the requested range")
    bucket_bars: int = Field(description="Bars merged per returned candle (1: full detail)")
    candles: CandleColumns
    indicators: list[IndicatorSeries]
    indicators_error: str | None = Field(None, description="Why the indicators could not be computed, if so")
    markers: list[RoundTrip] = Field(description="Round trips of the symbol overlapping the range")
    markers_total: int
    markers_truncated: bool


class RoundTripList(BaseModel):
    """A page of a run's round trips, sorted."""

    items: list[RoundTrip]
    total: int
    limit: int
    offset: int
    sort: str
    order: str


class SymbolBreakdown(BaseModel):
    symbol: str
    trades: int
    wins: int
    losses: int
    win_rate: float | None = Field(description="Winning round trips / round trips (null without trades)")
    pnl: float
    fees: float
    return_pct: float | None = Field(description="pnl on the initial cash, in percent")


class MonthBreakdown(BaseModel):
    month: str = Field(description="YYYY-MM (UTC)")
    start_value: float
    end_value: float
    return_pct: float | None


class Breakdowns(BaseModel):
    run_id: str
    initial_cash: float
    by_symbol: list[SymbolBreakdown]
    monthly: list[MonthBreakdown]
