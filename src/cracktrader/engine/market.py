"""Align several symbols' candles onto one bar grid as (bars, symbols) arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class OHLCV(Protocol):
    """Anything with candle columns (the data layer's Candles satisfies it)."""

    @property
    def timestamp(self) -> np.ndarray: ...
    @property
    def open(self) -> np.ndarray: ...
    @property
    def high(self) -> np.ndarray: ...
    @property
    def low(self) -> np.ndarray: ...
    @property
    def close(self) -> np.ndarray: ...
    @property
    def volume(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Bars:
    """One symbol's bars as views: what a vectorized strategy receives."""

    symbol: str
    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def slice(self, start: int, stop: int) -> Bars:
        """Bars [start, stop) as views."""
        return Bars(
            self.symbol,
            self.timestamp[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )

    def head(self, n: int) -> Bars:
        """The first n bars (views)."""
        return self.slice(0, n)


@dataclass(frozen=True, slots=True)
class MarketData:
    """Aligned market data: arrays of shape (bars, symbols) on a shared timestamp grid.

    Where a symbol has no candle on a grid bar, its prices carry the last close forward,
    its volume is 0 and `tradable` is False, so nothing fills there.
    """

    symbols: tuple[str, ...]
    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    tradable: np.ndarray
    periods_per_year: float

    @property
    def n_bars(self) -> int:
        return int(self.timestamp.shape[0])

    def bars(self, symbol: str | int) -> Bars:
        """Views of one symbol's columns."""
        j = symbol if isinstance(symbol, int) else self.symbols.index(symbol)
        return Bars(
            self.symbols[j],
            self.timestamp,
            self.open[:, j],
            self.high[:, j],
            self.low[:, j],
            self.close[:, j],
            self.volume[:, j],
        )

    def head(self, n: int) -> MarketData:
        """The first n bars (views): what a live strategy would have seen at bar n-1."""
        return MarketData(
            self.symbols,
            self.timestamp[:n],
            self.open[:n],
            self.high[:n],
            self.low[:n],
            self.close[:n],
            self.volume[:n],
            self.tradable[:n],
            self.periods_per_year,
        )


_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


def align(candles: Mapping[str, OHLCV], periods_per_year: float) -> MarketData:
    """Align candles of several symbols on the union of their timestamps."""
    symbols = tuple(candles)
    if len(symbols) == 1:
        # One symbol needs no copy: (n, 1) views keep memory at the input's size.
        c = candles[symbols[0]]
        n = c.timestamp.shape[0]
        o, h, lo, cl, v = (np.asarray(getattr(c, k), dtype=np.float64).reshape(n, 1) for k in _PRICE_COLUMNS)
        return MarketData(
            symbols,
            c.timestamp,
            o,
            h,
            lo,
            cl,
            v,
            np.ones((n, 1), dtype=np.bool_),
            periods_per_year,
        )
    grid = np.unique(np.concatenate([candles[s].timestamp for s in symbols]))
    n, m = grid.shape[0], len(symbols)
    cols = {k: np.full((n, m), np.nan) for k in ("open", "high", "low", "close")}
    volume = np.zeros((n, m))
    tradable = np.zeros((n, m), dtype=np.bool_)
    for j, s in enumerate(symbols):
        c = candles[s]
        idx = np.searchsorted(grid, c.timestamp)
        for k in cols:
            cols[k][idx, j] = getattr(c, k)
        volume[idx, j] = c.volume
        tradable[idx, j] = True
        _fill_forward(cols, tradable[:, j], j)
    return MarketData(
        symbols,
        grid,
        cols["open"],
        cols["high"],
        cols["low"],
        cols["close"],
        volume,
        tradable,
        periods_per_year,
    )


def _fill_forward(cols: dict[str, np.ndarray], present: np.ndarray, j: int) -> None:
    """Carry the last close into bars where the symbol has no candle (and back-fill before its first)."""
    close = cols["close"][:, j]
    idx = np.where(present, np.arange(close.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(present))
    idx[:first] = first
    filled = close[idx]
    for k in cols:
        col = cols[k][:, j]
        col[~present] = filled[~present]
