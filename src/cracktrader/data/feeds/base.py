"""What a live feed delivers: every symbol's closed candle of one bar time, in time order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cracktrader.data.candles import Candles


@dataclass(frozen=True, slots=True)
class ClosedCandle:
    """One symbol's closed candle."""

    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class BarBatch:
    """The closed candles of the bar that opened at `timestamp` (a symbol without a trade there is absent)."""

    timestamp: int
    candles: Mapping[str, ClosedCandle]


class CandleFeed(Protocol):
    """An async stream of closed bars, each after the previous one."""

    def __aiter__(self) -> AsyncIterator[BarBatch]: ...


def batches(candles: Mapping[str, Candles]) -> list[BarBatch]:
    """Candles of several symbols regrouped by bar time, in order."""
    by_time: dict[int, dict[str, ClosedCandle]] = {}
    for symbol, c in candles.items():
        rows = zip(
            c.timestamp.tolist(), c.open.tolist(), c.high.tolist(), c.low.tolist(), c.close.tolist(), c.volume.tolist(),
            strict=True,
        )  # fmt: skip
        for ts, o, h, lo, cl, v in rows:
            by_time.setdefault(int(ts), {})[symbol] = ClosedCandle(o, h, lo, cl, v)
    return [BarBatch(ts, by_time[ts]) for ts in sorted(by_time)]


def market_batches(
    symbols: tuple[str, ...],
    timestamp: np.ndarray,
    columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    present: np.ndarray,
) -> list[BarBatch]:
    """Aligned (bars, symbols) candle columns as batches; a symbol is in a batch only where `present`."""
    o, h, lo, c, v = (col.tolist() for col in columns)
    flags = present.tolist()
    out = []
    for t, ts in enumerate(timestamp.tolist()):
        row = {
            s: ClosedCandle(o[t][j], h[t][j], lo[t][j], c[t][j], v[t][j]) for j, s in enumerate(symbols) if flags[t][j]
        }
        out.append(BarBatch(int(ts), row))
    return out
